"""Consensus with real processes: 4 validators running `fedledger node run` on loopback."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.consensus.testnet_helpers import Testnet, assert_height_stays
from tests.node.node_helpers import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("testnet")]


def same_chain(tn: Testnet, nodes: list[int], lo: int, hi: int) -> None:
    for h in range(lo, hi + 1):
        hashes = {tn.block_hash(i, h) for i in nodes}
        assert len(hashes) == 1 and None not in hashes, f"height {h}: {hashes}"


def test_commit_crash_catch_up_halt_resume(tmp_path: Path) -> None:
    tn = Testnet(tmp_path, 4)
    try:
        tn.start_all()
        # 30 blocks with identical hashes on every node
        for i in range(4):
            tn.wait_height(i, 30, timeout=120)
        same_chain(tn, [0, 1, 2, 3], 1, 30)

        # kill -9 one validator: the other three keep committing
        tn.kill(3)
        h = max(tn.height(i) for i in range(3))
        for i in range(3):
            tn.wait_height(i, h + 5, timeout=60)

        # restarted, it catches up through block sync within 20 s
        target = max(tn.height(i) for i in range(3))
        t0 = time.monotonic()
        tn.start(3)
        tn.wait_height(3, target, timeout=20)
        assert time.monotonic() - t0 < 20
        assert "block sync: caught up" in tn.log(3) or tn.height(3) >= target
        same_chain(tn, [0, 1, 2, 3], 1, target)

        # stop two of four: no block commits (halt, no fork)
        assert tn.stop(2) == 0 and tn.stop(3) == 0
        wait_for(lambda: tn.height(0) == tn.height(1), 20, "the two to agree")
        halted = assert_height_stays(tn, [0, 1], 6.0)

        # restart them: commits resume
        tn.start(2)
        tn.start(3)
        for i in range(4):
            tn.wait_height(i, halted + 3, timeout=60)
        top = min(tn.height(i) for i in range(4))
        same_chain(tn, [0, 1, 2, 3], 1, top)
        for i in range(4):
            assert "Traceback" not in tn.log(i)
    finally:
        tn.close()


def test_equivocating_validator_is_slashed_and_jailed(tmp_path: Path) -> None:
    tn = Testnet(tmp_path, 4, per_node={3: {"byzantine_mode": "equivocate"}})
    byz = tn.nodes[3]
    try:
        tn.start_all()

        def slashed() -> bool:
            # the byzantine validator leaves the set once its evidence is committed
            vals = tn.rpc(0, "validators")
            if vals is None:
                return False
            powers = {v["address"]: v["voting_power"] for v in vals["validators"]}
            return powers.get(_addr(byz)) is None

        wait_for(slashed, 90, "the equivocator to be jailed")
        top = tn.height(0)
        ev = tn.evidence_in(0, 1, top)
        assert ev, "no evidence was committed"
        assert all(e["value"]["vote_a"]["validator_address"].upper() == _addr(byz) for e in ev)
        acct = tn.rpc(0, "abci_query", {"path": f"/validator/{_addr(byz)}"})
        assert acct is not None and "jailed" in str(acct).lower()
        # the three honest validators keep committing without it
        tn.wait_height(0, top + 3, timeout=60)
    finally:
        tn.close()


def _addr(node) -> str:  # type: ignore[no-untyped-def]
    return node.home.load_validator_key().address.hex().upper()
