"""Acceptance 3: transfers, bonds, unbonds, replay, overspend, H+2 validator changes, slashing."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from ledger.block import Block, Header
from ledger.codec import CodecError, decode_record
from ledger.errors import InvalidBlockError, InvalidCommitError, InvalidEvidenceError
from ledger.evidence import DuplicateVoteEvidence
from ledger.params import BlockParams, ConsensusParams, EvidenceParams, StakingParams
from ledger.results import Code
from ledger.schema import (
    DELEGATION_PREFIX,
    UNBONDING_PREFIX,
    Delegation,
    UnbondingEntry,
    get_account,
    get_validator,
)
from ledger.testing import (
    ChainBuilder,
    Wallet,
    duplicate_vote_evidence,
    make_block,
    make_testnet,
    validator_key,
)
from ledger.tx import Transfer, sign_tx
from ledger.votes import Vote, sign_vote

BAL = 1_000_000


def chain(
    n_validators: int = 4, n_accounts: int = 3, params: ConsensusParams | None = None
) -> tuple[ChainBuilder, list[Wallet]]:
    net = make_testnet(n_validators, n_accounts, power=100, balance=BAL, params=params)
    return ChainBuilder(net), [Wallet(k, net.chain_id) for k in net.account_keys]


def supply(cb: ChainBuilder) -> int:
    """Liquid + bonded + unbonding tokens."""
    app = cb.state.app
    total = 0
    for k, _ in app.items(b"acc/"):
        total += get_account(app, k[4:]).balance
    for _, v in app.items(DELEGATION_PREFIX):
        total += decode_record(v, Delegation).amount
    for _, v in app.items(UNBONDING_PREFIX):
        total += decode_record(v, UnbondingEntry).amount
    return total


def codes(block_results: object) -> list[int]:
    return [r.code for r in block_results.tx_results]  # type: ignore[attr-defined]


# ---------------------------------------------------------------- accounts


def test_transfer_moves_tokens_and_bumps_nonce() -> None:
    cb, (a, b, c) = chain()
    before = supply(cb)
    r = cb.advance([a.transfer(b.address, 300), a.transfer(c.address, 200)])
    assert codes(r.results) == [0, 0]
    app = cb.state.app
    assert get_account(app, a.address).balance == BAL - 500
    assert get_account(app, a.address).nonce == 2
    assert get_account(app, b.address).balance == BAL + 300
    assert get_account(app, c.address).balance == BAL + 200
    assert r.results.tx_results[0].events[0].attributes["amount"] == "300"
    assert supply(cb) == before


def test_transfer_to_a_new_account_creates_it() -> None:
    cb, (a, *_) = chain()
    fresh = validator_key(99).address
    cb.advance([a.transfer(fresh, 7)])
    assert get_account(cb.state.app, fresh).balance == 7


def test_overspend_fails_but_consumes_the_nonce() -> None:
    cb, (a, b, _) = chain()
    r = cb.advance([a.transfer(b.address, BAL + 1), a.transfer(b.address, 10)])
    assert codes(r.results) == [Code.INSUFFICIENT_FUNDS, Code.OK]
    assert get_account(cb.state.app, a.address).balance == BAL - 10
    assert get_account(cb.state.app, a.address).nonce == 2


def test_overspend_across_txs_of_one_block() -> None:
    cb, (a, b, _) = chain()
    r = cb.advance([a.transfer(b.address, BAL - 10), a.transfer(b.address, 11)])
    assert codes(r.results) == [Code.OK, Code.INSUFFICIENT_FUNDS]


def test_replayed_tx_is_rejected_and_changes_nothing() -> None:
    cb, (a, b, _) = chain()
    tx = a.transfer(b.address, 5)
    cb.advance([tx])
    before = cb.state.app
    r = cb.advance([tx])
    assert codes(r.results) == [Code.NONCE_TOO_LOW]
    assert cb.state.app == before
    r = cb.advance([sign_tx(a.key, a.chain_id, tx.body, 5)])
    assert codes(r.results) == [Code.NONCE_TOO_HIGH]
    assert cb.state.app == before


def test_bad_signature_and_wrong_chain_change_nothing() -> None:
    cb, (a, b, _) = chain()
    good = a.transfer(b.address, 5)
    forged = dataclasses.replace(good, signature=bytes(64))
    other_chain = sign_tx(a.key, "other-chain", Transfer(b.address, 5), 0)
    before = cb.state.app
    r = cb.advance([forged, other_chain])
    assert codes(r.results) == [Code.BAD_SIGNATURE, Code.BAD_SIGNATURE]
    assert cb.state.app == before


# ---------------------------------------------------------------- stake


def test_bond_changes_the_validator_set_at_h_plus_2() -> None:
    cb, (a, *_) = chain()
    v0 = cb.net.validator_keys[0]
    old = cb.state.validators
    r = cb.advance([a.bond(v0.public_key, 50)])  # height 1 = H
    h = r.block.height
    assert codes(r.results) == [0]
    # after H: H+1 is still signed by the old set, H+2 by the new one
    assert cb.state.validators == old
    assert cb.state.next_validators.get(v0.address).power == 150  # type: ignore[union-attr]
    assert r.results.validator_set_update == cb.state.next_validators
    b1 = cb.advance()  # H+1
    assert b1.block.header.validators_hash == old.hash
    assert b1.block.header.next_validators_hash != old.hash
    b2 = cb.advance()  # H+2
    assert b2.block.height == h + 2
    assert cb.blocks[-1].block.header.validators_hash == b2.state.last_validators.hash
    assert b2.state.last_validators.get(v0.address).power == 150  # type: ignore[union-attr]
    assert get_account(cb.state.app, a.address).balance == BAL - 50


def test_bond_to_a_new_key_creates_a_validator_that_signs_from_h_plus_2() -> None:
    cb, (a, *_) = chain()
    newkey = validator_key(50)
    cb.net.validator_keys.append(newkey)
    r = cb.advance([a.bond(newkey.public_key, 1000)])
    assert codes(r.results) == [0]
    rec = get_validator(cb.state.app, newkey.address)
    assert rec is not None and rec.operator == a.address and rec.tokens == 1000
    assert cb.state.validators.get(newkey.address) is None
    cb.advance()
    assert cb.state.validators.get(newkey.address) is not None
    # the new validator holds 1000 of 1400: the next commit is invalid without it
    nxt = cb.propose()
    others = [k for k in cb.net.validator_keys if k != newkey]
    cb.add(nxt, cb.commit_for(nxt, signers=others))
    with pytest.raises(InvalidCommitError, match="needs more than 2/3"):
        cb.advance()
    assert cb.state.validators.get(newkey.address).power == 1000  # type: ignore[union-attr]


def test_bond_beyond_balance_fails() -> None:
    cb, (a, *_) = chain()
    r = cb.advance([a.bond(validator_key(0).public_key, BAL + 1)])
    assert codes(r.results) == [Code.INSUFFICIENT_FUNDS]
    assert cb.state.next_validators == cb.state.validators


def test_unbond_returns_tokens_after_the_unbonding_period() -> None:
    cb, (a, *_) = chain(params=ConsensusParams(staking=StakingParams(unbonding_blocks=3)))
    v = cb.net.validator_keys[0]  # operated by account 0 = a, 100 bonded
    r = cb.advance([a.unbond(v.public_key, 40)])
    h = r.block.height
    assert codes(r.results) == [0]
    assert cb.state.next_validators.get(v.address).power == 60  # type: ignore[union-attr]
    bal = get_account(cb.state.app, a.address).balance
    assert bal == BAL
    for _ in range(2):
        cb.advance()
        assert get_account(cb.state.app, a.address).balance == BAL
    r = cb.advance()  # h + 3: released at the end of this block
    assert r.block.height == h + 3
    assert get_account(cb.state.app, a.address).balance == BAL + 40
    assert any(e.type == "unbonding_complete" for e in r.results.end_block_events)


def test_unbond_errors() -> None:
    cb, (a, b, _) = chain()
    v = cb.net.validator_keys[0]
    r = cb.advance(
        [
            b.unbond(v.public_key, 1),  # b has no stake on v
            a.unbond(v.public_key, 101),
            a.unbond(validator_key(77).public_key, 1),
        ]
    )
    assert codes(r.results) == [
        Code.INSUFFICIENT_STAKE,
        Code.INSUFFICIENT_STAKE,
        Code.UNKNOWN_VALIDATOR,
    ]


def test_full_unbond_removes_the_validator_and_never_empties_the_set() -> None:
    cb, (a, *_) = chain(n_validators=1, n_accounts=1)
    v = cb.net.validator_keys[0]
    r = cb.advance([a.unbond(v.public_key, 100)])
    assert codes(r.results) == [0]
    assert cb.state.next_validators == cb.state.validators  # kept: an empty set would halt
    assert any(e.type == "validator_set_kept" for e in r.results.end_block_events)


def test_double_sign_evidence_slashes_jails_and_is_accepted_once() -> None:
    params = ConsensusParams(staking=StakingParams(double_sign_slash_ppm=100_000, jail_blocks=3))
    cb, (a, *_) = chain(params=params)
    cb.advance()
    cb.advance()
    bad = cb.net.validator_keys[2]
    ev = duplicate_vote_evidence(
        cb.state.chain_id, bad, cb.state.last_validators, cb.state.last_block_height
    )
    before = supply(cb)
    r = cb.advance(evidence=[ev])
    assert any(
        e.type == "slash" and e.attributes["burned"] == "10" for e in r.results.begin_block_events
    )
    rec = get_validator(cb.state.app, bad.address)
    assert rec is not None and rec.jailed and rec.tokens == 90
    assert supply(cb) == before - 10
    assert cb.state.next_validators.get(bad.address) is None  # gone from H+2
    assert cb.state.validators.get(bad.address) is not None  # still signs H+1
    # the same offence cannot be punished twice
    again = cb.propose(evidence=[ev])
    with pytest.raises(InvalidEvidenceError, match="already punished"):
        cb.add(again)
    # its operator unjails it once the jail time is over; back in the set two blocks later
    op = Wallet(cb.net.account_keys[2 % 3], cb.state.chain_id, nonce=0)
    r = cb.advance([op.unjail(bad.public_key)])
    assert codes(r.results) == [Code.STILL_JAILED]
    cb.advance()
    r = cb.advance([op.unjail(bad.public_key)])
    assert codes(r.results) == [Code.OK]
    assert cb.state.next_validators.get(bad.address).power == 90  # type: ignore[union-attr]


def test_unjail_errors() -> None:
    cb, (a, b, _) = chain()
    v = cb.net.validator_keys[0]  # operated by a
    r = cb.advance([b.unjail(v.public_key), a.unjail(v.public_key)])
    assert codes(r.results) == [Code.UNAUTHORIZED, Code.NOT_JAILED]


def test_stake_unbonding_after_the_offence_is_slashed_too() -> None:
    params = ConsensusParams(
        staking=StakingParams(double_sign_slash_ppm=500_000, unbonding_blocks=10)
    )
    cb, (a, *_) = chain(params=params)
    v = cb.net.validator_keys[0]
    cb.advance()
    offence = cb.state.last_block_height
    vset = cb.state.last_validators
    cb.advance([a.unbond(v.public_key, 60)])
    ev = duplicate_vote_evidence(cb.state.chain_id, v, vset, offence)
    cb.advance(evidence=[ev])
    entry = next(iter(cb.state.app.items(UNBONDING_PREFIX)))[1]
    assert decode_record(entry, UnbondingEntry).amount == 30
    assert get_validator(cb.state.app, v.address).tokens == 20  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "case, error",
    [
        ("future", "not in the past"),
        ("too_old", "older than"),
        ("unknown_set", "unknown"),
        ("twice", "duplicates"),
        ("not_a_validator", "out of range|another address"),
    ],
)
def test_invalid_evidence_rejects_the_block(case: str, error: str) -> None:
    params = ConsensusParams(evidence=EvidenceParams(max_age_num_blocks=2))
    cb, _ = chain(params=params)
    for _ in range(4):
        cb.advance()
    key = cb.net.validator_keys[1]
    vset = cb.state.last_validators
    h = cb.state.last_block_height
    ev = duplicate_vote_evidence(cb.state.chain_id, key, vset, h)
    chain_id = cb.state.chain_id
    outsider = validator_key(40)

    def forged(h: int) -> DuplicateVoteEvidence:
        # signed by a key outside the set, claiming index 0
        a, b = (
            sign_vote(outsider, chain_id, Vote(2, h, 0, bid, 0, outsider.address, 0, b""))
            for bid in (b"\x0a" * 32, b"\x0b" * 32)
        )
        return DuplicateVoteEvidence.from_votes(a, b)

    evidence = {
        "future": lambda: [duplicate_vote_evidence(chain_id, key, vset, h + 1)],
        "too_old": lambda: [duplicate_vote_evidence(chain_id, key, vset, h - 2)],
        "unknown_set": lambda: [duplicate_vote_evidence(chain_id, key, vset, h - 1)],
        "twice": lambda: [ev, duplicate_vote_evidence(chain_id, key, vset, h, round_=1)],
        "not_a_validator": lambda: [forged(h)],
    }[case]()
    block = cb.propose(evidence=evidence)
    with pytest.raises(InvalidEvidenceError, match=error):
        # without a history, the app knows only the sets its state holds (heights h..h+2)
        cb.app.apply_block(cb.state, block, history=None if case == "unknown_set" else cb)


def test_evidence_bytes_are_capped() -> None:
    cb, _ = chain(params=ConsensusParams(evidence=EvidenceParams(max_bytes=200)))
    cb.advance()
    ev = duplicate_vote_evidence(
        cb.state.chain_id, cb.net.validator_keys[0], cb.state.last_validators, 1
    )
    with pytest.raises(InvalidEvidenceError, match="evidence bytes exceed 200"):
        cb.add(cb.propose(evidence=[ev]))


# ---------------------------------------------------------------- block validity


def _edit_header(block: Block, **changes: Any) -> Block:
    return dataclasses.replace(block, header=dataclasses.replace(block.header, **changes))


@pytest.mark.parametrize(
    "mutate, error",
    [
        (lambda b, s: _edit_header(b, chain_id="other"), "chain id"),
        (lambda b, s: _edit_header(b, height=b.height + 1), "expected height"),
        (lambda b, s: _edit_header(b, time=s.last_block_time), "time not after"),
        (lambda b, s: _edit_header(b, last_block_id=b"\x00" * 32), "last_block_id"),
        (lambda b, s: _edit_header(b, app_hash=b"\x00" * 32), "app_hash"),
        (lambda b, s: _edit_header(b, validators_hash=b"\x00" * 32), "validators_hash"),
        (lambda b, s: _edit_header(b, next_validators_hash=b"\x00" * 32), "next_validators_hash"),
        (lambda b, s: _edit_header(b, last_results_hash=b"\x00" * 32), "last_results_hash"),
        (lambda b, s: _edit_header(b, proposer_address=b"\x00" * 20), "proposer"),
        (lambda b, s: _edit_header(b, data_hash=b"\x00" * 32), "data_hash"),
        (lambda b, s: _edit_header(b, pol_hash=b"\x00" * 32), "pol_hash"),
        (lambda b, s: dataclasses.replace(b, txs=()), "data_hash"),
        (lambda b, s: dataclasses.replace(b, last_commit=None), "last_commit_hash"),
    ],
)
def test_invalid_blocks_are_rejected_and_change_nothing(mutate: object, error: str) -> None:
    cb, (a, b, _) = chain()
    cb.advance()
    before = cb.state
    block = mutate(cb.propose([a.transfer(b.address, 1)]), cb.state)  # type: ignore[operator]
    with pytest.raises(InvalidBlockError, match=error):
        cb.app.apply_block(cb.state, block)
    assert cb.state is before


def test_last_commit_is_verified() -> None:
    cb, _ = chain()
    cb.advance()
    weak = cb.commit_for(cb.blocks[-1].block, signers=cb.net.validator_keys[:2])
    block = make_block(cb.state, last_commit=weak)
    with pytest.raises(InvalidCommitError, match="last commit"):
        cb.app.apply_block(cb.state, block)
    with pytest.raises(InvalidCommitError, match="missing"):
        cb.app.apply_block(cb.state, make_block(cb.state))


def test_first_block_rules() -> None:
    cb, _ = chain()
    # a first block may not carry a commit and may not predate genesis
    early = make_block(cb.state, time=cb.state.last_block_time - 1)
    with pytest.raises(InvalidBlockError, match="before genesis"):
        cb.app.apply_block(cb.state, early)
    cb.add(make_block(cb.state, time=cb.state.last_block_time))


def test_block_limits_from_params() -> None:
    cb, (a, b, _) = chain(params=ConsensusParams(block=BlockParams(max_bytes=1024, max_txs=12)))
    with pytest.raises(InvalidBlockError, match="more than 12 txs"):
        cb.add(cb.propose([a.transfer(b.address, 1) for _ in range(13)]))
    a.nonce = 0
    big = cb.propose([a.transfer(b.address, 1) for _ in range(12)])
    assert len(big.encoded) > 1024
    with pytest.raises(InvalidBlockError, match="exceeds 1024"):
        cb.add(big)
    r = cb.add(cb.propose(big.txs[:2]))
    assert codes(r.results) == [0, 0]
    assert Block.decode(r.block.encoded, 1024) == r.block
    with pytest.raises(CodecError, match="exceeds limit"):
        Block.decode(big.encoded, 1024)


def test_header_is_the_block_id() -> None:
    cb, _ = chain()
    r = cb.advance()
    assert r.block.id == r.block.header.id == r.state.last_block_id
    h2: Header = dataclasses.replace(r.block.header, time=r.block.header.time + 1)
    assert h2.id != r.block.id
