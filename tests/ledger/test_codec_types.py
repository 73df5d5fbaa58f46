"""Acceptance 1: every ledger type round-trips; arbitrary bytes only ever raise CodecError."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.codec import CodecError, decode_record, encode, record_types
from ledger.crypto import address_of
from ledger.tx import Bond, Transfer, Tx
from ledger.validators import Validator, ValidatorSet
from ledger.votes import Commit, CommitSig, Proposal, Vote
from tests.ledger import strategies as S

# FL contract records (ledger.fl) have their own strategies in test_fl_codec.py
LEDGER_TYPES = {
    cls.__name__: cls
    for tag, cls in record_types().items()
    if tag < 200 and not cls.__module__.startswith("ledger.fl")
}

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_every_ledger_record_has_a_strategy() -> None:
    assert set(LEDGER_TYPES) <= set(S.ALL), set(LEDGER_TYPES) - set(S.ALL)


@pytest.mark.parametrize("name", sorted(S.ALL))
@FAST
@given(data=st.data())
def test_round_trip(name: str, data: st.DataObject) -> None:
    value: Any = data.draw(S.ALL[name])
    raw = encode(value)
    back = decode_record(raw, type(value))
    assert back == value
    assert type(back) is type(value)
    assert encode(back) == raw


@pytest.mark.parametrize("name", sorted(S.ALL))
@FAST
@given(junk=st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_codec_error(name: str, junk: bytes) -> None:
    cls = LEDGER_TYPES[name]
    try:
        value: Any = decode_record(junk, cls)
    except CodecError:
        return
    assert encode(value) == junk  # anything accepted is the canonical encoding


@pytest.mark.parametrize("name", ["Tx", "Block", "Vote", "Commit", "Genesis", "BlockResults"])
@FAST
@given(data=st.data())
def test_mutated_encodings_raise_only_codec_error(name: str, data: st.DataObject) -> None:
    value = data.draw(S.ALL[name])
    raw = bytearray(encode(value))
    op = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate", "append"]))
    i = data.draw(st.integers(0, len(raw) - 1))
    if op == "flip":
        raw[i] ^= data.draw(st.integers(1, 255))
    elif op == "insert":
        raw.insert(i, data.draw(st.integers(0, 255)))
    elif op == "delete":
        del raw[i]
    elif op == "truncate":
        del raw[i:]
    else:
        raw += b"\x00"
    try:
        back = decode_record(bytes(raw), type(value))
    except CodecError:
        return
    assert encode(back) == bytes(raw)


def test_wrong_record_type_is_a_codec_error() -> None:
    raw = encode(Transfer(b"\x01" * 20, 5))
    with pytest.raises(CodecError, match="not a Tx"):
        decode_record(raw, Tx)


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: Transfer(b"\x01" * 19, 5), "to must be 20 bytes"),
        (lambda: Transfer(b"\x01" * 20, 0), "amount"),
        (lambda: Bond(b"\x01" * 31, 5), "validator_pubkey"),
        (lambda: Tx(Transfer(b"\x01" * 20, 1), -1, b"\x02" * 32, b""), "nonce"),
        (lambda: Tx(Transfer(b"\x01" * 20, 1), 0, b"\x02" * 32, b"\x00" * 10), "signature"),
        (lambda: Vote(3, 1, 0, None, 0, b"\x01" * 20, 0, b""), "vote type"),
        (lambda: Vote(1, 0, 0, None, 0, b"\x01" * 20, 0, b""), "height"),
        (lambda: Proposal(1, 0, 0, b"\x01" * 32, 0, b""), "pol_round"),
        (lambda: CommitSig(1, b"\x01" * 20, 0, b""), "absent"),
        (lambda: Commit(1, 0, b"\x01" * 32, ()), "at least one"),
        (
            lambda: ValidatorSet((Validator(address_of(b"\x01" * 32), b"\x01" * 32, 1),) * 2),
            "sorted",
        ),
    ],
)
def test_invalid_values_are_refused_at_construction(build: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()  # type: ignore[operator]
