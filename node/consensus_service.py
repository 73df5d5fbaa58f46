"""Wiring of consensus into the node: privval, driver, block sync, gossip topics, RPC methods."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from consensus.blocksync import PROTOCOL as BLOCKSYNC_PROTOCOL
from consensus.blocksync import BlockSyncer, BlockSyncServer
from consensus.core import TimeoutConfig
from consensus.driver import Checked, ConsensusDriver, DriverConfig, Verdict
from consensus.messages import CatchupRequest
from consensus.privval import PrivValidator
from ledger.codec import CodecError, decode_record
from ledger.errors import InvalidEvidenceError
from ledger.evidence import Evidence
from node.logs import get_logger
from node.p2p import Validation
from node.rpc.jsonrpc import Registry

# a peer that answers a round request with a forged or malformed message
PENALTY_BAD_ROUND_MESSAGE = 50

if TYPE_CHECKING:
    from node.daemon import Node


class ConsensusService:
    def __init__(self, node: Node) -> None:
        self.node = node
        cfg = node.cfg.consensus
        self.log = get_logger("fedledger.consensus", moniker=node.cfg.moniker)
        self.privval = PrivValidator(node.validator_key, node.home.priv_validator_state_file,
                                     node.chain_id)
        dcfg = DriverConfig(
            timeouts=TimeoutConfig(
                timeout_propose_ms=cfg.timeout_propose_ms,
                timeout_propose_delta_ms=cfg.timeout_propose_delta_ms,
                timeout_prevote_ms=cfg.timeout_prevote_ms,
                timeout_prevote_delta_ms=cfg.timeout_prevote_delta_ms,
                timeout_precommit_ms=cfg.timeout_precommit_ms,
                timeout_precommit_delta_ms=cfg.timeout_precommit_delta_ms,
            ),
            timeout_commit_ms=cfg.timeout_commit_ms,
            create_empty_blocks=cfg.create_empty_blocks,
            create_empty_blocks_interval_ms=cfg.create_empty_blocks_interval_ms,
            rebroadcast_interval_ms=cfg.rebroadcast_interval_ms,
            max_message_bytes=min(node.cfg.p2p.max_gossip_bytes, 1_000_000),
            byzantine_mode=cfg.byzantine_mode,
        )
        if cfg.byzantine_mode:
            self.log.warning("TEST-ONLY BYZANTINE MODE ENABLED", mode=cfg.byzantine_mode)
        self.driver = ConsensusDriver(node.chain, self.privval, dcfg, node.home.wal_file,
                                      node.p2p.publish, self.log)
        self.server = BlockSyncServer(node.chain.store, lambda: node.chain.height,
                                      self.driver.held_messages)
        self.syncer = BlockSyncer(node.p2p, lambda: node.chain.height, self.driver.apply_synced,
                                  get_logger("fedledger.blocksync", moniker=node.cfg.moniker),
                                  stall_s=max(4.0, 3 * cfg.timeout_commit_ms / 1000))
        self.driver.behind = self.syncer.poke
        self.driver.fetch_round = self.fetch_round
        node.p2p.add_stream_protocol(BLOCKSYNC_PROTOCOL, self.server.handle, max_per_peer=8)
        node.set_topic("consensus", self.validate_consensus, self.on_consensus)
        node.set_topic("evidence", self.validate_evidence, self.on_evidence)
        node.add_service("consensus", self.driver.run)
        node.add_service("blocksync", self.syncer.run, restart=True)

    # ------------------------------------------------------------ gossip

    def validate_consensus(self, origin: str, data: bytes) -> Validation:
        c = self.driver.check(data)
        if c.verdict == Verdict.ACCEPT and isinstance(c.message, CatchupRequest):
            # a one-hop request: answered here, never forwarded. Its author sends it to
            # every direct peer itself, and each relay multiplied it by the peer count (14
            # fully connected nodes: 156 deliveries per request, 15,000 consensus RPCs
            # queued per validator in the FL testnet)
            self.driver.deliver_nowait(c)
            return Validation.ignore("catch-up request answered, not relayed")
        if c.verdict == Verdict.ACCEPT:
            return Validation.accept(c)
        if c.verdict == Verdict.REJECT:
            return Validation.reject(c.reason)
        return Validation.ignore(c.reason)

    async def on_consensus(self, origin: str, checked: Checked) -> None:
        await self.driver.deliver(checked)

    async def fetch_round(self, height: int, round_: int, proposals: bool) -> None:
        """A stalled round's messages straight from peers over block sync streams."""

        async def take(peer: str, payload: bytes) -> bool:
            c = self.driver.check(payload)
            if c.verdict == Verdict.REJECT:
                self.node.p2p.penalize(peer, PENALTY_BAD_ROUND_MESSAGE,
                                       f"round messages: {c.reason}")
                return False
            if c.verdict == Verdict.ACCEPT and self.driver.is_new(c):
                self.driver.stats["fetched"] = self.driver.stats.get("fetched", 0) + 1
                await self.driver.deliver(c)
            return True

        await self.syncer.fetch_round_messages(height, round_, proposals, take)

    def validate_evidence(self, origin: str, data: bytes) -> Validation:
        try:
            ev = decode_record(data, Evidence)  # type: ignore[type-abstract]
        except CodecError as e:
            return Validation.reject(f"malformed evidence: {e}")
        try:
            added = self.driver.add_evidence(ev)
        except InvalidEvidenceError as e:
            return Validation.reject(f"invalid evidence: {e}")
        return Validation.accept(ev) if added else Validation.ignore("known evidence")

    async def on_evidence(self, origin: str, ev: Any) -> None:
        self.log.warning("evidence received", height=ev.height, origin=origin)

    # ------------------------------------------------------------ status

    @property
    def catching_up(self) -> bool:
        return self.syncer.catching_up


def register_consensus(reg: Registry, node: Node) -> None:
    svc = node.consensus

    async def consensus_state() -> dict[str, Any]:
        """Height, round and step of this node's consensus (CometBFT's round_state)."""
        rs = svc.driver.round_state()
        return {"round_state": {"height/round/step": f"{rs['height']}/{rs['round']}/{rs['step']}",
                                "proposer": rs["proposer"], "decided": rs["decided"]}}

    async def dump_consensus_state() -> dict[str, Any]:
        """The full round state: locks, proposals, every vote of the height, peers' heights."""
        return {"round_state": svc.driver.round_state(),
                "peers": [{"node_address": p, "height": str(h)}
                          for p, h in sorted(svc.syncer.peer_heights.items())],
                "block_sync": {"catching_up": svc.syncer.catching_up,
                               "synced_blocks": svc.syncer.synced_blocks},
                "gossip": {"topic_peers": node.p2p.topic_peers(),
                           "topic_stats": node.p2p.topic_stats(),
                           "connected": node.p2p.connected_peers(),
                           "shed_forwarded_txs": node.p2p.shed_forwarded_txs()}}

    reg.add("consensus_state", consensus_state)
    reg.add("dump_consensus_state", dump_consensus_state, operator=True)
