"""`fedledger demo`, the README's main command, as a user runs it: a separate OS process."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.node.node_helpers import FEDLEDGER

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("testnet")]


def test_he_demo_follows_each_round_until_its_decrypted_model(tmp_path: Path) -> None:
    """Under HE a round closes a block or more before the key holder commits its model; the
    live table used to ask for that model at once and stopped the demo with 'Not found'."""
    out = tmp_path / "out"
    proc = subprocess.run(
        [*FEDLEDGER, "demo", "--privacy", "he", "--rounds", "2", "--trainers", "3",
         "--output", str(out), "--workdir", str(tmp_path / "homes"), "--timeout", "420"],
        capture_output=True, text=True, timeout=540,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["privacy"] == "he" and summary["rule"] == "fedavg"
    assert [r["round"] for r in summary["rounds"]] == [1, 2]
    assert all(r["accepted"] == 3 for r in summary["rounds"])
    assert summary["final_accuracy"] > 0.5  # digits MLP after 2 rounds (chance: 0.1)
    assert len(summary["inference"]["predictions"]) == 8
    assert (out / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_with_an_attacker_finishes_after_jailing_it(tmp_path: Path) -> None:
    """The contract jails an attacker after its second rejection; a quorum of every trainer
    then never forms, and the demo's third round used to wait for ever (its deadline kept
    moving). The demo's task closes rounds at the deadline on the honest trainers' updates."""
    out = tmp_path / "out"
    proc = subprocess.run(
        [*FEDLEDGER, "demo", "--malicious", "0.25", "--attack", "sign_flip", "--rounds", "3",
         "--trainers", "4", "--output", str(out), "--workdir", str(tmp_path / "homes"),
         "--timeout", "420"],
        capture_output=True, text=True, timeout=540,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rounds = json.loads((out / "summary.json").read_text())["rounds"]
    assert [r["round"] for r in rounds] == [1, 2, 3]
    assert [r["accepted"] for r in rounds] == [3, 3, 3]
