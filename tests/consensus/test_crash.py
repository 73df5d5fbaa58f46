"""Crash safety: a validator killed at every WAL, privval and store write point restarts,
never double-signs, and ends with the same chain and app hash as its peers.

Each fail point (``FEDLEDGER_FAILPOINT=name@n``) makes the node process exit on the spot
(``os._exit``: no cleanup, no flush), the way a power cut or ``kill -9`` would.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger.failpoint import EXIT_CODE
from tests.consensus.testnet_helpers import Testnet
from tests.node.node_helpers import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("testnet")]

# (fail point, which hit): every place the node writes consensus-critical state
POINTS = [
    ("wal.before_write", 3),
    ("wal.after_write", 3),
    ("privval.vote.before_save", 3),
    ("privval.proposal.before_save", 1),
    ("consensus.before_commit", 2),
    ("store.stage.before", 2),
    ("store.stage.after", 2),
    ("store.save.before_batch", 2),
    ("store.save.in_batch", 2),
    ("store.save.after_batch", 2),
    ("consensus.after_commit", 2),
    # crash again while repairing the half-finished height of the previous crash
    ("store.save.before_batch,recovery.before_apply", 1),
]


def test_crash_at_every_write_point(tmp_path: Path) -> None:
    tn = Testnet(tmp_path, 4)
    try:
        tn.start_all()
        for i in range(4):
            tn.wait_height(i, 3, timeout=60)
        tn.stop(0)
        for point, nth in POINTS:
            spec = ",".join(f"{p}@{nth}" for p in point.split(","))
            tn.start(0, env={"FEDLEDGER_FAILPOINT": spec})
            rc = tn.wait_exit(0, timeout=90)
            assert rc == EXIT_CODE, f"{point}: exit code {rc}\n{tn.log(0)[-3000:]}"
            if "recovery.before_apply" in point:
                # the restart hits the repair path and crashes inside it once more
                tn.start(0, env={"FEDLEDGER_FAILPOINT": "recovery.before_apply@1"})
                assert tn.wait_exit(0, timeout=60) in (EXIT_CODE, 0)
            tn.start(0)  # clean restart: must catch up and keep signing correctly
            target = max(tn.height(i) for i in (1, 2, 3))
            tn.wait_height(0, target + 1, timeout=60)
            tn.stop(0)
        tn.start(0)
        top = min(tn.height(i) for i in range(4))
        tn.wait_height(0, top + 2, timeout=60)
        top = min(tn.height(i) for i in range(4)) - 1
        # one chain, one app hash, and no double-sign evidence anywhere
        for h in range(1, top + 1):
            assert len({tn.block_hash(i, h) for i in range(4)}) == 1, f"fork at {h}"
        assert len({tn.app_hash_after(i, top - 1) for i in range(4)}) == 1
        assert tn.evidence_in(1, 1, top) == []
        wait_for(lambda: "Traceback" not in tn.log(0), 1, "no traceback")
    finally:
        tn.close()
