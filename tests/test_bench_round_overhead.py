"""The round-overhead benchmark's pure parts: log parsing, critical path, breakdown, ratios."""

from __future__ import annotations

import math

import pytest

from benchmarks.round_overhead import (
    ChainRound,
    SimRound,
    Timers,
    TrainerRound,
    Workload,
    breakdown_rows,
    commit_times,
    critical_path,
    first,
    overhead,
    parse_log,
    per_round_rows,
    table,
    where_time_goes,
)

LOG = "\n".join([
    '{"height": 7, "event": "committed block", "timestamp": "2026-01-01T00:00:10.000000Z"}',
    "not json: a traceback line",
    '{"task": 1, "round": 1, "event": "training", "timestamp": "2026-01-01T00:00:10.500000Z"}',
    '{"height": 8, "event": "committed block", "timestamp": "2026-01-01T00:00:11.250000Z"}',
    '{"event": "no timestamp"}',
])


def test_parse_log_keeps_json_lines_with_their_time() -> None:
    evs = parse_log(LOG)
    assert [e["event"] for e in evs] == ["committed block", "training", "committed block"]
    times = commit_times(evs)
    assert times[8] - times[7] == pytest.approx(1.25)
    assert first(evs, "training", task=1, round=1) is evs[1]
    assert first(evs, "training", task=1, round=2) is None


def a_round(opened: float = 100.0) -> ChainRound:
    # trainer B submits last: it triggers at +0.2, starts at +0.5, trains 3 s, its
    # submission commits at +4.5; validator 0 checks until +6, the result commits at +7
    return ChainRound(
        round=1, opened=opened, closed=opened + 7, blocks=9,
        trainers=[TrainerRound("a", opened + 0.1, opened + 0.3, 2.0, opened + 3.0),
                  TrainerRound("b", opened + 0.2, opened + 0.5, 3.0, opened + 4.5)],
        checks=[opened + 5.0, opened + 6.0], check_seconds=[1.0, 1.5], accepted=2)


def test_critical_path_follows_the_last_submission_and_sums_to_the_round() -> None:
    cp = critical_path(a_round())
    assert cp == pytest.approx({"start": 0.5, "training": 3.0, "submit": 1.0,
                                "verification": 1.5, "close": 1.0})
    assert sum(cp.values()) == pytest.approx(a_round().seconds)


def test_where_time_goes_splits_with_the_timers_and_sums_to_the_round() -> None:
    r = a_round()
    parts = where_time_goes(r, Timers(fetch=1.0, checks=4.0, aggregate=0.8, rounds=2))
    assert parts == pytest.approx({
        "training": 3.0,
        "transfer": 0.3 + 0.25 * 1.5,  # global model fetch + fetch share of verification
        "verification": 0.75 * 1.5,
        "aggregation": 0.4,
        "consensus": 0.2 + 1.0 + 0.6,
    })
    assert sum(parts.values()) == pytest.approx(r.seconds)
    # no timers (an older node): verification keeps everything, no aggregation split
    bare = where_time_goes(r, Timers())
    assert bare["verification"] == pytest.approx(1.5) and bare["aggregation"] == 0


def test_overhead_and_tables() -> None:
    assert overhead(7.0, 2.0) == (5.0, 3.5)
    assert math.isinf(overhead(1.0, 0.0)[1])
    sim = [SimRound(1, 2.0, 1.6, 0.1, 0.5)]
    rows = per_round_rows(sim, [a_round()])
    assert rows == [["1", "2.00", "7.00", "+5.00", "3.5x", "50.0 %", "-"]]
    b = breakdown_rows(sim, [a_round()], Timers(), Workload())
    assert b[-1][1:] == ["**2.00**", "**7.00**", "**+5.00**", "**3.5x**"]
    assert b[0][1:4] == ["1.60", "3.00", "+1.40"]
    text = table(["x", "y"], [["a", "1"]])
    assert text.splitlines() == ["| x | y |", "|---|---:|", "| a | 1 |"]


def test_an_he_workload_reaches_the_task_and_the_harness() -> None:
    # Prepare: the encrypted workload (HE tasks aggregate with FedAvg)
    w = Workload(rule="fedavg", privacy="he", pol="off")

    # Execute: what the chain's TaskCreate and the in-process harness are built from
    opts, cfg = w.task_options(), w.sim_config()

    # Assert: both run encrypted, with the same rule
    assert (opts.privacy, opts.rule) == ("he", "fedavg")
    assert (cfg.privacy.mode, cfg.rule) == ("he", "fedavg")
    assert Workload().sim_config().privacy.mode == "none"
