"""A deterministic pseudo-random chain: the same (seed, height, state) always gives the same block.

Shared by the cross-process determinism test, the store crash campaign (its
worker processes and the in-test model) and the benchmarks' sanity runs.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from ledger.block import Block
from ledger.chainstate import ChainState
from ledger.crypto import PrivateKey
from ledger.schema import get_account
from ledger.testing import TEST_GENESIS_TIME, TestNet, make_block, make_testnet, sign_commit
from ledger.tx import Bond, Transfer, Tx, TxBody, Unbond, sign_tx
from ledger.votes import Commit

N_VALIDATORS = 4
N_ACCOUNTS = 6


def chain_testnet() -> TestNet:
    return make_testnet(N_VALIDATORS, N_ACCOUNTS, power=100, balance=10_000)


def random_txs(rng: random.Random, state: ChainState, net: TestNet, n: int) -> list[Tx]:
    """A mix of valid and failing transfers, bonds and unbonds, with correct nonces."""
    nonces = {k.address: get_account(state.app, k.address).nonce for k in net.account_keys}
    txs = []
    for _ in range(n):
        key: PrivateKey = rng.choice(net.account_keys)
        roll = rng.random()
        body: TxBody
        if roll < 0.6:
            to = rng.choice(net.account_keys).address
            body = Transfer(to, rng.randint(1, 4000))  # some overspend
        elif roll < 0.8:
            body = Bond(rng.choice(net.validator_keys).public_key, rng.randint(1, 500))
        else:
            body = Unbond(rng.choice(net.validator_keys).public_key, rng.randint(1, 150))
        nonce = nonces[key.address]
        if rng.random() < 0.05:
            nonce += rng.choice([-1, 1])  # replay or gap
        if nonce < 0:
            nonce = 0
        txs.append(sign_tx(key, state.chain_id, body, nonce))
        nonces[key.address] = max(nonces[key.address], nonce + 1)
    return txs


def next_block(seed: int, state: ChainState, last_commit: Commit | None, net: TestNet) -> Block:
    h = state.height
    rng = random.Random(seed * 1_000_003 + h)
    txs = random_txs(rng, state, net, rng.randint(0, 8))
    return make_block(state, txs, last_commit=last_commit, time=TEST_GENESIS_TIME + 1000 * h)


def commit_for(state: ChainState, block: Block, keys: Sequence[PrivateKey]) -> Commit:
    return sign_commit(
        state.chain_id,
        state.validators,
        keys,
        block.height,
        block.id,
        timestamp=block.header.time + 1,
    )
