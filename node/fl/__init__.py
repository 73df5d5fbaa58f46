"""The node's federated-learning services: trainer, verifier, inference (docs/fl-chain.md)."""
