"""Hypothesis strategies for every ledger record type (and a test-only PoL section, tag 99)."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st

from ledger.block import Block, Header, PolSection
from ledger.codec import record
from ledger.crypto import PrivateKey, address_of
from ledger.evidence import DuplicateVoteEvidence
from ledger.genesis import Genesis, GenesisAccount, GenesisValidator
from ledger.params import (
    BlockParams,
    ConsensusParams,
    EvidenceParams,
    StakingParams,
    ValidatorParams,
)
from ledger.results import BlockResults, Event, TxResult
from ledger.schema import Account, Delegation, SlashRecord, UnbondingEntry, ValidatorRecord
from ledger.state import LeafProof, QueryResult
from ledger.store import ChainMeta, StagedBlock
from ledger.tx import MAX_AMOUNT, MAX_NONCE, Bond, Transfer, Tx, TxBody, Unbond, Unjail
from ledger.txbatch import TxBatch
from ledger.validators import Validator, ValidatorSet
from ledger.votes import BlockIdFlag, Commit, CommitSig, Proposal, Vote, VoteType


# Tags 98 and 99 are reserved for these test-only records.
@record(99)
@dataclass(frozen=True)
class DemoPol(PolSection):
    checkpoints: tuple[bytes, ...]


@record(98)
@dataclass(frozen=True)
class Note(TxBody):
    """A contract-style tx body for registry tests: stores ``text`` under the signer."""

    text: str


u64 = st.integers(0, 2**63 - 1)
heights = st.integers(1, 2**40)
rounds = st.integers(0, 1000)
address = st.binary(min_size=20, max_size=20)
pubkey = st.binary(min_size=32, max_size=32)
hash32 = st.binary(min_size=32, max_size=32)
sig = st.binary(min_size=64, max_size=64)
maybe_sig = st.one_of(st.just(b""), sig)
amount = st.integers(1, MAX_AMOUNT)
text = st.text(max_size=20)
chain_ids = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=50
)

transfer = st.builds(Transfer, address, amount)
bond = st.builds(Bond, pubkey, amount)
unbond = st.builds(Unbond, pubkey, amount)
unjail = st.builds(Unjail, pubkey)
note = st.builds(Note, text)
tx_body = st.one_of(transfer, bond, unbond, unjail, note)
tx = st.builds(Tx, tx_body, st.integers(0, MAX_NONCE), pubkey, maybe_sig)

block_id = hash32
vote = st.builds(
    Vote,
    st.sampled_from([VoteType.PREVOTE, VoteType.PRECOMMIT]).map(int),
    heights,
    rounds,
    st.one_of(st.none(), block_id),
    u64,
    address,
    st.integers(0, 200),
    maybe_sig,
)


@st.composite
def proposal(draw: st.DrawFn) -> Proposal:
    r = draw(rounds)
    return Proposal(
        draw(heights), r, draw(st.integers(-1, r - 1)), draw(block_id), draw(u64), draw(maybe_sig)
    )


commit_sig = st.one_of(
    st.just(CommitSig.absent()),
    st.builds(
        CommitSig,
        st.sampled_from([BlockIdFlag.COMMIT, BlockIdFlag.NIL]).map(int),
        address,
        u64,
        sig,
    ),
)
commit = st.builds(
    Commit, heights, rounds, block_id, st.lists(commit_sig, min_size=1, max_size=5).map(tuple)
)


@st.composite
def duplicate_vote(draw: st.DrawFn) -> DuplicateVoteEvidence:
    v = draw(vote)
    other = draw(st.one_of(st.none(), block_id).filter(lambda b: b != v.block_id))
    w = Vote(
        v.type,
        v.height,
        v.round,
        other,
        draw(u64),
        v.validator_address,
        v.validator_index,
        draw(maybe_sig),
    )
    return DuplicateVoteEvidence.from_votes(v, w)


validator = st.builds(lambda pk, p: Validator(address_of(pk), pk, p), pubkey, st.integers(1, 2**40))
validator_set = st.lists(validator, max_size=6, unique_by=lambda v: v.address).map(
    ValidatorSet.from_validators
)

header = st.builds(
    Header,
    chain_ids,
    heights,
    u64,
    st.one_of(st.just(b""), hash32),
    hash32,
    hash32,
    hash32,
    hash32,
    hash32,
    hash32,
    hash32,
    hash32,
    address,
)
pol = st.one_of(st.none(), st.builds(DemoPol, st.lists(hash32, max_size=3).map(tuple)))
block = st.builds(
    Block,
    header,
    st.lists(tx, max_size=3).map(tuple),
    st.lists(duplicate_vote(), max_size=2).map(tuple),
    st.one_of(st.none(), commit),
    pol,
)

block_params = st.builds(
    BlockParams, st.integers(1024, 100 * 1024 * 1024), st.integers(1, 10**6), st.integers(-1, 10**9)
)
params = st.builds(
    ConsensusParams,
    block_params,
    st.builds(EvidenceParams, st.integers(1, 10**9), st.integers(0, 10**9)),
    st.just(ValidatorParams()),
    st.builds(StakingParams, st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 10**6)),
)
genesis_validator = st.builds(
    GenesisValidator, pubkey, st.integers(1, 10**12), st.text(max_size=64), address
)
genesis_account = st.builds(GenesisAccount, address, st.integers(0, 10**15))
genesis = st.builds(
    Genesis,
    st.integers(0, 2**45),
    chain_ids,
    st.integers(1, 2**40),
    params,
    st.lists(genesis_validator, min_size=1, max_size=4, unique_by=lambda v: v.pubkey).map(tuple),
    st.lists(genesis_account, max_size=4, unique_by=lambda a: a.address).map(tuple),
)

event = st.builds(Event, text, st.dictionaries(text, text, max_size=3))
tx_result = st.builds(TxResult, st.integers(0, 199), text, st.lists(event, max_size=2).map(tuple))
block_results = st.builds(
    BlockResults,
    heights,
    st.lists(tx_result, max_size=3).map(tuple),
    st.lists(event, max_size=2).map(tuple),
    st.lists(event, max_size=2).map(tuple),
    st.one_of(st.none(), validator_set),
)
leaf_proof = st.builds(
    LeafProof,
    st.binary(max_size=30),
    st.binary(max_size=30),
    u64,
    u64,
    st.lists(hash32, max_size=4).map(tuple),
)

ALL = {
    "Transfer": transfer,
    "Bond": bond,
    "Unbond": unbond,
    "Unjail": unjail,
    "Tx": tx,
    "TxBatch": st.builds(
        TxBatch, st.lists(st.binary(min_size=1, max_size=40), min_size=1, max_size=4).map(tuple)
    ),
    "Vote": vote,
    "Proposal": proposal(),
    "CommitSig": commit_sig,
    "Commit": commit,
    "DuplicateVoteEvidence": duplicate_vote(),
    "Validator": validator,
    "ValidatorSet": validator_set,
    "Header": header,
    "Block": block,
    "ConsensusParams": params,
    "BlockParams": block_params,
    "EvidenceParams": st.builds(EvidenceParams, st.integers(1, 10**9), st.integers(0, 10**9)),
    "ValidatorParams": st.just(ValidatorParams()),
    "StakingParams": st.builds(
        StakingParams, st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 10**6)
    ),
    "GenesisValidator": genesis_validator,
    "GenesisAccount": genesis_account,
    "Genesis": genesis,
    "Account": st.builds(Account, u64, u64),
    "ValidatorRecord": st.builds(ValidatorRecord, pubkey, address, u64, st.booleans(), u64, text),
    "Delegation": st.builds(Delegation, u64),
    "UnbondingEntry": st.builds(UnbondingEntry, u64, u64),
    "SlashRecord": st.builds(SlashRecord, u64, u64),
    "Event": event,
    "TxResult": tx_result,
    "BlockResults": block_results,
    "ChainMeta": st.builds(
        ChainMeta, chain_ids, heights, u64, st.one_of(st.just(b""), hash32), u64, hash32, hash32
    ),
    "StagedBlock": st.builds(StagedBlock, block, commit),
    "LeafProof": leaf_proof,
    "QueryResult": st.builds(
        QueryResult,
        st.binary(max_size=30),
        st.one_of(st.none(), st.binary(max_size=30)),
        u64,
        st.lists(leaf_proof, max_size=2).map(tuple),
    ),
    "DemoPol": pol.filter(lambda p: p is not None),
    "Note": note,
}

keys = st.integers(0, 2**32).map(PrivateKey.from_seed_int)
