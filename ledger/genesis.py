"""The genesis document: parse and write ``config/genesis.json``, and build the first state.

The JSON format is CometBFT-like and fixed by the node foundation
(docs/ledger.md, "Genesis"). Integer fields accept a JSON integer or a
decimal string (balances and powers are written as strings because they
may exceed 2^53); unknown keys are rejected so a typo never passes
silently. Every error is a :class:`GenesisError` naming the field, e.g.
``validators[1].pub_key.value: not valid base64``.

Genesis stake is minted: each validator's ``power`` becomes a delegation
from its ``operator`` account on top of that account's liquid balance.
Times are kept in unix milliseconds (sub-millisecond digits are dropped).
"""

from __future__ import annotations

import base64
import binascii
import calendar
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from ledger.block import EMPTY_HASH, check_chain_id
from ledger.chainstate import ChainState
from ledger.codec import encode, record, sha256
from ledger.crypto import address_of
from ledger.errors import GenesisError
from ledger.params import (
    BlockParams,
    ConsensusParams,
    EvidenceParams,
    StakingParams,
    ValidatorParams,
)
from ledger.schema import (
    PARAMS_KEY,
    Account,
    Delegation,
    ValidatorRecord,
    account_key,
    delegation_key,
    validator_key,
)
from ledger.state import AppState
from ledger.tx import check_address, check_pubkey
from ledger.validators import MAX_TOTAL_POWER, Validator, ValidatorSet

PUBKEY_TYPE = "tendermint/PubKeyEd25519"
MAX_NAME_LEN = 64
# All tokens could end up bonded, so the supply is capped at the maximum total voting power;
# with no minting, no balance or stake sum can ever exceed it.
MAX_SUPPLY = MAX_TOTAL_POWER


@record(65)
@dataclass(frozen=True)
class GenesisValidator:
    pubkey: bytes
    power: int
    name: str
    operator: bytes

    def __post_init__(self) -> None:
        check_pubkey("pubkey", self.pubkey)
        check_address("operator", self.operator)
        if not 0 < self.power <= MAX_TOTAL_POWER:
            raise ValueError(f"power must be in 1..{MAX_TOTAL_POWER}")
        if len(self.name) > MAX_NAME_LEN:
            raise ValueError(f"name longer than {MAX_NAME_LEN} characters")

    @property
    def address(self) -> bytes:
        return address_of(self.pubkey)


@record(66)
@dataclass(frozen=True)
class GenesisAccount:
    address: bytes
    balance: int

    def __post_init__(self) -> None:
        check_address("address", self.address)
        if not 0 <= self.balance <= MAX_SUPPLY:
            raise ValueError(f"balance must be in 0..{MAX_SUPPLY}")


@record(67)
@dataclass(frozen=True)
class Genesis:
    genesis_time: int  # unix milliseconds
    chain_id: str
    initial_height: int
    params: ConsensusParams
    validators: tuple[GenesisValidator, ...]
    accounts: tuple[GenesisAccount, ...]

    def __post_init__(self) -> None:
        check_chain_id(self.chain_id)
        if self.genesis_time < 0:
            raise ValueError("genesis_time must not be before 1970")
        if self.initial_height < 1:
            raise ValueError("initial_height must be >= 1")
        if not self.validators:
            raise ValueError("validators: at least one validator is required")
        if len({v.pubkey for v in self.validators}) != len(self.validators):
            raise ValueError("validators: duplicate pub_key")
        if len({a.address for a in self.accounts}) != len(self.accounts):
            raise ValueError("app_state.accounts: duplicate address")
        supply = sum(a.balance for a in self.accounts) + sum(v.power for v in self.validators)
        if supply > MAX_SUPPLY:
            raise ValueError(f"total supply (balances + powers) exceeds {MAX_SUPPLY}")

    @cached_property
    def hash(self) -> bytes:
        """SHA-256 of the canonical encoding: peers on one chain must agree on it."""
        return sha256(encode(self))

    def validator_set(self) -> ValidatorSet:
        return ValidatorSet.from_validators(
            Validator(v.address, v.pubkey, v.power) for v in self.validators
        )


# ---------------------------------------------------------------- building


def make_genesis(
    chain_id: str,
    validators: Sequence[GenesisValidator],
    accounts: Sequence[GenesisAccount],
    genesis_time: int | str,
    params: ConsensusParams | None = None,
    initial_height: int = 1,
) -> Genesis:
    """Build a validated genesis (``genesis_time`` in unix ms or RFC 3339 UTC)."""
    t = parse_time(genesis_time, "genesis_time") if isinstance(genesis_time, str) else genesis_time
    try:
        return Genesis(
            genesis_time=t,
            chain_id=chain_id,
            initial_height=initial_height,
            params=params or ConsensusParams(),
            validators=tuple(validators),
            accounts=tuple(accounts),
        )
    except ValueError as e:
        raise GenesisError(str(e)) from e


def genesis_state(genesis: Genesis) -> ChainState:
    """The chain state before the first block."""
    kv: dict[bytes, bytes] = {PARAMS_KEY: encode(genesis.params)}
    for a in genesis.accounts:
        if a.balance:
            kv[account_key(a.address)] = encode(Account(a.balance, 0))
    for v in genesis.validators:
        rec = ValidatorRecord(v.pubkey, v.operator, v.power, False, 0, v.name)
        kv[validator_key(v.address)] = encode(rec)
        kv[delegation_key(v.address, v.operator)] = encode(Delegation(v.power))
    vset = genesis.validator_set()
    return ChainState(
        chain_id=genesis.chain_id,
        initial_height=genesis.initial_height,
        last_block_height=genesis.initial_height - 1,
        last_block_id=b"",
        last_block_time=genesis.genesis_time,
        last_validators=ValidatorSet(()),
        validators=vset,
        next_validators=vset,
        last_results_hash=EMPTY_HASH,
        app=AppState(kv),
    )


# ---------------------------------------------------------------- time

_TIME_RE = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?Z")


def parse_time(text: str, path: str = "time") -> int:
    """RFC 3339 UTC (``...Z``, up to nanoseconds) to unix milliseconds, integers only."""
    m = _TIME_RE.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise GenesisError(f"{path}: expected RFC 3339 UTC time like 2026-01-02T03:04:05.000000Z")
    y, mo, d, h, mi, s = (int(g) for g in m.groups()[:6])
    if not (1970 <= y <= 9999 and 1 <= mo <= 12 and h < 24 and mi < 60 and s < 60):
        raise GenesisError(f"{path}: time out of range")
    if not 1 <= d <= calendar.monthrange(y, mo)[1]:
        raise GenesisError(f"{path}: day out of range")
    ms = int((m.group(7) or "0").ljust(3, "0")[:3])
    return calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0)) * 1000 + ms


def format_time(ms: int) -> str:
    """Unix milliseconds to RFC 3339 UTC with microseconds, as CometBFT writes it."""
    secs, frac = divmod(ms, 1000)
    t = datetime.fromtimestamp(secs, tz=UTC)
    return f"{t:%Y-%m-%dT%H:%M:%S}.{frac:03d}000Z"


# ---------------------------------------------------------------- JSON


def _obj(value: Any, path: str, keys: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise GenesisError(f"{path or 'genesis'}: expected an object")
    unknown = sorted(set(value) - keys)
    if unknown:
        raise GenesisError(f"{_join(path, unknown[0])}: unknown field")
    missing = sorted(keys - set(value))
    if missing:
        raise GenesisError(f"{_join(path, missing[0])}: missing")
    return value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _int(value: Any, path: str) -> int:
    if isinstance(value, bool):
        raise GenesisError(f"{path}: expected an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]{1,20}", value):
        return int(value)
    raise GenesisError(f"{path}: expected an integer (JSON number or decimal string)")


def _str(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise GenesisError(f"{path}: expected a string")
    return value


def _hex_address(value: Any, path: str) -> bytes:
    s = _str(value, path)
    if not re.fullmatch(r"[0-9a-fA-F]{40}", s):
        raise GenesisError(f"{path}: expected 40 hex digits")
    return bytes.fromhex(s)


def _pubkey(value: Any, path: str) -> bytes:
    obj = _obj(value, path, {"type", "value"})
    if obj["type"] != PUBKEY_TYPE:
        raise GenesisError(f"{path}.type: expected {PUBKEY_TYPE!r}")
    try:
        raw = base64.b64decode(_str(obj["value"], f"{path}.value"), validate=True)
    except (binascii.Error, ValueError) as e:
        raise GenesisError(f"{path}.value: not valid base64") from e
    if len(raw) != 32:
        raise GenesisError(f"{path}.value: expected 32 bytes, got {len(raw)}")
    return raw


def _build(path: str, cls: Any, **kwargs: Any) -> Any:
    try:
        return cls(**kwargs)
    except ValueError as e:
        raise GenesisError(f"{path}: {e}") from e


def _params(value: Any, path: str) -> ConsensusParams:
    obj = _obj(value, path, {"block", "evidence", "validator", "staking"})
    b = _obj(obj["block"], f"{path}.block", {"max_bytes", "max_txs", "max_gas"})
    e = _obj(obj["evidence"], f"{path}.evidence", {"max_age_num_blocks", "max_bytes"})
    v = _obj(obj["validator"], f"{path}.validator", {"pub_key_types"})
    s = _obj(
        obj["staking"],
        f"{path}.staking",
        {"double_sign_slash_ppm", "unbonding_blocks", "jail_blocks"},
    )
    types = v["pub_key_types"]
    if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
        raise GenesisError(f"{path}.validator.pub_key_types: expected a list of strings")
    return ConsensusParams(
        block=_build(
            f"{path}.block",
            BlockParams,
            **{k: _int(b[k], f"{path}.block.{k}") for k in ("max_bytes", "max_txs", "max_gas")},
        ),
        evidence=_build(
            f"{path}.evidence",
            EvidenceParams,
            **{k: _int(e[k], f"{path}.evidence.{k}") for k in ("max_age_num_blocks", "max_bytes")},
        ),
        validator=_build(f"{path}.validator", ValidatorParams, pub_key_types=tuple(types)),
        staking=_build(
            f"{path}.staking",
            StakingParams,
            **{
                k: _int(s[k], f"{path}.staking.{k}")
                for k in ("double_sign_slash_ppm", "unbonding_blocks", "jail_blocks")
            },
        ),
    )


def genesis_from_dict(doc: Mapping[str, Any]) -> Genesis:
    top = _obj(
        doc,
        "",
        {
            "genesis_time",
            "chain_id",
            "initial_height",
            "consensus_params",
            "validators",
            "app_state",
        },
    )
    chain_id = _str(top["chain_id"], "chain_id")
    try:
        check_chain_id(chain_id)
    except ValueError as e:
        raise GenesisError(f"chain_id: {e}") from e
    genesis_time = parse_time(_str(top["genesis_time"], "genesis_time"), "genesis_time")
    initial_height = _int(top["initial_height"], "initial_height")
    params = _params(top["consensus_params"], "consensus_params")

    if not isinstance(top["validators"], list):
        raise GenesisError("validators: expected a list")
    validators = []
    for i, raw in enumerate(top["validators"]):
        p = f"validators[{i}]"
        v = _obj(raw, p, {"address", "pub_key", "power", "name", "operator"})
        pubkey = _pubkey(v["pub_key"], f"{p}.pub_key")
        if _hex_address(v["address"], f"{p}.address") != address_of(pubkey):
            raise GenesisError(f"{p}.address: does not match pub_key (first 20 bytes of sha256)")
        validators.append(
            _build(
                p,
                GenesisValidator,
                pubkey=pubkey,
                power=_int(v["power"], f"{p}.power"),
                name=_str(v["name"], f"{p}.name"),
                operator=_hex_address(v["operator"], f"{p}.operator"),
            )
        )

    app_state = _obj(top["app_state"], "app_state", {"accounts"})
    if not isinstance(app_state["accounts"], list):
        raise GenesisError("app_state.accounts: expected a list")
    accounts = []
    for i, raw in enumerate(app_state["accounts"]):
        p = f"app_state.accounts[{i}]"
        a = _obj(raw, p, {"address", "balance"})
        accounts.append(
            _build(
                p,
                GenesisAccount,
                address=_hex_address(a["address"], f"{p}.address"),
                balance=_int(a["balance"], f"{p}.balance"),
            )
        )
    return make_genesis(chain_id, validators, accounts, genesis_time, params, initial_height)


def genesis_from_json(text: str | bytes) -> Genesis:
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GenesisError(f"genesis: not valid JSON: {e}") from e
    return genesis_from_dict(doc)


def load_genesis(path: str | Path) -> Genesis:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise GenesisError(f"cannot read {path}: {e.strerror}") from e
    return genesis_from_json(data)


def genesis_to_dict(genesis: Genesis) -> dict[str, Any]:
    p = genesis.params
    return {
        "genesis_time": format_time(genesis.genesis_time),
        "chain_id": genesis.chain_id,
        "initial_height": genesis.initial_height,
        "consensus_params": {
            "block": {
                "max_bytes": p.block.max_bytes,
                "max_txs": p.block.max_txs,
                "max_gas": p.block.max_gas,
            },
            "evidence": {
                "max_age_num_blocks": p.evidence.max_age_num_blocks,
                "max_bytes": p.evidence.max_bytes,
            },
            "validator": {"pub_key_types": list(p.validator.pub_key_types)},
            "staking": {
                "double_sign_slash_ppm": p.staking.double_sign_slash_ppm,
                "unbonding_blocks": p.staking.unbonding_blocks,
                "jail_blocks": p.staking.jail_blocks,
            },
        },
        "validators": [
            {
                "address": v.address.hex(),
                "pub_key": {"type": PUBKEY_TYPE, "value": base64.b64encode(v.pubkey).decode()},
                "power": str(v.power),
                "name": v.name,
                "operator": v.operator.hex(),
            }
            for v in genesis.validators
        ],
        "app_state": {
            "accounts": [
                {"address": a.address.hex(), "balance": str(a.balance)} for a in genesis.accounts
            ]
        },
    }


def genesis_to_json(genesis: Genesis) -> str:
    return json.dumps(genesis_to_dict(genesis), indent=2) + "\n"
