"""Run as a script: print the app hash after each of N blocks of the seeded chain (one per line).

``python -m tests.ledger.chain_hashes SEED N``; used to show that separate
processes (different hash seeds) compute identical app hashes.
"""

from __future__ import annotations

import sys

from ledger.app import make_application
from ledger.genesis import genesis_state
from tests.ledger.chaingen import chain_testnet, commit_for, next_block


def main(seed: int, n: int) -> None:
    net = chain_testnet()
    app = make_application()
    state = genesis_state(net.genesis)
    last_commit = None
    for _ in range(n):
        block = next_block(seed, state, last_commit, net)
        commit = commit_for(state, block, net.validator_keys)
        state, results = app.apply_block(state, block)
        last_commit = commit
        print(
            state.last_block_height,
            state.app_hash.hex(),
            state.last_results_hash.hex(),
            block.id.hex(),
        )


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
