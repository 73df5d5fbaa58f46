"""Start-up repair of a half-finished height: re-execute a staged block and save it."""

from __future__ import annotations

from ledger.app import Application
from ledger.errors import InvalidBlockError, StoreError
from ledger.failpoint import failpoint
from ledger.store import ChainStore


def recover(store: ChainStore, app: Application) -> int | None:
    """Complete the height a crash interrupted; returns that height, or None if none was.

    A staged block for the next height was decided by consensus (it carries
    its commit) but its state was never saved: execution is deterministic, so
    running it again yields exactly the state the crashed process would have
    written. A staged block at or below the saved height is stale and dropped.
    """
    staged = store.pending_block()
    if staged is None:
        return None
    h = staged.block.height
    if h <= store.height:
        store.drop_pending()
        return None
    if h != store.height + 1:
        raise StoreError(f"staged block {h} does not follow the saved height {store.height}")
    failpoint("recovery.before_apply")
    try:
        new_state, results = app.apply_block(store.state, staged.block, history=store)
    except InvalidBlockError as e:
        raise StoreError(f"staged block {h} no longer applies: {e}") from e
    store.save_block(staged.block, staged.commit, new_state, results)
    return h
