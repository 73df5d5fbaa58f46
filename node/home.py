"""A node's home directory: layout, `init` and `testnet` generation, loading with clear errors.

Layout (like CometBFT's)::

    HOME/config/config.toml               settings (node/config.py)
    HOME/config/genesis.json              shared by every node of a chain
    HOME/config/node_key.json             libp2p identity (peer id), 0600
    HOME/config/priv_validator_key.json   consensus key, 0600
    HOME/config/operator_token            bearer token for operator-only RPC, 0600
    HOME/keyring/<name>.json              account keys, 0600
    HOME/data/                            LevelDB stores, WAL, priv_validator_state.json
"""

from __future__ import annotations

import json
import secrets
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ledger.crypto import PrivateKey
from ledger.genesis import (
    Genesis,
    GenesisAccount,
    GenesisError,
    GenesisValidator,
    genesis_to_json,
    load_genesis,
    make_genesis,
)
from node.config import ConfigError, NodeConfig, load_config, save_config
from node.keys import (
    KeyFileError,
    NodeKey,
    load_priv_validator_key,
    save_account_key,
    save_priv_validator_key,
    write_secret_file,
)

DEFAULT_CHAIN_ID = "fedledger-local"
DEFAULT_POWER = 100
DEFAULT_BALANCE = 1_000_000_000


class HomeError(ValueError):
    """The home directory is missing, incomplete or corrupt; the message says which file."""


@dataclass(frozen=True)
class Home:
    root: Path

    @property
    def config_dir(self) -> Path:
        return self.root / "config"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def config_file(self) -> Path:
        return self.config_dir / "config.toml"

    @property
    def genesis_file(self) -> Path:
        return self.config_dir / "genesis.json"

    @property
    def node_key_file(self) -> Path:
        return self.config_dir / "node_key.json"

    @property
    def priv_validator_key_file(self) -> Path:
        return self.config_dir / "priv_validator_key.json"

    @property
    def operator_token_file(self) -> Path:
        return self.config_dir / "operator_token"

    @property
    def priv_validator_state_file(self) -> Path:
        return self.data_dir / "priv_validator_state.json"

    @property
    def wal_file(self) -> Path:
        return self.data_dir / "cs.wal"

    def load_config(self) -> NodeConfig:
        try:
            return load_config(self.config_file)
        except ConfigError as e:
            raise HomeError(str(e)) from None

    def load_node_key(self) -> NodeKey:
        try:
            return NodeKey.load(self.node_key_file)
        except KeyFileError as e:
            raise HomeError(str(e)) from None

    def load_validator_key(self) -> PrivateKey:
        try:
            return load_priv_validator_key(self.priv_validator_key_file)
        except KeyFileError as e:
            raise HomeError(str(e)) from None

    def load_genesis_doc(self) -> dict[str, Any]:
        """The genesis JSON as written (for the `genesis` RPC), after full validation."""
        self.load_genesis()
        return json.loads(self.genesis_file.read_text(encoding="utf-8"))  # type: ignore[no-any-return]

    def load_genesis(self) -> Genesis:
        path = self.genesis_file
        if not path.is_file():
            raise HomeError(f"{path}: genesis file not found")
        try:
            return load_genesis(path)
        except GenesisError as e:
            raise HomeError(f"{path}: corrupt genesis file ({e})") from None

    def operator_token(self) -> str:
        path = self.operator_token_file
        if not path.is_file():
            return ""
        return path.read_text(encoding="utf-8").strip()

    def check(self) -> None:
        """Fail early, naming the first missing or corrupt file."""
        if not self.root.is_dir():
            raise HomeError(f"{self.root}: home directory not found (run `fedledger init`)")
        self.load_config()
        self.load_genesis_doc()
        self.load_node_key()
        self.load_validator_key()


# ---------------------------------------------------------------- genesis document


def genesis_time_now() -> int:
    """Unix milliseconds, whole seconds (a readable genesis_time)."""
    return int(time.time()) * 1000


def write_genesis(home: Home, genesis: Genesis) -> None:
    home.config_dir.mkdir(parents=True, exist_ok=True)
    home.genesis_file.write_text(genesis_to_json(genesis), encoding="utf-8")


# ---------------------------------------------------------------- init


@dataclass
class InitResult:
    home: Home
    peer_id: str
    validator_address: bytes
    validator_pubkey: bytes
    account_address: bytes
    config: NodeConfig = field(repr=False)


def _refuse_existing(root: Path, force: bool) -> None:
    if force:
        for sub in ("config", "data", "keyring"):
            shutil.rmtree(root / sub, ignore_errors=True)
        return
    for sub in ("config", "data", "keyring"):
        if (root / sub).exists():
            raise HomeError(
                f"{root / sub}: home already initialised; use --force to overwrite "
                "(this deletes its keys and chain data)"
            )


def init_home(
    root: Path,
    moniker: str,
    chain_id: str = DEFAULT_CHAIN_ID,
    force: bool = False,
    config: NodeConfig | None = None,
    write_single_validator_genesis: bool = True,
) -> InitResult:
    """Create a home with fresh keys; by default a one-validator genesis of its own."""
    _refuse_existing(root, force)
    home = Home(root)
    for d in (home.config_dir, home.data_dir, root / "keyring"):
        d.mkdir(parents=True, exist_ok=True)
        d.chmod(0o700)
    cfg = config or NodeConfig()
    cfg.moniker = moniker
    save_config(cfg, home.config_file)
    node_key = NodeKey.generate()
    node_key.save(home.node_key_file)
    val_key = PrivateKey.generate()
    save_priv_validator_key(val_key, home.priv_validator_key_file)
    acct = PrivateKey.generate()
    save_account_key(root, moniker, acct)
    write_secret_file(home.operator_token_file, secrets.token_hex(24) + "\n")
    if write_single_validator_genesis:
        genesis = make_genesis(
            chain_id,
            [GenesisValidator(val_key.public_key, DEFAULT_POWER, moniker, acct.address)],
            [GenesisAccount(acct.address, DEFAULT_BALANCE)],
            genesis_time_now(),
        )
        write_genesis(home, genesis)
    return InitResult(home, node_key.peer_id, val_key.address, val_key.public_key, acct.address, cfg)


# ---------------------------------------------------------------- testnet


@dataclass
class TestnetNode:
    name: str
    home: Home
    peer_id: str
    p2p_port: int
    rpc_port: int
    validator: bool

    @property
    def multiaddr(self) -> str:
        return f"/ip4/127.0.0.1/tcp/{self.p2p_port}/p2p/{self.peer_id}"

    @property
    def rpc_addr(self) -> str:
        return f"127.0.0.1:{self.rpc_port}"


def make_testnet(
    output: Path,
    validators: int,
    non_validators: int = 0,
    base_port: int = 26656,
    chain_id: str = "fedledger-testnet",
    force: bool = False,
    config: NodeConfig | None = None,
    power: int = DEFAULT_POWER,
    extra_accounts: Sequence[GenesisAccount] = (),
) -> list[TestnetNode]:
    """N validator (+M full-node) homes under OUTPUT/nodeI with one shared genesis.

    Node i listens on p2p port ``base_port + 2*i`` and RPC port ``base_port + 2*i + 1``,
    all on 127.0.0.1. A validator lists every other validator as a bootstrap (gossipsub
    direct) peer; a full node lists the validators and joins them through the mesh (ADR 0005).
    """
    if validators < 1:
        raise HomeError("a testnet needs at least one validator")
    total = validators + non_validators
    if base_port < 1024 or base_port + 2 * total > 65535:
        raise HomeError(f"base port {base_port} leaves no room for {total} nodes")
    nodes: list[TestnetNode] = []
    gen_validators: list[GenesisValidator] = []
    accounts: list[GenesisAccount] = []
    for i in range(total):
        name = f"node{i}"
        cfg = config_copy(config)
        p2p_port, rpc_port = base_port + 2 * i, base_port + 2 * i + 1
        cfg.p2p.listen = [f"/ip4/127.0.0.1/tcp/{p2p_port}"]
        cfg.rpc.laddr = f"127.0.0.1:{rpc_port}"
        res = init_home(
            output / name, name, chain_id, force=force, config=cfg,
            write_single_validator_genesis=False,
        )
        is_val = i < validators
        nodes.append(TestnetNode(name, res.home, res.peer_id, p2p_port, rpc_port, is_val))
        accounts.append(GenesisAccount(res.account_address, DEFAULT_BALANCE))
        if is_val:
            gen_validators.append(
                GenesisValidator(res.validator_pubkey, power, name, res.account_address)
            )
    try:
        genesis = make_genesis(chain_id, gen_validators, accounts + list(extra_accounts),
                               genesis_time_now())
    except GenesisError as e:
        raise HomeError(f"cannot build genesis: {e}") from None
    for node in nodes:
        write_genesis(node.home, genesis)
        cfg = node.home.load_config()
        # Direct peers forward every message to every direct peer, so n fully connected
        # direct peers carry each message over n(n-1) links: 14 nodes spent 12 CPU-seconds per
        # empty block on 2 cores. Validators stay direct among themselves (consensus never
        # waits on a mesh); full nodes hang off the validators as ordinary mesh peers.
        cfg.p2p.bootstrap = [o.multiaddr for o in nodes if o.validator and o is not node]
        cfg.p2p.direct_bootstrap = node.validator
        save_config(cfg, node.home.config_file)
    return nodes


def config_copy(cfg: NodeConfig | None) -> NodeConfig:
    from node.config import config_from_dict

    if cfg is None:
        return NodeConfig()
    import dataclasses

    return config_from_dict(dataclasses.asdict(cfg))
