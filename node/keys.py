"""Key files of a home: libp2p node key, consensus (priv validator) key, account keyring.

All key files are JSON, written atomically with mode 0600. Formats follow
CometBFT where the concept exists (see docs/OPERATOR.md):

* ``config/node_key.json``: ``{"priv_key": {"type": "ed25519", "value": b64(seed32)}, "peer_id": ...}``
* ``config/priv_validator_key.json``: ``{"address": HEX, "pub_key": {...}, "priv_key": {...}}``
  with the CometBFT ``tendermint/PrivKeyEd25519`` value ``b64(seed32 || pub32)``
* ``keyring/<name>.json``: ``{"name", "address", "pub_key": b64, "priv_key": b64(seed32)}``
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ledger.crypto import PrivateKey, address_of


class KeyFileError(ValueError):
    """A key file is missing or corrupt; the message names the file."""


def write_secret_file(path: Path, text: str) -> None:
    """Write atomically (temp file + fsync + rename) with mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise KeyFileError(f"{path}: key file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise KeyFileError(f"{path}: corrupt key file (not JSON: {e})") from None
    if not isinstance(data, dict):
        raise KeyFileError(f"{path}: corrupt key file (expected a JSON object)")
    return data


def _b64(path: Path, value: Any, what: str, size: int) -> bytes:
    try:
        raw = base64.b64decode(value, validate=True) if isinstance(value, str) else b""
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != size:
        raise KeyFileError(f"{path}: corrupt key file ({what} must be base64 of {size} bytes)")
    return raw


# ---------------------------------------------------------------- node key (libp2p identity)


@dataclass(frozen=True)
class NodeKey:
    seed: bytes

    @classmethod
    def generate(cls) -> NodeKey:
        return cls(os.urandom(32))

    def key_pair(self) -> Any:
        from libp2p.crypto.ed25519 import create_new_key_pair

        return create_new_key_pair(self.seed)

    @property
    def peer_id(self) -> str:
        from libp2p.peer.id import ID

        return str(ID.from_pubkey(self.key_pair().public_key))

    def save(self, path: Path) -> None:
        doc = {
            "priv_key": {"type": "ed25519", "value": base64.b64encode(self.seed).decode()},
            "peer_id": self.peer_id,
        }
        write_secret_file(path, json.dumps(doc, indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> NodeKey:
        data = _read_json(path)
        priv = data.get("priv_key")
        if not isinstance(priv, dict) or priv.get("type") != "ed25519":
            raise KeyFileError(f"{path}: corrupt key file (priv_key.type must be 'ed25519')")
        key = cls(_b64(path, priv.get("value"), "priv_key.value", 32))
        try:
            key.key_pair()
        except ValueError as e:
            raise KeyFileError(f"{path}: corrupt key file ({e})") from None
        return key


# ---------------------------------------------------------------- consensus key

_PUB_TYPE = "tendermint/PubKeyEd25519"
_PRIV_TYPE = "tendermint/PrivKeyEd25519"


def pubkey_json(pub: bytes) -> dict[str, str]:
    return {"type": _PUB_TYPE, "value": base64.b64encode(pub).decode()}


def save_priv_validator_key(key: PrivateKey, path: Path) -> None:
    doc = {
        "address": key.address.hex().upper(),
        "pub_key": pubkey_json(key.public_key),
        "priv_key": {
            "type": _PRIV_TYPE,
            "value": base64.b64encode(key.seed + key.public_key).decode(),
        },
    }
    write_secret_file(path, json.dumps(doc, indent=2) + "\n")


def load_priv_validator_key(path: Path) -> PrivateKey:
    data = _read_json(path)
    priv = data.get("priv_key")
    if not isinstance(priv, dict) or priv.get("type") != _PRIV_TYPE:
        raise KeyFileError(f"{path}: corrupt key file (priv_key.type must be {_PRIV_TYPE!r})")
    raw = _b64(path, priv.get("value"), "priv_key.value", 64)
    key = PrivateKey(raw[:32])
    if key.public_key != raw[32:]:
        raise KeyFileError(f"{path}: corrupt key file (public half does not match the seed)")
    if str(data.get("address", "")).lower() != key.address.hex():
        raise KeyFileError(f"{path}: corrupt key file (address does not match the key)")
    return key


# ---------------------------------------------------------------- account keyring

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_key_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise KeyFileError(
            f"invalid key name {name!r}: use 1-64 letters, digits, '.', '_' or '-' "
            "(starting with a letter or digit)"
        )
    return name


def keyring_path(home: Path, name: str) -> Path:
    return home / "keyring" / f"{check_key_name(name)}.json"


def save_account_key(home: Path, name: str, key: PrivateKey, overwrite: bool = False) -> Path:
    path = keyring_path(home, name)
    if path.exists() and not overwrite:
        raise KeyFileError(f"{path}: a key named {name!r} already exists")
    doc = {
        "name": name,
        "address": key.address.hex(),
        "pub_key": base64.b64encode(key.public_key).decode(),
        "priv_key": base64.b64encode(key.seed).decode(),
    }
    write_secret_file(path, json.dumps(doc, indent=2) + "\n")
    return path


def load_account_key(home: Path, name: str) -> PrivateKey:
    path = keyring_path(home, name)
    data = _read_json(path)
    key = PrivateKey(_b64(path, data.get("priv_key"), "priv_key", 32))
    if data.get("address") != key.address.hex():
        raise KeyFileError(f"{path}: corrupt key file (address does not match the key)")
    return key


def list_account_keys(home: Path) -> list[tuple[str, bytes]]:
    """(name, address) of every readable key in the keyring, sorted by name."""
    out = []
    for p in sorted((home / "keyring").glob("*.json")):
        try:
            out.append((p.stem, load_account_key(home, p.stem).address))
        except KeyFileError:
            continue
    return out


__all__ = [
    "KeyFileError",
    "NodeKey",
    "address_of",
    "check_key_name",
    "keyring_path",
    "list_account_keys",
    "load_account_key",
    "load_priv_validator_key",
    "pubkey_json",
    "save_account_key",
    "save_priv_validator_key",
    "write_secret_file",
]
