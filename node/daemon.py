"""The node process: one `trio.run`, one root nursery, services started in order.

Service order: p2p host (so peers can reach us), then the chain services,
then the operator RPC (so `status` never answers before the node can).
SIGINT/SIGTERM cancel the root nursery; every service cleans up in its
`finally` (the libp2p host closes its sockets, stores flush and close).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from ledger.codec import CodecError, decode
from node.chain import ChainService
from node.config import NodeConfig
from node.consensus_service import ConsensusService, register_consensus
from node.content import ContentService
from node.events import EventBus
from node.fl.service import FLServices
from node.home import Home
from node.logs import get_logger
from node.metrics import NodeMetrics
from node.p2p import P2PNode, Validation, parse_listen_multiaddr, parse_peer_multiaddr
from node.rpc.content import register_content
from node.rpc.core import register_core
from node.rpc.fl import register_fl
from node.rpc.jsonrpc import Registry
from node.rpc.ledger import register_ledger
from node.rpc.server import RPCApp, serve_rpc

SHUTDOWN_GRACE_S = 4.0


@dataclass
class Overrides:
    """Command-line overrides of config.toml."""

    bootstrap: Sequence[str] = ()
    listen: Sequence[str] = ()
    rpc: str | None = None
    log_format: str | None = None
    log_level: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def apply_overrides(cfg: NodeConfig, ov: Overrides) -> NodeConfig:
    """Validate and apply CLI overrides; raises BadMultiaddr naming a bad address."""
    for a in ov.bootstrap:
        parse_peer_multiaddr(a)
    for a in ov.listen:
        parse_listen_multiaddr(a)
    if ov.bootstrap:
        cfg.p2p.bootstrap = list(dict.fromkeys([*cfg.p2p.bootstrap, *ov.bootstrap]))
    if ov.listen:
        cfg.p2p.listen = list(ov.listen)
    if ov.rpc:
        cfg.rpc.laddr = ov.rpc
    if ov.log_format:
        cfg.log_format = ov.log_format
    if ov.log_level:
        cfg.log_level = ov.log_level
    cfg.validate()
    return cfg


def _decodable(origin: str, data: bytes) -> Validation:
    """Default gossip validator until a service installs its own: canonical msgpack only."""
    try:
        return Validation.accept(decode(data))
    except CodecError as e:
        return Validation.reject(f"undecodable: {e}")


class Node:
    """Wires the services of one node; `run` runs them until cancelled."""

    TOPICS = ("consensus", "txs", "blocks", "evidence")

    def __init__(self, home: Home, cfg: NodeConfig) -> None:
        self.home = home
        self.cfg = cfg
        self.genesis = home.load_genesis()
        self.genesis_doc = home.load_genesis_doc()
        self.chain_id: str = self.genesis.chain_id
        self.node_key = home.load_node_key()
        self.validator_key = home.load_validator_key()
        self.log = get_logger("fedledger.node", moniker=cfg.moniker)
        self.metrics = NodeMetrics()
        self.events = EventBus()
        self.rpc = Registry()
        self.p2p = P2PNode(self.node_key, cfg.p2p, self.chain_id,
                           get_logger("fedledger.p2p", moniker=cfg.moniker))
        self.rpc_laddr = cfg.rpc.laddr
        self.started_at = time.time()
        self.ready = trio.Event()
        # background tasks of services, started once the p2p host runs
        self._services: list[tuple[str, Callable[[], Awaitable[None]], bool]] = []
        self._closers: list[Callable[[], None]] = []
        self.nursery: trio.Nursery | None = None
        self._topic_handlers: dict[str, tuple[Any, Any]] = {
            t: (_decodable, self._ignore) for t in self.TOPICS
        }
        home.data_dir.mkdir(parents=True, exist_ok=True)
        self.chain = ChainService(home.data_dir, cfg, self.genesis,
                                  get_logger("fedledger.chain", moniker=cfg.moniker),
                                  self.events, self.metrics)
        self.chain.penalize = self.p2p.penalize
        self.chain.publish = self.p2p.publish
        self.chain.gossip_backlog = self.p2p.gossip_backlog
        self._topic_handlers["txs"] = (self.chain.validate_tx_batch, self.chain.on_tx_batch)
        register_core(self.rpc, self)
        register_ledger(self.rpc, self)
        self.consensus = ConsensusService(self)
        register_consensus(self.rpc, self)
        self.content = ContentService(self)
        register_content(self.rpc, self)
        self.fl = FLServices(self)
        register_fl(self.rpc, self)

    async def _ignore(self, origin: str, value: Any) -> None:
        return None

    def set_topic(self, name: str, validator: Any, handler: Any) -> None:
        """Install the gossip validator and handler of a topic (before the node runs)."""
        self._topic_handlers[name] = (validator, handler)

    def add_service(self, name: str, fn: Callable[[], Awaitable[None]],
                    restart: bool = False) -> None:
        """Run ``fn()`` in the node's nursery once the p2p host is up (until shutdown);
        ``restart``: run it again after a crash, with a growing pause (1 s to 60 s)."""
        self._services.append((name, fn, restart))

    def add_closer(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` at shutdown after every task has stopped (stores close last)."""
        self._closers.append(fn)

    # Hooks later services fill in -------------------------------------------------

    def chain_info(self) -> dict[str, Any]:
        return {**self.chain.chain_info(), "catching_up": self.catching_up()}

    def catching_up(self) -> bool:
        return self.consensus.catching_up

    def proposer_priorities(self, height: int | None = None) -> dict[bytes, int]:
        return self.consensus.driver.priorities(height)

    def voting_power(self) -> int:
        v = self.chain.state.validators.get(self.validator_key.address)
        return v.power if v is not None else 0

    # Lifecycle ---------------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        for name, (validator, handler) in self._topic_handlers.items():
            self.p2p.add_topic(name, validator, handler)
        app = RPCApp(
            self.rpc,
            max_body_bytes=self.cfg.rpc.max_body_bytes,
            max_batch=self.cfg.rpc.max_batch,
            max_connections=self.cfg.rpc.max_connections,
            operator_token=self.home.operator_token(),
            metrics=self._metrics_exposition,
            events=self.events,
            log=get_logger("fedledger.rpc", moniker=self.cfg.moniker),
        )
        try:
            await self._run_services(app, task_status)
        finally:
            for close in reversed(self._closers):
                try:
                    close()
                except Exception as e:
                    self.log.error("close failed", error=repr(e))
            self.chain.close()

    async def _run_services(self, app: RPCApp, task_status: Any) -> None:
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            await nursery.start(self.p2p.run)
            nursery.start_soon(self.chain.gossip_loop)
            nursery.start_soon(self.chain.regossip_loop)
            for name, fn, restart in self._services:
                nursery.start_soon(self._guard, name, fn, restart)
            bound = await nursery.start(serve_rpc, app, self.cfg.rpc.laddr)
            if bound:
                self.rpc_laddr = str(bound[0]).removeprefix("http://")
            self.log.info("node started", chain_id=self.chain_id, peer_id=self.p2p.peer_id,
                          rpc=self.rpc_laddr, validator=self.validator_key.address.hex())
            self.ready.set()
            task_status.started()
            await trio.sleep_forever()

    async def _guard(self, name: str, fn: Callable[[], Awaitable[None]],
                     restart: bool = False) -> None:
        """A crashing service is logged, and restarted if it may be; the node keeps serving
        everything else. (A trainer that crashed on one bad answer used to sit out the rest
        of the task while its node looked healthy.)"""
        crashes = 0
        while True:
            try:
                await fn()
                return
            except Exception as e:
                crashes += 1
                pause = min(60.0, 2.0 ** (crashes - 1))
                self.log.error("service crashed", service=name, error=repr(e), crashes=crashes,
                               restart_in_s=pause if restart else None, exc_info=e)
                if not restart:
                    return
            await trio.sleep(pause)

    def _metrics_exposition(self) -> bytes:
        self.metrics.peers.set(len(self.p2p.connected_peers()))
        return self.metrics.exposition()


async def run_until_signalled(node: Node) -> None:
    """Run the node; SIGINT/SIGTERM stop it cleanly (exit code 0)."""
    log = node.log
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(node.run)
            async for signum in signals:
                log.info("shutting down", signal=signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break
    log.info("stopped")
