"""Ledger RPC methods (CometBFT names and result shapes): txs, blocks, validators, queries."""

from __future__ import annotations

from typing import TYPE_CHECKING

from node.rpc.jsonrpc import Registry

if TYPE_CHECKING:
    from node.daemon import Node


def register_ledger(reg: Registry, node: Node) -> None:
    """Register the ledger methods on the node's registry (filled in by the ledger RPC work)."""
