"""Localnet's process supervision: a node that exits on its own fails the wait at once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cli.localnet import Localnet, LocalnetConfig, RPCFailure


def test_a_node_that_exited_on_its_own_fails_the_wait_naming_it(tmp_path: Path) -> None:
    # Prepare: a two-node net whose trainer "process" exits with code 3 after a log line, as a
    # node does whose RPC port was taken between choosing and binding it
    net = Localnet(tmp_path, LocalnetConfig(validators=1, trainers=1))
    (net.nodes[1].home.root / "node.log").write_text("OSError: [Errno 98] Address already in use\n")
    net.procs[1] = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    net.procs[1].wait(timeout=30)

    # Execute / Assert: the wait fails on its first poll, not at its timeout
    with pytest.raises(RPCFailure, match=r"node1 exited with code 3: OSError: \[Errno 98\]"):
        net.wait(lambda: False, 3600, "a round that can never close")

    # a node stopped on purpose is forgotten, so it does not count as a failure
    net.stop(1)
    assert net.wait(lambda: True, 1, "anything")
