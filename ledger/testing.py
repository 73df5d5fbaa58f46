"""Test support: deterministic keys, a test genesis, signed blocks with real commits.

Used by the ledger, consensus and node tests (and benchmarks) to drive the
application and the stores without a consensus engine. Keys come from
:meth:`PrivateKey.from_seed_int` and are for tests only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ledger.app import Application, make_application
from ledger.block import Block, PolSection
from ledger.blockbuilder import build_block
from ledger.chainstate import ChainState
from ledger.crypto import PrivateKey
from ledger.evidence import DuplicateVoteEvidence, Evidence
from ledger.genesis import Genesis, GenesisAccount, GenesisValidator, genesis_state, make_genesis
from ledger.params import ConsensusParams
from ledger.results import BlockResults
from ledger.tx import Bond, Transfer, Tx, TxBody, Unbond, Unjail, sign_tx
from ledger.validators import ValidatorSet
from ledger.votes import Commit, CommitSig, Vote, VoteType, sign_vote

TEST_CHAIN_ID = "fedledger-test"
TEST_GENESIS_TIME = 1_790_000_000_000  # 2026-09-21, unix ms
BLOCK_INTERVAL_MS = 1000


def validator_key(i: int) -> PrivateKey:
    """The i-th test consensus key."""
    return PrivateKey.from_seed_int(1_000_000 + i)


def account_key(i: int) -> PrivateKey:
    """The i-th test account key."""
    return PrivateKey.from_seed_int(i)


@dataclass
class TestNet:
    __test__ = False  # not a pytest test class

    genesis: Genesis
    validator_keys: list[PrivateKey]
    account_keys: list[PrivateKey]

    @property
    def chain_id(self) -> str:
        return self.genesis.chain_id

    def keys_by_address(self) -> dict[bytes, PrivateKey]:
        return {k.address: k for k in self.validator_keys}


def make_testnet(
    n_validators: int = 4,
    n_accounts: int = 4,
    *,
    power: int = 100,
    balance: int = 1_000_000_000,
    chain_id: str = TEST_CHAIN_ID,
    params: ConsensusParams | None = None,
    genesis_time: int = TEST_GENESIS_TIME,
    initial_height: int = 1,
) -> TestNet:
    """Validator i is operated by account ``i % n_accounts``; every account is funded."""
    vkeys = [validator_key(i) for i in range(n_validators)]
    akeys = [account_key(i) for i in range(n_accounts)]
    vals = [
        GenesisValidator(k.public_key, power, f"node{i}", akeys[i % n_accounts].address)
        for i, k in enumerate(vkeys)
    ]
    accts = [GenesisAccount(k.address, balance) for k in akeys]
    g = make_genesis(chain_id, vals, accts, genesis_time, params, initial_height)
    return TestNet(g, vkeys, akeys)


# ---------------------------------------------------------------- transactions


@dataclass
class Wallet:
    """An account key that tracks its next nonce."""

    key: PrivateKey
    chain_id: str = TEST_CHAIN_ID
    nonce: int = 0

    @property
    def address(self) -> bytes:
        return self.key.address

    def sign(self, body: TxBody) -> Tx:
        tx = sign_tx(self.key, self.chain_id, body, self.nonce)
        self.nonce += 1
        return tx

    def transfer(self, to: bytes, amount: int) -> Tx:
        return self.sign(Transfer(to, amount))

    def bond(self, validator_pubkey: bytes, amount: int) -> Tx:
        return self.sign(Bond(validator_pubkey, amount))

    def unbond(self, validator_pubkey: bytes, amount: int) -> Tx:
        return self.sign(Unbond(validator_pubkey, amount))

    def unjail(self, validator_pubkey: bytes) -> Tx:
        return self.sign(Unjail(validator_pubkey))


# ---------------------------------------------------------------- blocks and commits


def make_block(
    state: ChainState,
    txs: Sequence[Tx] = (),
    *,
    last_commit: Commit | None = None,
    evidence: Sequence[Evidence] = (),
    time: int | None = None,
    proposer: bytes | None = None,
    pol: PolSection | None = None,
) -> Block:
    """A block that follows ``state``, with every header field filled in correctly."""
    height = state.height
    if time is None:
        time = state.last_block_time + BLOCK_INTERVAL_MS
    if proposer is None:
        vals = state.validators.validators
        proposer = vals[height % len(vals)].address
    return build_block(state, txs, last_commit=last_commit, evidence=evidence, time=time,
                       proposer=proposer, pol=pol)


def precommit(
    chain_id: str,
    key: PrivateKey,
    validator_set: ValidatorSet,
    height: int,
    block_id: bytes | None,
    *,
    round_: int = 0,
    timestamp: int = TEST_GENESIS_TIME,
    type_: int = VoteType.PRECOMMIT,
) -> Vote:
    index = validator_set.index_of(key.address)
    if index is None:
        raise ValueError("key is not in the validator set")
    vote = Vote(type_, height, round_, block_id, timestamp, key.address, index, b"")
    return sign_vote(key, chain_id, vote)


def sign_commit(
    chain_id: str,
    validator_set: ValidatorSet,
    keys: Iterable[PrivateKey],
    height: int,
    block_id: bytes,
    *,
    round_: int = 0,
    timestamp: int = TEST_GENESIS_TIME,
    nil: Iterable[bytes] = (),
) -> Commit:
    """A commit signed by ``keys`` (validators in ``nil`` precommit nil; the others are absent)."""
    nil_set = set(nil)
    slots = [CommitSig.absent()] * len(validator_set)
    for key in keys:
        i = validator_set.index_of(key.address)
        if i is None:
            continue
        bid = None if key.address in nil_set else block_id
        vote = precommit(
            chain_id, key, validator_set, height, bid, round_=round_, timestamp=timestamp
        )
        slots[i] = CommitSig.from_vote(vote)
    return Commit(height, round_, block_id, tuple(slots))


def duplicate_vote_evidence(
    chain_id: str, key: PrivateKey, validator_set: ValidatorSet, height: int, round_: int = 0
) -> DuplicateVoteEvidence:
    """Two conflicting precommits of ``key`` at (height, round)."""
    a = precommit(chain_id, key, validator_set, height, b"\x0a" * 32, round_=round_)
    b = precommit(chain_id, key, validator_set, height, b"\x0b" * 32, round_=round_)
    return DuplicateVoteEvidence.from_votes(a, b)


@dataclass(frozen=True)
class CommittedBlock:
    block: Block
    commit: Commit
    state: ChainState  # the state after the block
    results: BlockResults


@dataclass
class ChainBuilder:
    """Produces a valid chain: each block carries the real commit of the previous one."""

    net: TestNet
    app: Application = field(default_factory=make_application)
    state: ChainState = field(init=False)
    last_commit: Commit | None = field(init=False, default=None)
    blocks: list[CommittedBlock] = field(init=False, default_factory=list)
    _vsets: dict[int, ValidatorSet] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.state = genesis_state(self.net.genesis)
        self._vsets[self.state.height] = self.state.validators
        self._vsets[self.state.height + 1] = self.state.next_validators

    def validators_at(self, height: int) -> ValidatorSet | None:
        """The set that signs ``height`` (the builder is the ``ValidatorHistory`` of its chain)."""
        return self._vsets.get(height)

    def propose(
        self,
        txs: Sequence[Tx] = (),
        *,
        evidence: Sequence[Evidence] = (),
        time: int | None = None,
        pol: PolSection | None = None,
    ) -> Block:
        return make_block(
            self.state, txs, last_commit=self.last_commit, evidence=evidence, time=time, pol=pol
        )

    def commit_for(self, block: Block, signers: Iterable[PrivateKey] | None = None) -> Commit:
        keys = self.net.keys_by_address()
        if signers is None:
            signers = [
                keys[v.address] for v in self.state.validators.validators if v.address in keys
            ]
        return sign_commit(
            self.state.chain_id,
            self.state.validators,
            signers,
            block.height,
            block.id,
            timestamp=block.header.time + 1,
        )

    def add(self, block: Block, commit: Commit | None = None) -> CommittedBlock:
        """Apply ``block`` (raises InvalidBlockError if it is not valid) and record it."""
        commit = commit or self.commit_for(block)
        new_state, results = self.app.apply_block(self.state, block, history=self)
        self._vsets[new_state.height + 1] = new_state.next_validators
        cb = CommittedBlock(block, commit, new_state, results)
        self.state, self.last_commit = new_state, commit
        self.blocks.append(cb)
        return cb

    def advance(self, txs: Sequence[Tx] = (), **kw: object) -> CommittedBlock:
        """Propose, commit and apply the next block."""
        return self.add(self.propose(txs, **kw))  # type: ignore[arg-type]
