"""Genesis JSON: the format fixed by the node foundation, round trips, errors naming the field."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings

from ledger.crypto import PrivateKey
from ledger.errors import GenesisError
from ledger.genesis import (
    Genesis,
    genesis_from_dict,
    genesis_from_json,
    genesis_state,
    genesis_to_json,
    load_genesis,
    parse_time,
)
from ledger.schema import get_account, get_validator
from tests.ledger import strategies as S

VAL = PrivateKey.from_seed_int(100)
OP = PrivateKey.from_seed_int(200)


def spec_doc() -> dict[str, Any]:
    """The example of the home-file spec, with real keys."""
    return {
        "genesis_time": "2026-11-25T21:00:00.000000Z",
        "chain_id": "fedledger-local",
        "initial_height": 1,
        "consensus_params": {
            "block": {"max_bytes": 4194304, "max_txs": 5000, "max_gas": -1},
            "evidence": {"max_age_num_blocks": 100000, "max_bytes": 1048576},
            "validator": {"pub_key_types": ["ed25519"]},
            "staking": {"double_sign_slash_ppm": 50000, "unbonding_blocks": 2, "jail_blocks": 100},
        },
        "validators": [
            {
                "address": VAL.address.hex().upper(),
                "pub_key": {
                    "type": "tendermint/PubKeyEd25519",
                    "value": base64.b64encode(VAL.public_key).decode(),
                },
                "power": "100",
                "name": "node0",
                "operator": OP.address.hex(),
            }
        ],
        "app_state": {"accounts": [{"address": OP.address.hex(), "balance": "1000000000"}]},
    }


def test_spec_example_loads(tmp_path: Path) -> None:
    path = tmp_path / "genesis.json"
    path.write_text(json.dumps(spec_doc()))
    g = load_genesis(path)
    assert g.chain_id == "fedledger-local"
    assert g.genesis_time == parse_time("2026-11-25T21:00:00Z")
    assert g.params.staking.double_sign_slash_ppm == 50_000
    assert g.validators[0].pubkey == VAL.public_key and g.validators[0].power == 100
    st = genesis_state(g)
    assert st.validators.total_power == 100
    assert st.validators == st.next_validators and len(st.last_validators) == 0
    assert get_account(st.app, OP.address).balance == 1_000_000_000
    rec = get_validator(st.app, VAL.address)
    assert rec is not None and rec.operator == OP.address and rec.tokens == 100
    assert st.last_block_height == 0 and st.height == 1
    # writing it back gives a document that parses to the same genesis
    assert genesis_from_json(genesis_to_json(g)) == g


@settings(max_examples=30, deadline=None)
@given(g=S.genesis)
def test_json_round_trip(g: Genesis) -> None:
    assert genesis_from_json(genesis_to_json(g)) == g


@pytest.mark.parametrize(
    "time, ms",
    [
        ("1970-01-01T00:00:00Z", 0),
        ("2026-11-25T21:00:00.000000Z", 1795640400000),
        ("2026-11-25T21:00:00.123456789Z", 1795640400123),
        ("2024-02-29T00:00:00.5Z", 1709164800500),
    ],
)
def test_parse_time(time: str, ms: int) -> None:
    assert parse_time(time) == ms


def _set(path: str, value: Any) -> dict[str, Any]:
    doc = spec_doc()
    *parents, last = path.replace("]", "").replace("[", ".").split(".")
    node: Any = doc
    for p in parents:
        node = node[int(p)] if p.isdigit() else node[p]
    if value is _DELETE:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return doc


_DELETE = object()


@pytest.mark.parametrize(
    "path, value, error",
    [
        ("chain_id", "", "chain_id"),
        ("chain_id", 5, "chain_id: expected a string"),
        ("genesis_time", "2026-11-25 21:00:00", "genesis_time: expected RFC 3339"),
        ("genesis_time", "2026-02-30T00:00:00Z", "genesis_time: day out of range"),
        ("initial_height", "one", "initial_height: expected an integer"),
        ("initial_height", True, "initial_height: expected an integer"),
        ("consensus_params.block.max_bytes", 10, "consensus_params.block: block.max_bytes"),
        ("consensus_params.block.max_txs", _DELETE, "consensus_params.block.max_txs: missing"),
        ("consensus_params.staking.double_sign_slash_ppm", 2_000_000, "double_sign_slash_ppm"),
        ("consensus_params.validator.pub_key_types", ["secp256k1"], "pub_key_types"),
        ("consensus_params.extra", 1, "consensus_params.extra: unknown field"),
        ("validators", [], "at least one validator"),
        ("validators[0].address", "00" * 20, "validators[0].address: does not match pub_key"),
        ("validators[0].address", "xyz", "validators[0].address: expected 40 hex digits"),
        ("validators[0].pub_key.type", "ed25519", "validators[0].pub_key.type"),
        ("validators[0].pub_key.value", "!!!", "validators[0].pub_key.value: not valid base64"),
        ("validators[0].pub_key.value", "AAAA", "validators[0].pub_key.value: expected 32 bytes"),
        ("validators[0].power", "0", "validators[0]: power"),
        ("validators[0].power", "1e3", "validators[0].power: expected an integer"),
        ("validators[0].name", "x" * 65, "validators[0]: name longer"),
        ("validators[0].operator", "12", "validators[0].operator"),
        ("app_state.accounts[0].balance", "-1", "app_state.accounts[0]: balance"),
        ("app_state.accounts[0].address", None, "app_state.accounts[0].address: expected a string"),
        ("app_state.accounts", {}, "app_state.accounts: expected a list"),
        ("app_state.foo", [], "app_state.foo: unknown field"),
        ("app_hash", "", "app_hash: unknown field"),
    ],
)
def test_errors_name_the_field(path: str, value: Any, error: str) -> None:
    with pytest.raises(GenesisError) as e:
        genesis_from_dict(_set(path, value))
    assert error in str(e.value)


def test_duplicates_and_supply_are_refused() -> None:
    doc = spec_doc()
    doc["validators"].append(copy.deepcopy(doc["validators"][0]))
    with pytest.raises(GenesisError, match="duplicate pub_key"):
        genesis_from_dict(doc)
    doc = spec_doc()
    doc["app_state"]["accounts"].append(dict(doc["app_state"]["accounts"][0]))
    with pytest.raises(GenesisError, match="duplicate address"):
        genesis_from_dict(doc)
    doc = spec_doc()
    doc["app_state"]["accounts"][0]["balance"] = str(2**62)
    with pytest.raises(GenesisError, match="supply|balance"):
        genesis_from_dict(doc)


@pytest.mark.parametrize("text", [b"", b"{", b"\xff\xfe", b"[]", b"null"])
def test_bad_json(text: bytes) -> None:
    with pytest.raises(GenesisError):
        genesis_from_json(text)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(GenesisError, match="cannot read"):
        load_genesis(tmp_path / "nope.json")
