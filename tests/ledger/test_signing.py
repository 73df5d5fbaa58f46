"""Domain separation and the commit/vote/proposal verification helpers."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.crypto import PrivateKey, verify
from ledger.errors import InvalidCommitError, InvalidEvidenceError
from ledger.evidence import DuplicateVoteEvidence, verify_duplicate_vote
from ledger.testing import duplicate_vote_evidence, make_testnet, precommit, sign_commit
from ledger.tx import TX_DOMAIN, Transfer, sign_tx
from ledger.votes import (
    PROPOSAL_DOMAIN,
    VOTE_DOMAIN,
    BlockIdFlag,
    Commit,
    CommitSig,
    Proposal,
    Vote,
    VoteType,
    sign_proposal,
    sign_vote,
    verify_commit,
    verify_proposal,
    verify_vote,
)
from tests.ledger import strategies as S

DOMAINS = [TX_DOMAIN, VOTE_DOMAIN, PROPOSAL_DOMAIN]
KEY = PrivateKey.from_seed_int(7)


@settings(max_examples=30, deadline=None)
@given(
    chain_a=S.chain_ids,
    chain_b=S.chain_ids,
    dom_a=st.sampled_from(DOMAINS),
    dom_b=st.sampled_from(DOMAINS),
    payload=st.binary(max_size=64),
)
def test_signature_verifies_only_under_its_own_chain_and_domain(
    chain_a: str, chain_b: str, dom_a: str, dom_b: str, payload: bytes
) -> None:
    sig = KEY.sign(dom_a, chain_a, payload)
    assert verify(KEY.public_key, sig, dom_a, chain_a, payload)
    same = (chain_a, dom_a) == (chain_b, dom_b)
    assert verify(KEY.public_key, sig, dom_b, chain_b, payload) is same


@settings(max_examples=20, deadline=None)
@given(chain_a=S.chain_ids, chain_b=S.chain_ids, body=S.tx_body, nonce=st.integers(0, 2**40))
def test_tx_signed_for_one_chain_fails_on_another(
    chain_a: str, chain_b: str, body: Transfer, nonce: int
) -> None:
    tx = sign_tx(KEY, chain_a, body, nonce)
    assert tx.verify_signature(chain_a)
    assert tx.verify_signature(chain_b) is (chain_a == chain_b)
    # nor as a vote or proposal over the same payload bytes
    for dom in (VOTE_DOMAIN, PROPOSAL_DOMAIN):
        assert not verify(KEY.public_key, tx.signature, dom, chain_a, tx.sign_payload())


@settings(max_examples=20, deadline=None)
@given(vote=S.vote, proposal=S.proposal(), chain_a=S.chain_ids, chain_b=S.chain_ids)
def test_votes_and_proposals_bind_chain_and_domain(
    vote: Vote, proposal: Proposal, chain_a: str, chain_b: str
) -> None:
    v = sign_vote(KEY, chain_a, vote)
    p = sign_proposal(KEY, chain_a, proposal)
    assert verify_vote(chain_a, v, KEY.public_key)
    assert verify_proposal(chain_a, p, KEY.public_key)
    assert verify_vote(chain_b, v, KEY.public_key) is (chain_a == chain_b)
    assert verify_proposal(chain_b, p, KEY.public_key) is (chain_a == chain_b)
    assert not verify(KEY.public_key, v.signature, PROPOSAL_DOMAIN, chain_a, v.sign_payload())
    assert not verify(KEY.public_key, p.signature, VOTE_DOMAIN, chain_a, p.sign_payload())
    # any change to a signed field breaks the signature; address and index are not signed
    assert not verify_vote(chain_a, dataclasses.replace(v, round=v.round + 1), KEY.public_key)
    assert not verify_vote(
        chain_a, dataclasses.replace(v, timestamp=v.timestamp + 1), KEY.public_key
    )
    assert not verify_proposal(chain_a, dataclasses.replace(p, height=p.height + 1), KEY.public_key)


# ---------------------------------------------------------------- verify_commit

NET = make_testnet(4, 1, power=10)
CHAIN = NET.chain_id
VSET = NET.genesis.validator_set()
KEYS = {k.address: k for k in NET.validator_keys}
ORDERED = [KEYS[v.address] for v in VSET.validators]
BID = b"\x42" * 32


def _commit(signers: int, nil: int = 0) -> Commit:
    keys = ORDERED[: signers + nil]
    return sign_commit(
        CHAIN, VSET, keys, 5, BID, nil=[k.address for k in ORDERED[signers : signers + nil]]
    )


def _tamper_sig(c: Commit) -> Commit:
    s = c.signatures[0]
    bad = CommitSig(s.flag, s.validator_address, s.timestamp, bytes(64))
    return dataclasses.replace(c, signatures=(bad, *c.signatures[1:]))


def _swap(c: Commit) -> Commit:
    return dataclasses.replace(c, signatures=(c.signatures[1], c.signatures[0], *c.signatures[2:]))


@pytest.mark.parametrize(
    "commit, block_id, chain, error",
    [
        (_commit(4), BID, CHAIN, None),
        (_commit(3), BID, CHAIN, None),  # 30 of 40 > 2/3
        (_commit(3, nil=1), BID, CHAIN, None),
        (_commit(2), BID, CHAIN, "needs more than 2/3"),  # exactly half
        (_commit(2, nil=2), BID, CHAIN, "needs more than 2/3"),  # nil votes do not count
        (_commit(4), b"\x43" * 32, CHAIN, "commit is for block"),
        (_commit(4), BID, "other-chain", "bad vote signature"),
        (_tamper_sig(_commit(4)), BID, CHAIN, "bad vote signature"),
        (_tamper_sig(_commit(3, nil=1)), BID, CHAIN, "bad vote signature"),
        (_swap(_commit(4)), BID, CHAIN, "has another address"),
        (
            dataclasses.replace(_commit(4), signatures=_commit(4).signatures[:3]),
            BID,
            CHAIN,
            "slots",
        ),
        (dataclasses.replace(_commit(4), round=1), BID, CHAIN, "bad vote signature"),
    ],
)
def test_verify_commit(commit: Commit, block_id: bytes, chain: str, error: str | None) -> None:
    if error is None:
        verify_commit(chain, VSET, commit, block_id, height=5)
    else:
        with pytest.raises(InvalidCommitError, match=error):
            verify_commit(chain, VSET, commit, block_id, height=5)


def test_verify_commit_checks_height_when_given() -> None:
    with pytest.raises(InvalidCommitError, match="height"):
        verify_commit(CHAIN, VSET, _commit(4), BID, height=6)


def test_exactly_two_thirds_is_not_enough() -> None:
    net = make_testnet(3, 1, power=1)
    vset = net.genesis.validator_set()
    keys = [k for k in net.validator_keys]
    with pytest.raises(InvalidCommitError, match="2 of 3"):
        verify_commit(net.chain_id, vset, sign_commit(net.chain_id, vset, keys[:2], 1, BID), BID)
    verify_commit(net.chain_id, vset, sign_commit(net.chain_id, vset, keys, 1, BID), BID)


def test_commit_rebuilds_each_precommit() -> None:
    c = _commit(3, nil=1)
    for i, v in enumerate(VSET.validators):
        vote = c.vote(i)
        assert vote is not None
        assert vote.type == VoteType.PRECOMMIT and vote.validator_index == i
        assert verify_vote(CHAIN, vote, v.pubkey)
        assert (vote.block_id is None) == (c.signatures[i].flag == BlockIdFlag.NIL)


def test_from_votes_round_trips_a_commit() -> None:
    votes = [precommit(CHAIN, k, VSET, 5, BID, timestamp=9) for k in ORDERED[:3]]
    c = Commit.from_votes(VSET, 5, 0, BID, list(reversed(votes)))
    verify_commit(CHAIN, VSET, c, BID)
    assert c.signatures[3] == CommitSig.absent()
    assert c.signers() == [k.address for k in ORDERED[:3]]


def test_duplicate_vote_evidence() -> None:
    ev = duplicate_vote_evidence(CHAIN, ORDERED[1], VSET, 3)
    verify_duplicate_vote(CHAIN, ev, VSET)
    # canonical order: the swapped pair is not constructible, so one offence has one hash
    with pytest.raises(ValueError, match="canonical order"):
        DuplicateVoteEvidence(ev.vote_b, ev.vote_a)
    assert DuplicateVoteEvidence.from_votes(ev.vote_b, ev.vote_a) == ev
    with pytest.raises(InvalidEvidenceError):
        verify_duplicate_vote("other-chain", ev, VSET)
    forged = dataclasses.replace(ev, vote_b=dataclasses.replace(ev.vote_b, signature=bytes(64)))
    with pytest.raises(InvalidEvidenceError, match="bad vote signature"):
        verify_duplicate_vote(CHAIN, forged, VSET)
    with pytest.raises(ValueError, match="same block"):
        DuplicateVoteEvidence(ev.vote_a, ev.vote_a)
