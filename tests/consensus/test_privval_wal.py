"""The privval guard and the consensus WAL: unit tests with real files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from consensus.messages import CatchupRequest, VoteMessage, decode_message, encode_message
from consensus.privval import DoubleSignError, PrivValidator, PrivvalStateError
from consensus.wal import WAL, WalEndHeight, WalOwn, WalTimeout
from ledger.codec import CodecError
from ledger.crypto import PrivateKey
from ledger.votes import Proposal, Vote, VoteType, verify_vote

CHAIN = "test-chain"
KEY = PrivateKey.from_seed_int(7)
B1, B2 = b"\x01" * 32, b"\x02" * 32


def vote(h: int, r: int, t: int, block: bytes | None, ts: int = 1000) -> Vote:
    return Vote(t, h, r, block, ts, KEY.address, 0, b"")


def pv(tmp_path: Path) -> PrivValidator:
    return PrivValidator(KEY, tmp_path / "priv_validator_state.json", CHAIN)


# ---------------------------------------------------------------- privval

def test_signs_and_persists_before_returning(tmp_path: Path) -> None:
    p = pv(tmp_path)
    signed = p.sign_vote(vote(1, 0, VoteType.PREVOTE, B1))
    assert verify_vote(CHAIN, signed, KEY.public_key)
    doc = json.loads((tmp_path / "priv_validator_state.json").read_text())
    assert (doc["height"], doc["round"], doc["step"]) == ("1", 0, 2)


@pytest.mark.parametrize(
    "first, second, outcome",
    [
        # same step, same block, new timestamp: the stored vote comes back unchanged
        (vote(2, 0, VoteType.PREVOTE, B1, 1), vote(2, 0, VoteType.PREVOTE, B1, 99), "same"),
        # same step, different block: a double sign
        (vote(2, 0, VoteType.PREVOTE, B1), vote(2, 0, VoteType.PREVOTE, B2), "refuse"),
        (vote(2, 0, VoteType.PREVOTE, B1), vote(2, 0, VoteType.PREVOTE, None), "refuse"),
        # going back: lower step, round or height
        (vote(2, 0, VoteType.PRECOMMIT, B1), vote(2, 0, VoteType.PREVOTE, B1), "refuse"),
        (vote(2, 1, VoteType.PREVOTE, B1), vote(2, 0, VoteType.PRECOMMIT, B1), "refuse"),
        (vote(3, 0, VoteType.PREVOTE, B1), vote(2, 5, VoteType.PRECOMMIT, B1), "refuse"),
        # moving forward is fine
        (vote(2, 0, VoteType.PREVOTE, B1), vote(2, 0, VoteType.PRECOMMIT, B2), "new"),
        (vote(2, 0, VoteType.PRECOMMIT, B1), vote(2, 1, VoteType.PREVOTE, B2), "new"),
    ],
)
def test_double_sign_guard(tmp_path: Path, first: Vote, second: Vote, outcome: str) -> None:
    p = pv(tmp_path)
    a = p.sign_vote(first)
    p2 = pv(tmp_path)  # also across a restart: the guard reads its file
    if outcome == "refuse":
        with pytest.raises(DoubleSignError):
            p2.sign_vote(second)
    elif outcome == "same":
        assert p2.sign_vote(second) == a
    else:
        assert p2.sign_vote(second).block_id == second.block_id


def test_proposals_are_guarded_too(tmp_path: Path) -> None:
    p = pv(tmp_path)
    a = p.sign_proposal(Proposal(5, 1, -1, B1, 10, b""))
    assert p.sign_proposal(Proposal(5, 1, -1, B1, 20, b"")) == a
    with pytest.raises(DoubleSignError):
        p.sign_proposal(Proposal(5, 1, -1, B2, 10, b""))
    p.sign_vote(vote(5, 1, VoteType.PREVOTE, B1))
    with pytest.raises(DoubleSignError):
        p.sign_proposal(Proposal(5, 1, -1, B1, 10, b""))


def test_corrupt_state_file_refuses_to_start(tmp_path: Path) -> None:
    (tmp_path / "priv_validator_state.json").write_text("{not json")
    with pytest.raises(PrivvalStateError, match="corrupt privval state"):
        pv(tmp_path)


# ---------------------------------------------------------------- WAL

def own_vote(h: int, r: int) -> WalOwn:
    signed = pv_signed(h, r)
    return WalOwn(VoteMessage(signed))


def pv_signed(h: int, r: int) -> Vote:
    from ledger.votes import sign_vote

    return sign_vote(KEY, CHAIN, vote(h, r, VoteType.PREVOTE, B1))


def test_wal_round_trip_and_height_filter(tmp_path: Path) -> None:
    w = WAL(tmp_path / "cs.wal")
    assert w.open() == []
    w.append(own_vote(1, 0), sync=True)
    w.append(WalTimeout(1, 1, 0))
    w.append(own_vote(2, 0), sync=True)
    w.close()
    w2 = WAL(tmp_path / "cs.wal")
    recs = w2.open()
    assert len(recs) == 3 and w2.truncated_bytes == 0
    assert [type(r).__name__ for r in w2.records_for_height(1)] == ["WalOwn", "WalTimeout"]
    w2.close()


@pytest.mark.parametrize("cut", [1, 5, 9, 20])
def test_torn_tail_is_truncated(tmp_path: Path, cut: int) -> None:
    w = WAL(tmp_path / "cs.wal")
    w.open()
    w.append(own_vote(1, 0), sync=True)
    w.append(own_vote(1, 1), sync=True)
    w.close()
    data = (tmp_path / "cs.wal").read_bytes()
    (tmp_path / "cs.wal").write_bytes(data[:-cut])  # a crash mid-write
    w2 = WAL(tmp_path / "cs.wal")
    recs = w2.open()
    assert len(recs) == 1 and w2.truncated_bytes > 0
    w2.append(own_vote(1, 2), sync=True)  # appending continues after the good prefix
    w2.close()
    assert len(WAL(tmp_path / "cs.wal").open()) == 2


def test_crc_mismatch_stops_reading(tmp_path: Path) -> None:
    w = WAL(tmp_path / "cs.wal")
    w.open()
    w.append(own_vote(1, 0), sync=True)
    w.append(own_vote(1, 1), sync=True)
    w.close()
    data = bytearray((tmp_path / "cs.wal").read_bytes())
    data[-3] ^= 0xFF  # flip a byte inside the second record's payload
    (tmp_path / "cs.wal").write_bytes(bytes(data))
    assert len(WAL(tmp_path / "cs.wal").open()) == 1


def test_end_height_rotates(tmp_path: Path) -> None:
    w = WAL(tmp_path / "cs.wal")
    w.open()
    w.append(own_vote(1, 0), sync=True)
    w.end_height(WalEndHeight(1, ((KEY.address, 10, 0),), KEY.address))
    w.append(own_vote(2, 0), sync=True)
    w.close()
    recs = WAL(tmp_path / "cs.wal").open()
    assert [type(r).__name__ for r in recs] == ["WalEndHeight", "WalOwn"]


def test_consensus_messages_decode_strictly() -> None:
    m = CatchupRequest(3, 1)
    assert decode_message(encode_message(m)) == m
    for bad in (b"", b"\x00", encode_message(m) + b"x", b"\x92\xcc\xff\x01"):
        with pytest.raises(CodecError):
            decode_message(bad)
