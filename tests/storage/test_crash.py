"""Crash safety: a process killed at any fail point (or at a random moment) never leaves a
manifest whose chunks are missing, never loses pinned content, and GC cleans up the rest."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from storage.failpoints import ENV_VAR, POINTS, failpoint
from storage.store import ContentStore

CHILD = Path(__file__).with_name("crash_child.py")
CS = 64 * 1024


def blob(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CHILD), *args], capture_output=True, text=True, timeout=60
    )


def check_consistent(path: Path, *, corrupt_unpinned: int = 0) -> ContentStore:
    s = ContentStore(path, chunk_size=CS)
    report = s.verify_integrity(deep=True)
    assert not report.meta_errors and not report.dangling_pins, report
    # the only incomplete manifests allowed are those whose chunk was found corrupt now
    assert len(report.corrupt) == corrupt_unpinned, report
    assert len(report.incomplete_manifests) == corrupt_unpinned, report
    for pin in s.pins():
        assert s.has(pin.cid), f"pinned {pin.cid} ({pin.reason}) incomplete"
    return s


def test_failpoint_is_a_no_op_unless_armed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    failpoint("content.put.after_chunks")  # still alive
    monkeypatch.setenv(ENV_VAR, "some.other.point")
    failpoint("content.put.after_chunks")


@pytest.mark.parametrize("point", POINTS)
def test_kill_at_failpoint_leaves_store_consistent(tmp_path: Path, point: str) -> None:
    path = tmp_path / "s"
    assert _run(str(path), "setup").returncode == 0
    proc = _run(str(path), point)
    assert proc.returncode == -signal.SIGKILL, f"fail point not reached: {proc.stderr[-2000:]}"
    # the quarantine point dies before quarantining: the deep check finds B's bad chunk
    corrupt = 1 if point == "content.quarantine.before_batch" else 0
    with check_consistent(path, corrupt_unpinned=corrupt) as s:
        a = s.put_bytes(blob(3 * CS, 1))  # A's CID (already there, pinned)
        assert s.is_pinned(a) and s.get_bytes(a) == blob(3 * CS, 1)
        new = s.pins()
        if point == "content.put.after_manifest":
            assert any(p.reason == "new" for p in new)  # committed before the kill
        elif point.startswith("content.put."):
            assert not any(p.reason == "new" for p in new)  # never half-visible
        s.gc()
        assert s.verify_integrity(deep=True).ok
        assert s.get_bytes(a) == blob(3 * CS, 1)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kill_at_random_moment_leaves_store_consistent(tmp_path: Path, seed: int) -> None:
    path = tmp_path / "s"
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), str(path), "random-ops", str(seed)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    stop_after = random.Random(seed).randrange(5, 40)
    seen = 0
    for line in proc.stdout:
        if line.startswith("op "):
            seen += 1
            if seen >= stop_after:
                break
    proc.send_signal(signal.SIGKILL)  # lands somewhere inside the next operation
    proc.wait(timeout=30)
    assert seen == stop_after
    with check_consistent(path) as s:
        s.gc()
        assert s.verify_integrity(deep=True).ok
