"""Node-level RPC methods: `health`, `status`, `net_info`, `genesis` (CometBFT result shapes)."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

from node.rpc.jsonrpc import Param, Registry

if TYPE_CHECKING:
    from node.daemon import Node

VERSION = "0.1.0"


def register_core(reg: Registry, node: Node) -> None:
    async def health() -> dict[str, Any]:
        """Empty result while the node runs (CometBFT's health)."""
        return {}

    async def status() -> dict[str, Any]:
        """Node identity, latest committed block and sync state."""
        p2p = node.p2p
        chain = node.chain_info()
        return {
            "node_info": {
                "id": p2p.peer_id,
                "listen_addr": p2p.listen_multiaddrs(),
                "network": node.chain_id,
                "version": VERSION,
                "moniker": node.cfg.moniker,
                "other": {"rpc_address": node.rpc_laddr},
            },
            "sync_info": {
                "latest_block_hash": chain["hash"],
                "latest_app_hash": chain["app_hash"],
                "latest_block_height": str(chain["height"]),
                "latest_block_time": chain["time"],
                "earliest_block_height": str(chain["earliest_height"]),
                "catching_up": chain["catching_up"],
            },
            "validator_info": {
                "address": node.validator_key.address.hex().upper(),
                "pub_key": {"type": "tendermint/PubKeyEd25519",
                            "value": base64.b64encode(node.validator_key.public_key).decode()},
                "voting_power": str(node.voting_power()),
            },
        }

    async def net_info() -> dict[str, Any]:
        """Connected peers with ids, remote addresses and negotiated protocols."""
        peers = node.p2p.peer_details()
        return {
            "listening": node.p2p.started.is_set(),
            "listeners": node.p2p.listen_multiaddrs(),
            "n_peers": str(len(peers)),
            "peers": [
                {
                    "node_info": {"id": p["node_id"]},
                    "is_outbound": p["direction"] == "outbound",
                    "remote_addrs": p["remote_addrs"],
                    "remote_ip": _ip(p["remote_addrs"]),
                    "connection_status": {"security": p["security"], "muxer": p["muxer"],
                                          "score": p["score"]},
                    "bootstrap": p["bootstrap"],
                }
                for p in peers
            ],
        }

    async def genesis() -> dict[str, Any]:
        """The genesis document."""
        return {"genesis": node.genesis_doc}

    async def debug_tasks(filter: str = "") -> dict[str, Any]:
        """Where every trio task waits (operator-only diagnostics)."""
        from node.debugtasks import task_dump

        tasks = task_dump()
        if filter:
            tasks = [t for t in tasks if any(filter in f for f in t["stack"]) or filter in t["task"]]
        return {"tasks": tasks}

    reg.add("debug_tasks", debug_tasks, [Param("filter", "str", max_len=200)], operator=True)
    reg.add("health", health)
    reg.add("status", status)
    reg.add("net_info", net_info)
    reg.add("genesis", genesis)


def _ip(addrs: list[str]) -> str:
    for a in addrs:
        parts = a.split("/")
        if len(parts) > 2 and parts[1] in ("ip4", "ip6"):
            return parts[2]
    return ""
