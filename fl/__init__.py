"""Federated-learning engine: data, models, replayable training, fixed-point aggregation, attacks, simulation."""
