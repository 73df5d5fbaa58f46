"""Run as a script: extend the seeded chain in a chain store up to a target height.

``python -m tests.ledger.store_worker DB_PATH SEED TARGET``. It opens the
store, completes a half-finished height (ledger.recovery), then for each new
height stages the block and saves it, exactly as a node does. Tests set
``FEDLEDGER_FAILPOINT`` to crash it at a chosen write.
"""

from __future__ import annotations

import sys

from ledger.app import make_application
from ledger.genesis import genesis_state
from ledger.recovery import recover
from ledger.store import ChainStore
from tests.ledger.chaingen import chain_testnet, commit_for, next_block


def main(path: str, seed: int, target: int) -> None:
    net = chain_testnet()
    app = make_application()
    store = ChainStore.open(path)
    if not store.is_initialized:
        store.init_genesis(genesis_state(net.genesis))
    recover(store, app)
    while store.height < target:
        state = store.state
        last_commit = store.seen_commit(state.last_block_height)
        block = next_block(seed, state, last_commit, net)
        commit = commit_for(state, block, net.validator_keys)
        store.stage_block(block, commit)
        new_state, results = app.apply_block(state, block, history=store)
        store.save_block(block, commit, new_state, results)
    store.close()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
