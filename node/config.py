"""The node's `config/config.toml`: typed sections, defaults, strict loading.

Every key has a default, so a hand-written file only lists what it changes.
Loading is strict: an unknown section or key, or a value of the wrong type,
is a :class:`ConfigError` that names the file and the key (a typo in an
operator's config must not be silently ignored).
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import tomli_w

DEFAULT_P2P_PORT = 26656
DEFAULT_RPC_PORT = 26657


class ConfigError(ValueError):
    """A config file is missing, unreadable or invalid; the message says where."""


@dataclass
class P2PConfig:
    listen: list[str] = field(default_factory=lambda: [f"/ip4/127.0.0.1/tcp/{DEFAULT_P2P_PORT}"])
    # full multiaddrs with /p2p/<peer id>; re-dialled with capped exponential backoff
    bootstrap: list[str] = field(default_factory=list)
    redial_initial_ms: int = 500
    redial_max_ms: int = 30_000
    # gossipsub: heartbeat 1 s (the library default of 120 s repairs the mesh far too slowly)
    heartbeat_interval_s: int = 1
    mesh_degree: int = 6
    mesh_degree_low: int = 4
    mesh_degree_high: int = 12
    # outbound per-peer queue and subscription buffer (library default 32 drops bursts)
    gossip_queue_size: int = 4096
    # payloads of 1 MiB or more are silently dropped by py-libp2p; we refuse them loudly
    max_gossip_bytes: int = 1_000_000
    max_peers: int = 64
    # a peer whose score falls to ban_threshold is disconnected and ignored for ban_s
    ban_threshold: int = -100
    ban_s: int = 600
    max_inbound_streams_per_peer: int = 64
    # yamux: 120-150 MB/s streams; mplex: faster for tiny gossip, ~30 MB/s for bulk
    muxer: str = "yamux"
    # libp2p message signatures (origin authentication of every gossip message)
    sign_messages: bool = True
    # a connection whose outbound gossip has not moved for this long is closed and re-dialled
    wedge_timeout_s: int = 8
    # opening a stream (multistream-select) taking longer than this means a dead connection
    stream_open_timeout_s: int = 6
    # yamux: a window update after every read (py-libp2p's default) or in batches (go-yamux)
    yamux_release_on_read: bool = False
    # bootstrap peers are gossipsub direct peers (always sent every message)
    direct_bootstrap: bool = True


@dataclass
class RPCConfig:
    laddr: str = f"127.0.0.1:{DEFAULT_RPC_PORT}"
    max_body_bytes: int = 1_000_000
    max_batch: int = 10
    max_connections: int = 64
    # operator-only methods need this bearer token; empty = read from config/operator_token
    operator_token_file: str = "config/operator_token"
    cors_allowed_origins: list[str] = field(default_factory=list)
    timeout_broadcast_tx_commit_ms: int = 10_000


@dataclass
class ConsensusConfig:
    timeout_propose_ms: int = 3000
    timeout_propose_delta_ms: int = 500
    timeout_prevote_ms: int = 1000
    timeout_prevote_delta_ms: int = 500
    timeout_precommit_ms: int = 1000
    timeout_precommit_delta_ms: int = 500
    timeout_commit_ms: int = 1000
    create_empty_blocks: bool = True
    create_empty_blocks_interval_ms: int = 0
    # gossip is lossy: own votes/proposal are re-sent until the height commits
    rebroadcast_interval_ms: int = 1000
    # test-only byzantine behaviour; never set on a real node
    byzantine_mode: str = ""


@dataclass
class MempoolConfig:
    max_txs: int = 5000
    max_bytes: int = 64 * 1024 * 1024
    max_tx_bytes: int = 1024 * 1024
    # transactions are gossiped in batches: py-libp2p delivers a few hundred messages/s
    gossip_batch_max_txs: int = 256
    gossip_batch_interval_ms: int = 50
    # while peers' outbound gossip queues hold more than gossip_backlog_rpcs RPCs, a batch
    # keeps gathering (up to gossip_batch_max_wait_ms): every message costs each node
    # milliseconds whatever its size, and with direct peers forwarding to direct peers a
    # message crosses (n-1)^2 links, so fewer, larger batches are what a congested
    # network can still carry (benchmarks/consensus.py, 7 validators)
    gossip_backlog_rpcs: int = 32
    gossip_batch_max_wait_ms: int = 1000
    # gossip is fire-and-forget: a tx this node submitted and still holds after this long is
    # gossiped again (0: never)
    regossip_after_ms: int = 5000


@dataclass
class StorageConfig:
    chunk_size: int = 1024 * 1024
    quota_bytes: int = 20 * 1024 * 1024 * 1024
    max_object_bytes: int = 2 * 1024 * 1024 * 1024
    fetch_timeout_s: int = 30
    per_peer_concurrency: int = 4


@dataclass
class TrainerConfig:
    enabled: bool = False
    data_dir: str = ""
    dataset: str = "digits"
    device: str = "auto"
    tasks: list[str] = field(default_factory=list)
    # which partition of the data set this trainer holds (demo/testnets)
    partition_index: int = 0
    partition_count: int = 1
    partition_alpha_milli: int = 500
    # account in keyring/ that signs the trainer's transactions (default: the moniker's)
    account: str = ""
    # torch intra-op threads for training (0: torch's default, all cores)
    threads: int = 0
    # evaluation-only attack for experiments (fl.attacks names); empty = honest
    attack: str = ""


@dataclass
class VerifierConfig:
    """The validators' FL work: PoL replay, the screen's validation-set scoring, aggregation."""

    # torch intra-op threads (0: torch's default, all cores). Several node processes on one
    # machine (a localnet) each spinning up all-core thread pools oversubscribe it; torch's
    # thread count is per process, so a node that also trains uses [trainer] threads.
    threads: int = 0


@dataclass
class KeyHolderConfig:
    """HE key holder (docs/fl-chain.md section 6): keeps the CKKS secret contexts of the HE
    tasks that list this node's account in ``key_holders``, sends trainers their key shares
    and posts each round's decrypted aggregate."""

    enabled: bool = False
    # account in keyring/ that signs KeyShare and DecryptedAggregate (default: the moniker's)
    account: str = ""
    # where the secret contexts live, relative to the home (files are 0600, the dir 0700)
    secrets_dir: str = "keyholder"


@dataclass
class InstrumentationConfig:
    prometheus: bool = True


@dataclass
class NodeConfig:
    moniker: str = "node"
    log_level: str = "info"
    log_format: str = "console"
    p2p: P2PConfig = field(default_factory=P2PConfig)
    rpc: RPCConfig = field(default_factory=RPCConfig)
    consensus: ConsensusConfig = field(default_factory=ConsensusConfig)
    mempool: MempoolConfig = field(default_factory=MempoolConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    verifier: VerifierConfig = field(default_factory=VerifierConfig)
    keyholder: KeyHolderConfig = field(default_factory=KeyHolderConfig)
    instrumentation: InstrumentationConfig = field(default_factory=InstrumentationConfig)

    def validate(self) -> None:
        """Cross-field checks that types alone cannot express."""
        if self.log_format not in ("console", "json"):
            raise ConfigError(f"log_format must be 'console' or 'json', got {self.log_format!r}")
        if self.log_level.lower() not in ("debug", "info", "warning", "error"):
            raise ConfigError(f"log_level must be debug|info|warning|error, got {self.log_level!r}")
        for key, n in (("trainer.threads", self.trainer.threads),
                       ("verifier.threads", self.verifier.threads)):
            if n < 0:
                raise ConfigError(f"{key} must be >= 0 (0: torch's default), got {n}")
        if not self.p2p.listen:
            raise ConfigError("p2p.listen must name at least one multiaddr")
        if self.p2p.muxer not in ("yamux", "mplex"):
            raise ConfigError(f"p2p.muxer must be 'yamux' or 'mplex', got {self.p2p.muxer!r}")
        if self.p2p.max_gossip_bytes >= 1024 * 1024:
            raise ConfigError("p2p.max_gossip_bytes must be below 1 MiB (py-libp2p drops larger)")
        if self.rpc.max_batch < 1 or self.rpc.max_body_bytes < 1024:
            raise ConfigError("rpc.max_batch must be >= 1 and rpc.max_body_bytes >= 1024")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = get_origin(tp)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        (item,) = get_args(tp)
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type")  # pragma: no cover


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    hints = get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        tp = hints[name]
        key = f"{where}.{name}" if where else name
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"{key}: expected a [section]")
            kwargs[name] = _build(tp, value, key)  # type: ignore[arg-type]
        else:
            kwargs[name] = _coerce(value, tp, key)
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any], source: str = "config") -> NodeConfig:
    try:
        cfg = _build(NodeConfig, data, "")
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    try:
        cfg.validate()
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    return cfg  # type: ignore[no-any-return]


def load_config(path: Path) -> NodeConfig:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found (run `fedledger init --home ...` first)")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    return config_from_dict(data, str(path))


def config_to_toml(cfg: NodeConfig) -> str:
    header = (
        "# fedledger node configuration. Every key has a default; see docs/OPERATOR.md.\n"
        "# Unknown keys are errors, so typos are caught at start.\n\n"
    )
    return header + tomli_w.dumps(dataclasses.asdict(cfg))


def save_config(cfg: NodeConfig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(config_to_toml(cfg), encoding="utf-8")
