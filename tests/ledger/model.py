"""The in-memory model of the seeded chain that the store campaigns compare against."""

from __future__ import annotations

from dataclasses import dataclass, field

from ledger.app import make_application
from ledger.block import Block
from ledger.chainstate import ChainState
from ledger.genesis import genesis_state
from ledger.results import BlockResults
from ledger.store import ChainStore
from ledger.testing import ChainBuilder
from ledger.votes import Commit
from tests.ledger.chaingen import chain_testnet, commit_for, next_block


@dataclass
class ChainModel:
    seed: int
    states: list[ChainState] = field(default_factory=list)  # states[h] = state after height h
    blocks: dict[int, tuple[Block, Commit, BlockResults]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.net = chain_testnet()
        self.builder = ChainBuilder(self.net, app=make_application())
        self.states.append(genesis_state(self.net.genesis))

    def state(self, height: int) -> ChainState:
        while len(self.states) <= height:
            st = self.builder.state
            block = next_block(self.seed, st, self.builder.last_commit, self.net)
            cb = self.builder.add(block, commit_for(st, block, self.net.validator_keys))
            self.blocks[block.height] = (cb.block, cb.commit, cb.results)
            self.states.append(cb.state)
        return self.states[height]

    def block(self, height: int) -> Block:
        self.state(height)
        return self.blocks[height][0]

    def assert_store_at(self, store: ChainStore, height: int) -> None:
        """The store holds exactly heights 1..height of this chain, and that state."""
        assert store.height == height, (store.height, height)
        assert store.state == self.state(height)
        for h in range(1, height + 1):
            block, commit, results = self.blocks[h]
            assert store.block(h) == block
            assert store.block_by_hash(block.id) == block
            assert store.seen_commit(h) == commit
            assert store.block_results(h) == results
            if h < height:
                assert store.commit(h) == self.blocks[h + 1][0].last_commit
            for i, tx in enumerate(block.txs):
                rec = store.tx(tx.hash)
                assert rec is not None and rec.height <= h and rec.tx == tx
                if rec.height == h:
                    assert rec.index == i and rec.result == results.tx_results[i]
                if results.tx_results[i].ok:
                    assert rec.height == h
        assert store.block(height + 1) is None
        assert store.validators_at(height + 2) == self.state(height).next_validators
