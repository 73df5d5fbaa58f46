"""`fedledger task create|list|status`, `model get`, `infer` and `train`.

The FL commands run in-process (typer's CliRunner, in a worker thread) against an in-process
node over real HTTP whose blocks the test commits (``ChainBuilder`` with the FL section of
``ledger.fl.testing.build_section``): what the CLI signs, stores and reads is real, the
training is not. `train` runs as an OS process on a one-validator home, as an operator runs it.
"""

from __future__ import annotations

import json
import re
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import structlog
import trio
from typer.testing import CliRunner

from cli.main import app
from cli.task import _save_trainer, parse_model_config, parse_partition, trainer_section
from cli.taskspec import TaskOptions, initial_model_bytes
from ledger.fl.testing import build_section, submit_body
from ledger.fl.txs import Join
from node.config import TrainerConfig, load_config, save_config
from node.keys import load_account_key, save_account_key
from node.ports import free_port_block
from storage.cid import parse_cid
from tests.node.node_helpers import NodeProcess, make_home, try_rpc, wait_for
from tests.node.test_rpc_ledger import Chain, running_chain

runner = CliRunner()


@pytest.fixture(autouse=True)
def wide_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rich sizes tables to the terminal; CI's 80 columns would elide the cells the tests read."""
    from cli import common

    monkeypatch.setattr(common.console, "width", 200)


@pytest.fixture(autouse=True)
def node_logs_aside() -> Iterator[None]:
    """The in-process node logs through structlog's print logger, which writes to whatever
    ``sys.stdout`` is at the time: inside ``invoke``, the CLI's captured output. Pin it to the
    test's stderr while the test runs."""
    old = structlog.get_config()
    structlog.reset_defaults()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.stderr))
    yield
    structlog.configure(**old)


def invoke(*args: str) -> Any:
    """Run the CLI in this process; the result has exit_code, stdout and stderr."""
    return runner.invoke(app, list(args), env={"COLUMNS": "250", "NO_COLOR": "1"})


async def cli(*args: str) -> Any:
    return await trio.to_thread.run_sync(lambda: invoke(*args))


def one_line(text: str) -> str:
    return " ".join(text.split())  # rich wraps long messages


async def create_task(chain: Chain, *args: str) -> Any:
    """`task create` (waits for the block); the test commits the block meanwhile."""
    done: dict[str, Any] = {}

    async def run() -> None:
        done["r"] = await cli("task", "create", *args)

    async with trio.open_nursery() as n:
        n.start_soon(run)
        with trio.fail_after(60):
            while not done and len(chain.node.chain.mempool) == 0:
                await trio.sleep(0.02)
        if not done:
            await chain.produce()
    return done["r"]


async def test_task_create_list_status_model_and_infer(
        tmp_path: Path, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch) -> None:
    async with running_chain(tmp_path, nursery) as chain:
        home = chain.node.home.root
        rpc = chain.node.rpc_laddr
        common = ["--home", str(home), "--rpc", rpc]
        save_account_key(home, "alice", chain.net.account_keys[0])

        # Refused before anything is stored or signed.
        r = await cli("task", "create", "--name", "x", "--clients-per-round", "2",
                      "--privacy", "he", *common)
        assert r.exit_code == 2 and "--key-holder" in one_line(r.stderr)
        r = await cli("task", "create", "--name", "x", "--clients-per-round", "2",
                      "--from", "nobody", *common)
        assert r.exit_code == 1 and "no key named 'nobody'" in one_line(r.stderr)
        r = await cli("task", "create", "--name", "x", "--clients-per-round", "2",
                      "--model-config", "hidden=8", "--min-participants", "3", "--from",
                      "alice", *common)
        assert r.exit_code == 1 and "invalid task: min_participants" in one_line(r.stderr)
        wrong = tmp_path / "wrong.safetensors"
        wrong.write_bytes(initial_model_bytes(TaskOptions(model_config={"hidden": [8]})))
        r = await cli("task", "create", "--name", "x", "--clients-per-round", "2",
                      "--initial-model", str(wrong), "--from", "alice", *common)
        assert r.exit_code == 1 and "invalid task" in r.stderr and "shape" in one_line(r.stderr)
        val = tmp_path / "val.safetensors"
        r = await cli("fl", "validation-set", str(val), "--samples", "40")
        assert r.exit_code == 0 and "wrote 40 digits samples" in r.stdout
        garbage = tmp_path / "garbage.safetensors"
        garbage.write_bytes(b"\x08" + bytes(40))
        r = await cli("task", "create", "--name", "x", "--clients-per-round", "2",
                      "--validation", str(garbage), "--from", "alice", *common)
        assert r.exit_code == 1 and "invalid validation set" in r.stderr
        assert "not valid safetensors" in one_line(r.stderr)
        assert len(chain.node.chain.mempool) == 0

        r = await create_task(chain, "--name", "digits-mlp", "--dataset", "digits",
                              "--clients-per-round", "2", "--rounds", "2", "--round-blocks",
                              "20", "--epochs", "1", "--seed", "3", "--from", "alice",
                              "--validation", str(val), "--json", *common)
        assert r.exit_code == 0, r.stderr
        created = json.loads(r.stdout)
        assert created["task_id"] == 1 and created["creator"] == chain.wallet(0).address.hex()
        assert chain.node.content.store.get_bytes(parse_cid(created["validation_cid"])) \
            == val.read_bytes()
        r = await create_task(chain, "--name", "second", "--clients-per-round", "1",
                              "--model-config", "hidden=32,16", "--privacy", "dp", "--from",
                              "alice", *common)
        assert r.exit_code == 0, r.stderr
        assert "created task 2" in r.stdout and "fedavg / dp / attest" in one_line(r.stdout)

        r = await cli("task", "list", "--rpc", rpc, "--json")
        tasks = json.loads(r.stdout)["tasks"]
        assert [t["id"] for t in tasks] == [1, 2]
        t1 = tasks[0]
        assert t1["spec"]["initial_model_cid"] == created["initial_model_cid"]
        assert t1["spec"]["validation_cid"] == created["validation_cid"]
        assert tasks[1]["spec"]["validation_cid"] in ("", None)
        assert t1["spec"]["train"]["seed"] == 4 and t1["spec"]["model_id"] == "mlp"
        assert tasks[1]["spec"]["model_config"] == {"hidden": [32, 16]}
        r = await cli("task", "list", "--rpc", rpc)
        assert "digits-mlp" in r.stdout and "second" in r.stdout and "1/2" in r.stdout
        r = await cli("task", "list", "--status", "finished", "--rpc", rpc, "--json")
        assert r.exit_code == 0 and json.loads(r.stdout)["tasks"] == []

        # Two trainers join and submit; the round closes with one update rejected.
        w = [chain.wallet(i) for i in (1, 2)]
        await chain.produce([x.sign(Join(1, 100, b"")) for x in w])
        await chain.produce([x.sign(submit_body(1, 1, x.address)) for x in w])
        r = await cli("task", "status", "1", "--rpc", rpc)
        assert r.exit_code == 0, r.stderr
        assert "2 of 2" in r.stdout and "the next block closes the round" in r.stdout
        state = chain.builder.state
        section = build_section(state, state.height,
                                {1: {w[1].address: ("pol_failed: checkpoint 2", True)}})
        assert section is not None
        await chain.produce([], pol=section)

        r = await cli("task", "status", "1", "--rpc", rpc, "--json")
        st = json.loads(r.stdout)
        assert st["task"]["round"] == 2 and st["task"]["rounds_done"] == 1
        (res,) = st["results"]
        assert [a["trainer"] for a in res["accepted"]] == [w[0].address.hex()]
        assert res["rejected"][0]["reason"] == "pol_failed: checkpoint 2"
        r = await cli("task", "status", "1", "--rpc", rpc)
        text = one_line(r.stdout)
        assert "rejected: pol_failed: checkpoint 2 (slashed)" in text
        assert res["new_model_cid"] in text and "accepted" in text
        assert w[0].address.hex() in text and "0 of 2" in text
        r = await cli("task", "status", "99", "--rpc", rpc)
        assert r.exit_code == 1 and "no task 99" in r.stderr

        # The initial model, as the CLI built it (seed 3), comes back byte for byte.
        out = tmp_path / "m.safetensors"
        r = await cli("model", "get", "--task", "1", "--round", "0", "-o", str(out), "--rpc",
                      rpc, "--json")
        assert r.exit_code == 0, r.stderr
        got = json.loads(r.stdout)
        assert got["cid"] == created["initial_model_cid"] and got["bytes"] == out.stat().st_size
        assert out.read_bytes() == initial_model_bytes(TaskOptions(seed=3))
        r = await cli("model", "get", "--task", "1", "--round", "0", "-o", str(tmp_path),
                      "--rpc", rpc)
        assert r.exit_code == 0 and created["initial_model_cid"] in r.stdout
        assert (tmp_path / "task1-round0.safetensors").read_bytes() == out.read_bytes()
        # A model too large for one fl_model answer comes in chunks through content_read.
        monkeypatch.setattr("node.rpc.fl.MAX_MODEL_BYTES", 1000)
        r = await cli("model", "get", "--task", "1", "--round", "0", "-o", str(tmp_path / "big"),
                      "--rpc", rpc, "--json")
        assert r.exit_code == 0, r.stderr
        assert json.loads(r.stdout)["cid"] == created["initial_model_cid"]
        assert (tmp_path / "big").read_bytes() == out.read_bytes()
        r = await cli("model", "get", "--task", "1", "--round", "7", "-o", str(out), "--rpc", rpc)
        assert r.exit_code == 1 and "no committed model for task 1 round 7" in one_line(r.stderr)

        # Inference on the node: .npy rows, a .json sample; --record logs it on chain.
        x = np.random.default_rng(0).random((3, 1, 8, 8), dtype=np.float32)
        np.save(tmp_path / "x.npy", x)
        r = await cli("infer", "--task", "1", "--round", "0", "--input", str(tmp_path / "x.npy"),
                      "--rpc", rpc, "--json")
        assert r.exit_code == 0, r.stderr
        inf = json.loads(r.stdout)
        assert len(inf["predictions"]) == 3 and all(0 <= p < 10 for p in inf["predictions"])
        (tmp_path / "x.json").write_text(json.dumps(x[0].reshape(-1).tolist()))
        r = await cli("infer", "--task", "1", "--round", "0", "--input",
                      str(tmp_path / "x.json"), "--record", *common)
        assert r.exit_code == 0, r.stderr
        assert re.search(rf"│ +0 │ +{inf['predictions'][0]} │", r.stdout), r.stdout
        assert "InferenceRecord tx" in r.stdout and "accepted into the mempool" in r.stdout
        assert len(chain.node.chain.mempool) == 1
        (tmp_path / "bad.json").write_text(json.dumps([[1.0, 2.0]]))
        r = await cli("infer", "--task", "1", "--round", "0", "--input",
                      str(tmp_path / "bad.json"), "--rpc", rpc)
        assert r.exit_code == 1 and "expected rows of shape [64]" in one_line(r.stderr)


def test_option_parsing() -> None:
    assert parse_model_config("mlp", ["hidden=128,64", "input_dim=64"]) == {
        "hidden": [128, 64], "input_dim": 64}
    assert parse_model_config("mlp", ["hidden="]) == {"hidden": []}
    assert parse_partition("2/4") == (2, 4)
    base = TrainerConfig(dataset="mnist", data_dir="/d", tasks=["9"], threads=2)
    t = trainer_section(base, tasks=[1, 3], dataset=None, data_dir=None, device="cpu",
                        partition="1/3", account="bob", threads=None)
    assert t.enabled and t.tasks == ["1", "3"] and t.dataset == "mnist" and t.data_dir == "/d"
    assert (t.device, t.partition_index, t.partition_count, t.account, t.threads) == (
        "cpu", 1, 3, "bob", 2)
    assert not base.enabled and base.tasks == ["9"]  # a copy


def test_train_checks_the_home_and_flags_before_starting(tmp_path: Path) -> None:
    home = make_home(tmp_path / "h", moniker="carol")
    (home.root / "keyring" / "carol.json").unlink()
    r = invoke("train", "--home", str(home.root))
    assert r.exit_code == 1
    assert "no account key 'carol'" in one_line(r.stderr) and "fedledger keys add" in r.stderr
    r = invoke("train", "--home", str(home.root), "--partition", "4/4")
    assert r.exit_code == 2 and "bad --partition '4/4'" in r.stderr
    r = invoke("train", "--home", str(home.root), "--dataset", "mnist")
    assert r.exit_code == 2 and "--data-dir" in r.stderr
    r = invoke("train", "--home", str(home.root), "--device", "nope", "--account", "carol")
    assert r.exit_code == 1 and "no account key 'carol'" in one_line(r.stderr)
    assert load_config(home.config_file).trainer.enabled is False
    # --save writes the section and keeps the rest of the file.
    t = trainer_section(TrainerConfig(), tasks=[2], dataset=None, data_dir=None, device=None,
                        partition="0/2", account=None, threads=None)
    _save_trainer(home.root, t)
    saved = load_config(home.config_file)
    assert saved.trainer == t and saved.moniker == "carol"


@pytest.mark.integration
def test_train_runs_the_node_as_a_trainer(tmp_path: Path) -> None:
    """`fedledger train` on a one-validator home, as an operator runs it: the node trains with
    the settings of the flags (config.toml untouched) for a task `task create` makes, the task
    finishes, SIGTERM stops the node cleanly."""
    home = make_home(tmp_path / "h", moniker="dave")
    base = free_port_block(2)
    cfg = home.load_config()
    cfg.p2p.listen = [f"/ip4/127.0.0.1/tcp/{base}"]
    cfg.rpc.laddr = rpc = f"127.0.0.1:{base + 1}"
    cfg.consensus.timeout_commit_ms = 200
    save_config(cfg, home.config_file)
    before = home.config_file.read_bytes()
    node = NodeProcess(home.root, command=("train",), extra=[
        "--dataset", "digits", "--partition", "1/4", "--task", "1", "--device", "cpu",
        "--threads", "1"]).start()
    try:
        node.wait_rpc(rpc, 60)
        r = invoke("task", "create", "--home", str(home.root), "--rpc", rpc, "--name", "t",
                   "--clients-per-round", "1", "--rounds", "1", "--epochs", "1", "--json")
        assert r.exit_code == 0, r.stderr
        assert json.loads(r.stdout)["task_id"] == 1
        wait_for(lambda: (try_rpc(rpc, "fl_tasks", {"status": "finished"}) or {}).get("tasks"),
                 120, "the task to finish")
        tr = try_rpc(rpc, "fl_trainer_status")
        me = load_account_key(home.root, "dave").address.hex()
        assert tr["enabled"] and tr["account"] == me
        assert [(h["task_id"], h["round"], h["samples"]) for h in tr["rounds"]] == [
            (1, 1, tr["samples"])]
        r = invoke("task", "status", "1", "--rpc", rpc, "--json")
        (res,) = json.loads(r.stdout)["results"]
        assert [c["trainer"] for c in res["accepted"]] == [me] and res["new_model_cid"]
        assert home.config_file.read_bytes() == before
        assert node.stop(signal.SIGTERM, timeout=15) == 0, node.log_text()[-3000:]
    finally:
        if node.running:
            node.kill()
    text = node.log_text()
    assert "Traceback" not in text and '"tasks": ["1"]' in text
