"""Acceptance 2: crashes between the store's writes, in real subprocesses, against a model.

A worker process (tests/ledger/store_worker.py) extends a seeded chain in
the store the way a node does (recover, then stage + execute + save per
height) and is killed by a fail point at a chosen write. The model replays
the same fail-point sequence to know the last complete height and whether a
staged block was left behind; the reopened store must equal the model
exactly. A second campaign cuts LevelDB's log at arbitrary bytes (a torn
write) and checks the store opens at some complete height.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from ledger.app import make_application
from ledger.failpoint import ENV, EXIT_CODE
from ledger.recovery import recover
from ledger.store import ChainStore
from tests.ledger.model import ChainModel

ROOT = Path(__file__).resolve().parents[2]
SEED = 2026
POINTS = [
    "store.stage.before",
    "store.stage.after",
    "store.save.before_batch",
    "store.save.in_batch",
    "store.save.after_batch",
    "recovery.before_apply",
]


def run_worker(path: Path, target: int, failpoint: str | None) -> int:
    env = dict(os.environ)
    env.pop(ENV, None)
    if failpoint:
        env[ENV] = failpoint
    proc = subprocess.run(
        [sys.executable, "-m", "tests.ledger.store_worker", str(path), str(SEED), str(target)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode not in (0, EXIT_CODE):
        raise AssertionError(f"worker failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc.returncode


def simulate(
    height: int, pending: bool, target: int, point: str | None, nth: int
) -> tuple[int, bool, bool]:
    """What the worker leaves behind: (saved height, staged block left, crashed)."""
    hits: Counter[str] = Counter()

    def hit(name: str) -> bool:
        hits[name] += 1
        return name == point and hits[name] == nth

    def save() -> bool:
        nonlocal height, pending
        if hit("store.save.before_batch") or hit("store.save.in_batch"):
            return True
        height, pending = height + 1, False
        return hit("store.save.after_batch")

    if pending:
        if hit("recovery.before_apply") or save():
            return height, pending, True
    while height < target:
        if hit("store.stage.before"):
            return height, pending, True
        pending = True
        if hit("store.stage.after") or save():
            return height, pending, True
    return height, pending, False


MODEL = ChainModel(seed=SEED)  # shared: the chain is the same for every example


class StoreCrashMachine(RuleBasedStateMachine):
    @initialize()
    def setup(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="fedledger-crash-"))
        self.path = self.dir / "chain.db"
        assert run_worker(self.path, 0, None) == 0  # genesis
        self.height = 0
        self.pending = False

    @rule(
        blocks=st.integers(1, 3),
        point=st.one_of(st.none(), st.sampled_from(POINTS)),
        nth=st.integers(1, 3),
    )
    def run_and_maybe_crash(self, blocks: int, point: str | None, nth: int) -> None:
        target = self.height + blocks
        spec = f"{point}@{nth}" if point else None
        rc = run_worker(self.path, target, spec)
        self.height, self.pending, crashed = simulate(self.height, self.pending, target, point, nth)
        assert rc == (EXIT_CODE if crashed else 0)

    @rule()
    def recover_in_this_process(self) -> None:
        with ChainStore.open(self.path) as store:
            done = recover(store, make_application())
        assert done == (self.height + 1 if self.pending else None)
        if self.pending:
            self.height, self.pending = self.height + 1, False

    @invariant()
    def store_equals_model(self) -> None:
        if not hasattr(self, "path"):
            return
        with ChainStore.open(self.path) as store:
            MODEL.assert_store_at(store, self.height)
            staged = store.pending_block()
            assert (staged is not None) == self.pending
            if staged is not None:
                assert staged.block == MODEL.block(self.height + 1)

    def teardown(self) -> None:
        if hasattr(self, "dir"):
            shutil.rmtree(self.dir, ignore_errors=True)


TestStoreCrashes = StoreCrashMachine.TestCase
TestStoreCrashes.settings = settings(
    max_examples=6,
    stateful_step_count=5,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@pytest.mark.slow
def test_store_crash_campaign_long() -> None:
    from hypothesis.stateful import run_state_machine_as_test

    run_state_machine_as_test(
        StoreCrashMachine,
        settings=settings(max_examples=60, stateful_step_count=10, deadline=None),
    )


@pytest.mark.parametrize(
    "height, pending, point, nth, expect",
    [
        (0, False, None, 1, (3, False, False)),
        (0, False, "store.stage.before", 1, (0, False, True)),
        (0, False, "store.stage.after", 2, (1, True, True)),
        (0, False, "store.save.in_batch", 1, (0, True, True)),
        (0, False, "store.save.after_batch", 3, (3, False, True)),
        (2, True, "recovery.before_apply", 1, (2, True, True)),
        (2, True, "store.save.after_batch", 1, (3, False, True)),
        (2, True, "store.stage.before", 1, (3, False, False)),  # recovery reached the target
    ],
)
def test_simulation_table(
    height: int, pending: bool, point: str | None, nth: int, expect: tuple[int, bool, bool]
) -> None:
    assert simulate(height, pending, 3, point, nth) == expect


# ---------------------------------------------------------------- torn log


@pytest.fixture(scope="module")
def crashed_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """A store whose worker died (no close) right after saving height 6: all in the log."""
    path = tmp_path_factory.mktemp("torn") / "chain.db"
    assert run_worker(path, 0, None) == 0
    assert run_worker(path, 6, "store.save.after_batch@6") == EXIT_CODE
    return path, 6


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(cut=st.floats(0.0, 1.0))
def test_torn_log_tail_opens_at_a_complete_height(
    crashed_store: tuple[Path, int], cut: float, tmp_path_factory: pytest.TempPathFactory
) -> None:
    src, top = crashed_store
    dst = tmp_path_factory.mktemp("copy") / "chain.db"
    shutil.copytree(src, dst)
    logs = sorted(dst.glob("*.log"), key=lambda p: p.stat().st_size)
    log = logs[-1]
    size = log.stat().st_size
    with open(log, "r+b") as f:
        f.truncate(int(size * cut))
    try:
        store = ChainStore.open(dst)
    except Exception as e:  # pragma: no cover - the property under test
        raise AssertionError(f"torn log at {int(size * cut)}/{size} broke the store: {e!r}") from e
    with store:
        if store.is_initialized:
            assert 0 <= store.height <= top
            MODEL.assert_store_at(store, store.height)
