"""`fedledger fl simulate` through typer's runner."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from cli.fl_cmd import app

runner = CliRunner()
ARGS = [
    "simulate",
    "--clients",
    "10",
    "--per-round",
    "4",
    "--rounds",
    "2",
    "--epochs",
    "1",
    "--device",
    "cpu",
]


def test_simulate_json_output() -> None:
    res = runner.invoke(
        app, [*ARGS, "--rule", "robust", "--attack", "sign_flip", "--malicious", "0.3", "--json"]
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["config"]["rule"] == "robust" and len(out["rounds"]) == 2
    assert 0.0 <= out["final_accuracy"] <= 1.0


def test_simulate_table_output() -> None:
    res = runner.invoke(app, [*ARGS, "--rule", "multikrum", "--rule-param", "f=1"])
    assert res.exit_code == 0, res.output
    assert "final accuracy" in res.output and "honest" in res.output and "│     2 │" in res.output


def test_simulate_bad_input_is_a_clear_error(tmp_path: object) -> None:
    res = runner.invoke(app, [*ARGS, "--dataset", "mnist", "--data-dir", str(tmp_path)])
    assert res.exit_code == 2 and "no MNIST files" in res.output
    res = runner.invoke(app, [*ARGS, "--attack", "teleport", "--malicious", "0.2"])
    assert res.exit_code == 2 and "unknown attack" in res.output
    res = runner.invoke(app, [*ARGS, "--rule", "nope"])
    assert res.exit_code == 2 and "unknown aggregation rule" in res.output
    res = runner.invoke(app, [*ARGS, "--pol", "sometimes"])
    assert res.exit_code == 2 and "pol must be one of" in res.output


def test_simulate_with_pol_reports_pol_rejections() -> None:
    res = runner.invoke(
        app, [*ARGS, "--attack", "scaling", "--malicious", "0.3", "--pol", "replay", "--json"]
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["config"]["pol"] == "replay" and out["poisoned_rejected_fraction"] == 1.0
    rejected = [r["reasons"] for r in out["rounds"]]
    assert all(set(r) <= {"pol_replay_mismatch"} for r in rejected) and any(rejected)
