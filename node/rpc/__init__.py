"""Operator JSON-RPC 2.0 over HTTP (and a websocket for subscriptions)."""
