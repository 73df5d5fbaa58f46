"""The verifier's ProcessProposal when validators see different content availability."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from trio.testing import wait_all_tasks_blocked

import node.fl.verifier as vmod
from fl.models import build_model, state_dict_of, to_safetensors
from ledger.fl import FLSection, RoundResult
from node.fl.verifier import VerifierService
from storage.store import ContentStore
from storage.tensors import bytes_cid

CHUNK = 64 * 1024
TRAINERS = [bytes([i]) * 20 for i in (1, 2, 3)]
X = TRAINERS[1]  # the trainer whose update one validator cannot fetch


def model_bytes(shift: float) -> bytes:
    state = state_dict_of(build_model("mlp", {}, seed=1))
    return to_safetensors({k: v + shift for k, v in state.items()} if shift else state)


class World:
    """One round of one task: the global model and three trainers' updates."""

    def __init__(self) -> None:
        self.objects: dict[bytes, bytes] = {}
        self.global_cid = self.add(model_bytes(0.0))
        self.subs = [(t, SimpleNamespace(update_cid=self.add(model_bytes(0.001 * (i + 1))),
                                         transcript_cid=b"", reveal_cid=b"", seed=b"",
                                         sample_count=10 * (i + 1), height=5 + i))
                     for i, t in enumerate(TRAINERS)]
        spec = SimpleNamespace(rule="fedavg", rule_params={}, uses_he=False,
                               pol_policy="off", privacy="none", model_id="mlp",
                               model_config={}, train={"batch_size": 32}, validation_cid=b"")
        self.task = SimpleNamespace(round=1, status="open", spec=spec,
                                    global_model_cid=self.global_cid)

    def add(self, data: bytes) -> bytes:
        cid = bytes(bytes_cid(data, chunk_size=CHUNK))
        self.objects[cid] = data
        return cid


def validator(tmp_path: Path, name: str, world: World, reachable: set[bytes]) -> VerifierService:
    """A verifier over a real content store whose network can fetch only ``reachable``."""
    store = ContentStore(tmp_path / f"{name}.db", chunk_size=CHUNK)
    node = SimpleNamespace(
        cfg=SimpleNamespace(moniker=name, storage=SimpleNamespace(chunk_size=CHUNK)),
        validator_key=SimpleNamespace(address=b"v" * 20), chain_id="test-chain",
        content=SimpleNamespace(store=store),
        metrics=SimpleNamespace(pol_verify_seconds=SimpleNamespace(observe=lambda s: None)))
    svc = VerifierService(node)  # type: ignore[arg-type]
    reach(svc, world, reachable)
    return svc


def reach(svc: VerifierService, world: World, reachable: set[bytes]) -> None:
    """What the verifier's network can fetch from now on."""
    store = svc.node.content.store

    async def fetch(cid: bytes, *, pin: str, timeout_s: float, prefer: Any = None) -> None:
        if cid not in reachable:
            raise TimeoutError(f"no provider for {cid.hex()[-8:]}")
        store.put_bytes(world.objects[cid], chunk_size=CHUNK, pin=pin)

    svc.node.content.fetch = fetch  # type: ignore[method-assign,assignment]


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> World:
    w = World()
    monkeypatch.setattr(vmod, "UNAVAILABLE_ATTEMPTS", 1)
    monkeypatch.setattr(vmod, "due_rounds", lambda state, height: [(1, 1)])
    monkeypatch.setattr(vmod, "list_submissions", lambda state, task_id, r: list(w.subs))
    monkeypatch.setattr(vmod, "get_task", lambda state, task_id: w.task)
    return w


def block(result: RoundResult) -> Any:
    return SimpleNamespace(height=10, pol=FLSection((result,)))


async def test_differing_availability_views_converge_by_refetching(
        tmp_path: Path, world: World, nursery: Any) -> None:
    # Prepare: validator A cannot fetch X's update, validator B can fetch everything
    everything = set(world.objects)
    a = validator(tmp_path, "a", world, everything - {world.subs[1][1].update_cid})
    b = validator(tmp_path, "b", world, everything)
    a._nursery = b._nursery = nursery
    state = SimpleNamespace(height=10, validators=SimpleNamespace(validators=(1, 2, 3, 4)))

    # Execute: each computes its result
    res_a = await a.round_result(state, 1, 1)  # type: ignore[arg-type]
    res_b = await b.round_result(state, 1, 1)  # type: ignore[arg-type]

    # Assert: they differ only in X's availability...
    assert [r.trainer for r in res_a.rejected] == [X]
    assert res_a.rejected[0].reason == "unavailable" and not res_a.rejected[0].proven
    assert len(res_b.accepted) == 3 and res_a.new_model_cid != res_b.new_model_cid
    # ...B refuses A's proposal (it has X's update, which A left out), naming X
    why = await b.process(state, block(res_a))  # type: ignore[arg-type]
    assert why is not None and "accepted" in why and X.hex()[:12] in why
    # A's background re-fetch (as its prepare starts) brings X once it is reachable, and
    # A's next result includes it
    reach(a, world, everything)
    await a._check_submission(1, world.task, X, world.subs[1][1])  # type: ignore[arg-type]
    assert await a.round_result(state, 1, 1) == res_b  # type: ignore[arg-type]
    # C, which cannot fetch X either, refuses B's proposal (it cannot reproduce an aggregate
    # with X in it), says where the results differ, and fetches X again in the background;
    # its old verdict and result stand meanwhile, so a proposal or prevote of C's never
    # waits for that fetch
    c = validator(tmp_path, "c", world, everything - {world.subs[1][1].update_cid})
    c._nursery = nursery
    why = await c.process(state, block(res_b))  # type: ignore[arg-type]
    assert why is not None and "accepted" in why and X.hex()[:12] in why
    assert (1, 1, X) in c.work.refreshing
    assert c.work.checks[(1, 1, X)].reason == "unavailable"
    await wait_all_tasks_blocked()  # that re-check fails: X is still out of reach
    assert not c.work.refreshing and c.work.checks[(1, 1, X)].reason == "unavailable"
    # once X's update reaches C, the next refusal's re-check gets it and C accepts
    reach(c, world, everything)
    assert await c.process(state, block(res_b)) is not None  # type: ignore[arg-type]
    await wait_all_tasks_blocked()
    assert not c.work.refreshing and c.work.checks[(1, 1, X)].ok
    assert await c.process(state, block(res_b)) is None  # type: ignore[arg-type]


async def test_a_wrong_model_is_refused_naming_the_field(
        tmp_path: Path, world: World, nursery: Any) -> None:
    # Prepare: a proposal with the right verdicts but a model that is not the aggregate
    b = validator(tmp_path, "b", world, set(world.objects))
    b._nursery = nursery
    state = SimpleNamespace(height=10, validators=SimpleNamespace(validators=(1, 2, 3, 4)))
    honest = await b.round_result(state, 1, 1)  # type: ignore[arg-type]
    forged = RoundResult(honest.task_id, honest.round, honest.accepted, honest.rejected,
                         honest.aggregate_digest, world.global_cid, b"")

    # Execute
    why = await b.process(state, block(forged))  # type: ignore[arg-type]

    # Assert: refused, naming the field
    assert why is not None and "new_model_cid" in why
    assert await b.process(state, block(honest)) is None  # type: ignore[arg-type]


async def test_a_verdict_that_changes_drops_the_cached_result(
        tmp_path: Path, world: World, nursery: Any) -> None:
    # Prepare: A's first result leaves X out
    everything = set(world.objects)
    a = validator(tmp_path, "a", world, everything - {world.subs[1][1].update_cid})
    a._nursery = nursery
    state = SimpleNamespace(height=10)
    first = await a.round_result(state, 1, 1)  # type: ignore[arg-type]
    assert len(first.accepted) == 2

    # Execute: X's content becomes reachable and a background re-check (as prepare starts
    # for its own "unavailable" verdicts) runs
    reach(a, world, everything)
    await a._check_submission(1, world.task, X, world.subs[1][1])  # type: ignore[arg-type]

    # Assert: the next result includes X
    again = await a.round_result(state, 1, 1)  # type: ignore[arg-type]
    assert len(again.accepted) == 3 and not again.rejected


async def test_a_verdict_that_changes_during_aggregation_is_not_cached_stale(
        tmp_path: Path, world: World, nursery: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare: A cannot fetch X; while its first aggregation runs, X's content becomes
    # reachable and X's verdict is dropped and the round's results forgotten (what a
    # changed verdict does to the round's cached results)
    everything = set(world.objects)
    a = validator(tmp_path, "a", world, everything - {world.subs[1][1].update_cid})
    a._nursery = nursery
    real = a._aggregate
    calls = 0

    async def racing(*args: Any) -> RoundResult:
        nonlocal calls
        calls += 1
        result = await real(*args)
        if calls == 1:
            reach(a, world, everything)
            a.work.checks.pop((1, 1, X))
            a.work.started.discard((1, 1, X))
            a._forget_results(1, 1)
        return result

    monkeypatch.setattr(a, "_aggregate", racing)

    # Execute
    res = await a.round_result(SimpleNamespace(height=10), 1, 1)  # type: ignore[arg-type]

    # Assert: the stale first result was neither returned nor cached
    assert calls == 2 and len(res.accepted) == 3
    assert list(a.work.results.values()) == [res]


async def test_the_tasks_validation_set_is_fetched_and_screens_alike(
        tmp_path: Path, world: World, nursery: Any) -> None:
    # Prepare: the robust rule with a digits validation set stored by the task's creator,
    # and a threshold every update exceeds (max_val_rise -1; the world's updates are uniform
    # shifts, which the noise, one-sided and residual checks would reject first)
    import numpy as np

    from fl.data import load_digits
    from fl.data.validation import validation_to_bytes

    spec = world.task.spec
    spec.rule = "robust"
    spec.rule_params = {"max_val_rise": "-1", "max_skew": "1", "min_residual": "0",
                        "min_head_energy": "0"}
    spec.validation_cid = world.add(validation_to_bytes(load_digits().subset(np.arange(50))))
    a = validator(tmp_path, "a", world, set(world.objects))
    b = validator(tmp_path, "b", world, set(world.objects))
    a._nursery = b._nursery = nursery
    state = SimpleNamespace(height=10, validators=SimpleNamespace(validators=(1, 2, 3, 4)))
    # Execute
    res_a = await a.round_result(state, 1, 1)  # type: ignore[arg-type]
    res_b = await b.round_result(state, 1, 1)  # type: ignore[arg-type]
    spec.validation_cid = world.add(b"\x08" + bytes(40))  # not a validation set
    c = validator(tmp_path, "c", world, set(world.objects))
    c._nursery = nursery
    res_c = await c.round_result(state, 1, 1)  # type: ignore[arg-type]
    # Assert: both fetched the set and rejected every update on it, identically; a set that
    # does not parse leaves the screen without the check instead of blocking the round
    assert res_a == res_b and not res_a.accepted
    assert {r.reason for r in res_a.rejected} == {"raises_validation_loss"}
    assert all(r.proven for r in res_a.rejected)
    assert len(res_c.accepted) == 3 and not res_c.rejected
    assert await b.process(state, block(res_a)) is None  # type: ignore[arg-type]
