"""`FLRound` events: every round a committed block closes is published on the node's event bus
and over the RPC websocket, filterable by task (``tm.event = 'FLRound' AND fl.task = '1'``).

An in-process node commits blocks built by the test (``ledger.testing.ChainBuilder`` with the FL
section of ``ledger.fl.testing.build_section``), as consensus hands them over.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import trio
from trio_websocket import open_websocket_url

from ledger.fl.query import cid_text
from ledger.fl.testing import build_section, make_spec, submit_body
from ledger.fl.txs import Join, TaskCreate
from ledger.testing import Wallet
from node.events import Subscription
from tests.node.test_rpc_ledger import Chain, running_chain


def _wallets(chain: Chain) -> list[Wallet]:
    return [chain.wallet(i) for i in range(3)]


async def _two_tasks_with_submissions(chain: Chain, w: list[Wallet]) -> None:
    """Tasks 1 and 2 (2 rounds, 2 clients each); trainers 1 and 2 submit in round 1 of both."""
    spec = make_spec(rounds=2, clients_per_round=2, min_participants=2, round_blocks=20)
    await chain.produce([w[0].sign(TaskCreate(spec)), w[0].sign(TaskCreate(spec))])
    await chain.produce([w[i].sign(Join(t, 100, b"")) for i in (1, 2) for t in (1, 2)])
    await chain.produce([w[i].sign(submit_body(t, 1, w[i].address)) for i in (1, 2)
                         for t in (1, 2)])


async def _close_due_rounds(chain: Chain, reject: dict[int, dict[bytes, tuple[str, bool]]]) -> Any:
    state = chain.builder.state
    section = build_section(state, state.height, reject)
    assert section is not None
    await chain.produce([], pol=section)
    return section


def _drain(sub: Subscription) -> list[dict[str, Any]]:
    out = []
    while True:
        try:
            out.append(sub.receive.receive_nowait())
        except trio.WouldBlock:
            return out


async def test_round_close_publishes_one_event_per_round(tmp_path: Path,
                                                        nursery: trio.Nursery) -> None:
    async with running_chain(tmp_path, nursery) as chain:
        bus = chain.node.events
        task1 = bus.subscribe("tm.event = 'FLRound' AND fl.task = '1'")
        every = bus.subscribe("tm.event = 'FLRound'")
        rejected_only = bus.subscribe("tm.event = 'FLRound' AND fl.rejected = 1")
        w = _wallets(chain)
        await _two_tasks_with_submissions(chain, w)
        assert _drain(every) == []  # nothing closed yet
        bad = w[2].address
        section = await _close_due_rounds(chain, {1: {bad: ("pol_failed: segment 3", True)}})
        height = str(chain.node.chain.height)

        (ev,) = _drain(task1)
        assert ev["data"]["type"] == "FLRound"
        d = ev["data"]["value"]
        r1 = section.results[0]
        assert d["task_id"] == 1 and d["round"] == 1 and d["height"] == height
        assert d["phase"] == "closed" and d["status"] == "open"  # round 2 opened
        assert d["new_model_cid"] == cid_text(r1.new_model_cid)
        assert [a["trainer"] for a in d["accepted"]] == [w[1].address.hex()]
        assert [(r["trainer"], r["reason"], r["proven"]) for r in d["rejected"]] == [
            (bad.hex(), "pol_failed: segment 3", True)]
        assert d["paid"] > 0 and d["burned"] == 10  # slash_ppm 10% of the 100 bond
        tags = ev["events"]
        assert tags["tm.event"] == ["FLRound"] and tags["fl.task"] == ["1"]
        assert tags["fl.round"] == ["1"] and tags["fl.phase"] == ["closed"]
        assert tags["fl.accepted"] == ["1"] and tags["fl.rejected"] == ["1"]
        assert tags["fl.new_model_cid"] == [d["new_model_cid"]]
        # The same as fl_round answers afterwards.
        res = await chain.call("fl_round", {"task_id": 1, "round": 1})
        assert res["result"]["accepted"] == d["accepted"]
        assert res["result"]["rejected"] == d["rejected"]

        both = _drain(every)
        assert [e["data"]["value"]["task_id"] for e in both] == [1, 2]
        assert both[1]["events"]["fl.rejected"] == ["0"]
        assert [e["data"]["value"]["task_id"] for e in _drain(rejected_only)] == [1]

        # The last round finishes the task.
        await chain.produce([w[i].sign(submit_body(1, 2, w[i].address)) for i in (1, 2)])
        await _close_due_rounds(chain, {})
        (ev,) = _drain(task1)
        assert ev["data"]["value"]["round"] == 2 and ev["data"]["value"]["status"] == "finished"
        assert ev["events"]["fl.status"] == ["finished"]


async def test_round_events_over_the_websocket(tmp_path: Path, nursery: trio.Nursery) -> None:
    async with running_chain(tmp_path, nursery) as chain:
        w = _wallets(chain)
        await _two_tasks_with_submissions(chain, w)
        url = f"ws://{chain.node.rpc_laddr}/websocket"
        async with open_websocket_url(url) as ws:
            await ws.send_message(json.dumps({
                "jsonrpc": "2.0", "id": 7, "method": "subscribe",
                "params": {"query": "tm.event = 'FLRound' AND fl.task = '2'"}}))
            with trio.fail_after(10):
                ack = json.loads(await ws.get_message())
            assert ack == {"jsonrpc": "2.0", "id": 7, "result": {}}
            await _close_due_rounds(chain, {})
            with trio.fail_after(10):
                msg = json.loads(await ws.get_message())
        assert msg["id"] == 7
        ev = msg["result"]
        assert ev["query"] == "tm.event = 'FLRound' AND fl.task = '2'"
        value = ev["data"]["value"]
        assert value["task_id"] == 2 and value["round"] == 1 and len(value["accepted"]) == 2
        assert ev["events"]["fl.task"] == ["2"] and ev["events"]["fl.accepted"] == ["2"]

