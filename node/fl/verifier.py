"""The verifier service of a validator: checks submissions as they arrive, pre-computes each
round's result, and fills (PrepareProposal) and checks (ProcessProposal) the FL section.

Work per submission (as soon as it is committed, and its reveal under ``replay``): fetch the
transcript, update and checkpoints through the content exchange, verify the proof of
learning in a worker thread, cache the verdict. When a round is due, score and aggregate
the PoL-valid updates (also in a thread), store the new global model, and keep the
``RoundResult``: the proposer puts it in its block, every other validator compares the
proposed one with its own and prevotes nil on any difference (docs/fl-chain.md §5).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

import trio

from ledger.codec import CodecError, decode_record, encode
from ledger.fl import (
    Contribution,
    FLSection,
    Rejection,
    RoundResult,
    TaskState,
    due_rounds,
    get_task,
    list_submissions,
    list_tasks,
    round_id,
)
from node.fl.cpuslot import BACKGROUND, NORMAL, URGENT, PrioritySlot
from node.logs import get_logger

if TYPE_CHECKING:
    from ledger.block import Block, PolSection
    from ledger.chainstate import ChainState
    from node.daemon import Node
    from node.fl.work import RoundComputation

# PoL reasons that prove nothing against the trainer (our side could not check)
_UNPROVEN = {"missing_content", "no_reveal", "verification_error", "unavailable", "bad_policy"}
FETCH_TIMEOUT_S = 30.0
UNAVAILABLE_ATTEMPTS = 3
FETCH_CONCURRENCY = 4  # objects of one submission fetched at once


@dataclass
class Check:
    """The verifier's verdict on one submission."""

    ok: bool
    reason: str
    proven: bool
    segments: tuple[int, ...] = ()
    checkpoints: tuple[bytes, ...] = ()
    update_bytes: bytes | None = None
    seconds: float = 0.0
    # where the time went (the last attempt): fetching the objects, waiting for a CPU slot
    fetch_seconds: float = 0.0
    cpu_wait_seconds: float = 0.0


@dataclass
class _Work:
    checks: dict[tuple[int, int, bytes], Check] = field(default_factory=dict)
    started: set[tuple[int, int, bytes]] = field(default_factory=set)
    results: dict[tuple[int, int, bytes], RoundResult] = field(default_factory=dict)
    # bumped whenever a verdict of the round changes: a result computed from the old
    # verdicts (an aggregation still running in its thread) must not be cached after that
    generation: dict[tuple[int, int], int] = field(default_factory=dict)
    refreshing: set[tuple[int, int, bytes]] = field(default_factory=set)


class VerifierService:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.log = get_logger("fedledger.verifier", moniker=node.cfg.moniker)
        self.work = _Work()
        # PoL replays and aggregations, one at a time; aggregations first (cpuslot.py)
        self.cpu = PrioritySlot()
        self._changed = trio.Event()
        self._nursery: trio.Nursery | None = None
        self.stats = {"verified": 0, "rejected": 0, "rounds": 0, "mismatches": 0}
        self.fetch_seconds = 0.0  # content fetched from peers, and round aggregations:
        self.aggregate_seconds = 0.0  # cumulative, for fl_verifier_status (benchmarks)
        self._he_contexts: dict[bytes, Any] = {}  # he_context_cid -> (HeTaskContext, public)

    # ------------------------------------------------------------ background work

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            seen = -1
            while True:
                h = self.node.chain.height
                if h != seen:
                    seen = h
                    self._schedule(self.node.chain.state)
                with trio.move_on_after(1.0):
                    await self.node.chain.wait_for_height(h + 1)

    def _schedule(self, state: ChainState) -> None:
        """Start checks of every committed submission of every open task we have not seen."""
        assert self._nursery is not None
        if state.validators.get(self.node.validator_key.address) is None:
            return  # not a validator (now): nothing to vote on, so nothing to check
        for task_id, task in list_tasks(state):
            if task.status == "finished":
                continue
            for trainer, sub in list_submissions(state, task_id, task.round):
                key = (task_id, task.round, trainer)
                if key in self.work.started:
                    continue
                if task.spec.pol_policy == "replay" and not sub.reveal_cid \
                        and state.height < task.close_height:
                    continue  # wait for the reveal (or its deadline)
                self.work.started.add(key)
                self._nursery.start_soon(self._check_submission, task_id, task, trainer, sub)
            for due in due_rounds(state, state.height):
                self._nursery.start_soon(self._result_quietly, state, *due)

    async def _result_quietly(self, state: ChainState, task_id: int, round_: int) -> None:
        try:
            await self.round_result(state, task_id, round_)
        except Exception as e:
            self.log.warning("could not pre-compute a round result", task=task_id, round=round_,
                             error=repr(e))

    async def _fetch(self, cid: bytes, pin: str, prefer: list[Any] | None = None) -> bytes:
        content = self.node.content
        if not content.store.has(cid):
            t0 = time.perf_counter()
            await content.fetch(cid, pin=pin, timeout_s=FETCH_TIMEOUT_S, prefer=prefer)
            self.fetch_seconds += time.perf_counter() - t0
        else:
            content.store.pin(cid, pin)
        return content.store.get_bytes(cid)  # type: ignore[no-any-return]

    async def _fetch_all(self, cids: list[bytes], pin: str, sink: Any,
                         prefer: list[Any] | None = None) -> None:
        """Fetch several objects at once (a transcript names 5-10 checkpoints; fetched one
        after the other they were 61 % of a round's wall time in benchmarks/round_overhead);
        the first failure fails the whole check, as a sequential fetch would."""
        got: dict[bytes, bytes] = {}
        limit = trio.CapacityLimiter(FETCH_CONCURRENCY)

        async def one(cid: bytes) -> None:
            async with limit:
                got[cid] = await self._fetch(cid, pin, prefer)

        async with trio.open_nursery() as nursery:
            for cid in cids:
                nursery.start_soon(one, cid)
        for cid in cids:
            sink.add(cid, got[cid])

    async def _check_submission(self, task_id: int, task: TaskState, trainer: bytes,
                                sub: Any, priority: int = NORMAL) -> None:
        key = (task_id, task.round, trainer)
        t0 = time.perf_counter()
        for attempt in range(UNAVAILABLE_ATTEMPTS):
            check = await self._verify(task_id, task, trainer, sub, priority)
            # "unavailable" is our own view of the network, not a fact every validator shares:
            # try again (the content may be on other peers by now, e.g. the proposer's)
            # before it goes into a result that the others must reproduce
            if check.ok or check.proven or not check.reason.startswith("unavailable"):
                break
            if attempt + 1 < UNAVAILABLE_ATTEMPTS:
                await trio.sleep(2.0 * (attempt + 1))
        check.seconds = time.perf_counter() - t0
        old = self.work.checks.get(key)
        if old is not None and (old.ok, old.reason) != (check.ok, check.reason):
            self._forget_results(task_id, task.round)
        self.work.checks[key] = check
        self.stats["verified" if check.ok else "rejected"] += 1
        self.node.metrics.pol_verify_seconds.observe(check.seconds)
        self.log.info("submission checked", task=task_id, round=task.round,
                      trainer=trainer.hex()[:12], ok=check.ok, reason=check.reason,
                      seconds=round(check.seconds, 2), fetch_s=round(check.fetch_seconds, 2),
                      cpu_wait_s=round(check.cpu_wait_seconds, 2))
        self._changed.set()
        self._changed = trio.Event()

    async def _verify(self, task_id: int, task: TaskState, trainer: bytes, sub: Any,
                      priority: int = NORMAL) -> Check:
        from fl.pol import Transcript
        from node.fl.sink import PrefetchedSink
        from node.fl.work import TaskModel, verify_submission

        spec = task.spec
        pin = f"verify task {task_id} round {task.round}"
        t0 = time.perf_counter()
        try:
            update = await self._fetch(sub.update_cid, pin)
        except Exception as e:  # not the trainer's provable fault: maybe our network
            self.log.warning("update unavailable", task=task_id, trainer=trainer.hex()[:12],
                             error=repr(e)[:200])
            return Check(False, "unavailable", False)
        if spec.uses_he:
            return await self._check_he(task_id, task, trainer, sub, update, priority)
        if spec.pol_policy == "off" or not sub.transcript_cid:
            return Check(True, "ok", False, update_bytes=update)
        sink = PrefetchedSink({sub.update_cid: update})
        # the transcript and checkpoints come from whoever served the update (the trainer,
        # or a validator that has checked it): asking all peers for each of them was most of
        # a check's time in a 14-node testnet
        prefer = self.node.content.providers_of(sub.update_cid)
        try:
            raw = await self._fetch(sub.transcript_cid, pin, prefer)
            sink.add(sub.transcript_cid, raw)
            transcript = decode_record(raw, Transcript)
            needed = {bytes(task.global_model_cid)}
            for seg in transcript.segments:
                needed.add(bytes(seg.model_cid))
                if seg.optim_cid:
                    needed.add(bytes(seg.optim_cid))
            if sub.reveal_cid:
                needed.add(bytes(sub.reveal_cid))
            await self._fetch_all(sorted(needed - set(sink.objects)), pin, sink, prefer)
        except CodecError as e:
            return Check(False, f"malformed_transcript: {e}"[:64], True)
        except Exception as e:
            # the reason goes into the round result every validator must reproduce: the same
            # word for every kind of fetch failure (which one is our own network's business)
            self.log.warning("PoL objects unavailable", task=task_id,
                             trainer=trainer.hex()[:12], error=repr(e)[:200])
            return Check(False, "unavailable", False)
        fetched = time.perf_counter() - t0
        tm = TaskModel(spec.model_id, dict(spec.model_config), dict(spec.train), spec.pol_k)
        dp = spec.privacy in ("dp", "dp+he")
        t1 = time.perf_counter()
        async with self.cpu.hold(priority):
            waited = time.perf_counter() - t1
            verdict = await trio.to_thread.run_sync(lambda: verify_submission(
                tm, sub.transcript_cid, sink, seed=sub.seed, policy=spec.pol_policy,
                global_cid=task.global_model_cid,
                round_id=round_id(self.node.chain_id, task_id, task.round),
                update_cid=None if dp else sub.update_cid,
                reveal_cid=sub.reveal_cid or None, data_root=sub.data_commitment,
                samples=sub.sample_count))
        if not verdict.ok:
            code = verdict.reason.split(":")[0]
            return Check(False, verdict.reason[:64], code not in _UNPROVEN,
                         fetch_seconds=fetched, cpu_wait_seconds=waited)
        segs = tuple(sorted(verdict.checked))
        cps = tuple(bytes(transcript.segments[i].model_cid) for i in segs)
        return Check(True, "ok", False, segs, cps, update, fetch_seconds=fetched,
                     cpu_wait_seconds=waited)

    # ------------------------------------------------------------ round results

    def _forget_results(self, task_id: int, round_: int) -> None:
        """Drop the cached results of a round whose verdicts changed."""
        for k in [k for k in self.work.results if k[:2] == (task_id, round_)]:
            del self.work.results[k]
        g = self.work.generation
        g[(task_id, round_)] = g.get((task_id, round_), 0) + 1

    async def round_result(self, state: ChainState, task_id: int, round_: int,
                           wait_s: float = 60.0) -> RoundResult:
        """The result of a due round (computed once; waits for pending checks)."""
        subs = list_submissions(state, task_id, round_)
        fingerprint = encode([[t, s.update_cid] for t, s in subs])
        key = (task_id, round_, fingerprint)
        if key in self.work.results:
            return self.work.results[key]
        task = get_task(state, task_id)
        if task is None:
            raise ValueError(f"task {task_id} does not exist")
        while True:
            with trio.fail_after(wait_s):
                while True:
                    missing = [t for t, _ in subs
                               if (task_id, round_, t) not in self.work.checks]
                    if not missing:
                        break
                    for t, s in subs:
                        k = (task_id, round_, t)
                        if k not in self.work.started and self._nursery is not None:
                            self.work.started.add(k)
                            self._nursery.start_soon(self._check_submission, task_id, task, t,
                                                     s)
                    await self._changed.wait()
            if key in self.work.results:
                return self.work.results[key]
            gen = self.work.generation.get((task_id, round_), 0)
            t0 = time.perf_counter()
            result = await self._aggregate(task_id, task, subs)
            self.aggregate_seconds += time.perf_counter() - t0
            if self.work.generation.get((task_id, round_), 0) == gen:
                self.work.results[key] = result
                self.stats["rounds"] += 1
                return result
            # a verdict changed (or was dropped for a re-check) while we aggregated: wait
            # for the checks again and compute from the new verdicts

    async def _aggregate(self, task_id: int, task: TaskState, subs: list[Any]) -> RoundResult:
        from fl.data import DatasetError
        from node.fl.work import Candidate, aggregate_round, screen_context

        spec = task.spec
        checks = {t: self.work.checks[(task_id, task.round, t)] for t, _ in subs}
        rejected: list[Rejection] = []
        cands: list[Candidate] = []
        for order, (t, s) in enumerate(sorted(subs, key=lambda ts: ts[1].height)):
            c = checks[t]
            if c.ok and c.update_bytes is not None:
                cands.append(Candidate(t, s.update_cid, s.sample_count, c.update_bytes, order))
            else:
                rejected.append(Rejection(t, s.update_cid, c.reason or "rejected", 0, c.proven))
        if spec.uses_he:
            return await self._aggregate_he(task_id, task, cands, rejected)
        accepted: list[Contribution] = []
        digest, new_cid = b"", bytes(task.global_model_cid)
        if cands:
            gbytes = await self._fetch(task.global_model_cid, f"global model task {task_id}")
            vbytes = (await self._fetch(spec.validation_cid, f"validation set task {task_id}")
                      if spec.validation_cid and spec.rule == "robust" else None)

            def compute() -> RoundComputation:
                try:
                    ctx = screen_context(spec.model_id, spec.model_config, spec.train, vbytes,
                                         gbytes)
                except DatasetError as e:  # the same bytes fail on every validator alike
                    self.log.warning("validation set unusable, screening without it",
                                     task=task_id, error=str(e)[:200])
                    ctx = screen_context(spec.model_id, spec.model_config, spec.train)
                return aggregate_round(spec.rule, dict(spec.rule_params), gbytes, cands, ctx)

            async with self.cpu.hold(URGENT):
                comp = await trio.to_thread.run_sync(compute)
            by_trainer = {c.trainer: c for c in cands}
            for t, err in comp.errors.items():
                rejected.append(Rejection(t, by_trainer[t].update_cid, err[:64], 0, True))
            for t, (ok, reason, score) in comp.verdicts.items():
                cand = by_trainer[t]
                if ok:
                    accepted.append(Contribution(t, cand.update_cid, cand.samples, score,
                                                 checks[t].segments, checks[t].checkpoints))
                else:
                    rejected.append(Rejection(t, cand.update_cid, reason[:64], score, True))
            if accepted:
                digest = comp.digest
                cid = self.node.content.store.put_bytes(
                    comp.new_model, chunk_size=self.node.cfg.storage.chunk_size,
                    pin=f"global model task {task_id} round {task.round}")
                new_cid = bytes(cid)
        accepted.sort(key=lambda c: c.trainer)
        rejected.sort(key=lambda r: r.trainer)
        return RoundResult(task_id, task.round, tuple(accepted), tuple(rejected),
                           digest if accepted else b"", new_cid, b"")

    # ------------------------------------------------------------ HE tasks (public context only)

    async def _he_context(self, task_id: int, task: TaskState) -> Any:
        """(HeTaskContext, PublicContext) of the task: parameters, layout, public key only."""
        from node.fl.he_work import HeTaskContext

        cid = bytes(task.spec.he_context_cid)
        if cid not in self._he_contexts:
            data = await self._fetch(cid, f"he context task {task_id}")

            def load() -> Any:
                ctx = HeTaskContext.from_bytes(data)
                return ctx, ctx.public_context()

            self._he_contexts[cid] = await trio.to_thread.run_sync(load)
        return self._he_contexts[cid]

    async def _check_he(self, task_id: int, task: TaskState, trainer: bytes, sub: Any,
                        update: bytes, priority: int = NORMAL) -> Check:
        """An HE submission: one well-formed ciphertext under the task's key and layout, of
        the model's size and with the declared weight. Anyone can check this with the
        public context, so a failure is proven; nothing here can (or tries to) decrypt."""
        from fl.privacy import HeError
        from node.fl.he_work import check_submission, expected_weight, model_size

        spec = task.spec
        try:
            ctx, public = await self._he_context(task_id, task)
        except Exception as e:  # our side (network), not the trainer's fault
            self.log.warning("HE context unavailable", task=task_id, error=repr(e)[:200])
            return Check(False, "unavailable", False)
        count = model_size(spec.model_id, dict(spec.model_config))
        weight = expected_weight(spec, sub.sample_count)
        try:
            async with self.cpu.hold(priority):
                await trio.to_thread.run_sync(
                    check_submission, update, public, ctx.layout, count, weight)
        except HeError as e:
            self.log.info("bad ciphertext", task=task_id, trainer=trainer.hex()[:12],
                          error=str(e)[:200])
            # the reason names the error class only: it must be the same on every validator
            return Check(False, f"bad_ciphertext: {type(e).__name__}", True)
        return Check(True, "ok", False, update_bytes=update)

    async def _aggregate_he(self, task_id: int, task: TaskState, cands: list[Any],
                            rejected: list[Rejection]) -> RoundResult:
        """Add the checked ciphertexts (canonical order: trainer address) with the public
        context; the sum's CID goes into the result and the key holders decrypt it."""
        from node.fl.he_work import add_updates, expected_weight

        spec, r = task.spec, task.round
        ctx, public = await self._he_context(task_id, task)
        kept: list[Any] = []
        weight = 0
        for c in sorted(cands, key=lambda c: c.trainer):
            w = expected_weight(spec, c.samples)
            if weight + w > ctx.layout.max_weight or len(kept) >= public.params.max_summands:
                # the sum would overflow the layout's headroom (or the noise budget): the
                # task's layout is too small for this round, not the trainer's fault
                rejected.append(Rejection(c.trainer, c.update_cid, "he_headroom", 0, False))
                continue
            weight += w
            kept.append(c)
        accepted: list[Contribution] = []
        enc_cid = b""
        if kept:
            async with self.cpu.hold(URGENT):
                total = await trio.to_thread.run_sync(
                    add_updates, [c.update_bytes for c in kept], public)
            enc_cid = bytes(self.node.content.store.put_bytes(
                total, chunk_size=self.node.cfg.storage.chunk_size,
                pin=f"encrypted aggregate task {task_id} round {r}"))
            accepted = [Contribution(c.trainer, c.update_cid, c.samples, 0, (), ())
                        for c in kept]
        rejected.sort(key=lambda x: x.trainer)
        new_cid = b"" if accepted else bytes(task.global_model_cid)
        return RoundResult(task_id, r, tuple(accepted), tuple(rejected), b"", new_cid, enc_cid)

    # ------------------------------------------------------------ consensus hooks

    async def prepare(self, state: ChainState) -> PolSection | None:
        """PrepareProposal: the FL section of the block at ``state.height`` (None if no round
        is due)."""
        due = due_rounds(state, state.height)
        if not due:
            return None
        results = [await self.round_result(state, t, r) for t, r in due]
        for res in results:
            self._refresh_unavailable(state, res)
        return FLSection(tuple(results))

    def _refresh_unavailable(self, state: ChainState, res: RoundResult) -> None:
        """Our result leaves out updates we could not fetch: fetch them again in the
        background, so that our next proposal includes them if they can be had (validators
        that fetched them refuse a result without them, see ``process``)."""
        self._refetch(state, res.task_id, res.round,
                      [r.trainer for r in res.rejected if r.reason.startswith("unavailable")])

    def _recheck_unavailable(self, state: ChainState, got: RoundResult,
                             mine: RoundResult) -> None:
        """The proposer accepted updates we could not fetch: fetch them again - the
        proposer, at least, has the content now."""
        theirs = {c.trainer for c in got.accepted}
        stale = [r.trainer for r in mine.rejected
                 if r.trainer in theirs and r.reason.startswith("unavailable")]
        if self._refetch(state, got.task_id, got.round, stale):
            self.log.info("re-checking updates the proposer could fetch", task=got.task_id,
                          round=got.round, trainers=[t.hex()[:12] for t in stale])

    def _refetch(self, state: ChainState, task_id: int, round_: int,
                 trainers: list[bytes]) -> list[bytes]:
        """Check ``trainers``' submissions again in the background; the trainers whose
        re-check started (one at a time per submission).

        The old verdict, and the round result built on it, stand until the new verdict
        differs (``_check_submission`` then drops the result). Dropping the verdict up front,
        as this did before, made the next PrepareProposal or ProcessProposal wait for the
        re-fetch: under load up to three 30 s fetch attempts, longer than PrepareProposal
        waits, so no proposal could be built while re-checks kept coming (seen: the
        14-process campaign stood at one height for 5-9 minutes)."""
        if self._nursery is None or not trainers:
            return []
        task = get_task(state, task_id)
        if task is None or task.round != round_:
            return []
        subs = dict(list_submissions(state, task_id, round_))
        started = []
        for t in trainers:
            key = (task_id, round_, t)
            if key in self.work.refreshing or t not in subs:
                continue
            self.work.refreshing.add(key)
            self._nursery.start_soon(self._refresh_one, task, t, subs[t], key)
            started.append(t)
        return started

    async def _refresh_one(self, task: TaskState, trainer: bytes, sub: Any,
                           key: tuple[int, int, bytes]) -> None:
        try:
            await self._check_submission(key[0], task, trainer, sub, BACKGROUND)
        finally:
            self.work.refreshing.discard(key)

    async def process(self, state: ChainState, block: Block) -> str | None:
        """ProcessProposal: None if the block's FL section is what this validator computes.

        Availability is each validator's own view of the network, so both sides re-fetch
        when views differ: a validator whose result calls an update unavailable that the
        proposal accepts fetches it again in the background (``_recheck_unavailable``), and
        a proposer re-fetches the updates its own result calls unavailable (``prepare``).
        Before the second half, a proposer that could not fetch an update kept proposing
        without it and the validators that had it kept refusing (seen: a round that did not
        close for six minutes)."""
        due = due_rounds(state, block.height)
        if not due:
            return None  # the contract's block validator already refused a stray section
        pol = block.pol
        if not isinstance(pol, FLSection):
            return "FL section missing while rounds are due"
        for got in pol.results:
            try:
                mine = await self.round_result(state, got.task_id, got.round)
            except Exception as e:
                return f"cannot reproduce round {got.task_id}/{got.round}: {e!r}"[:200]
            if encode(mine) != encode(got):
                self.stats["mismatches"] += 1
                self._recheck_unavailable(state, got, mine)
                return _mismatch(got, mine)
        return None


def _mismatch(got: RoundResult, mine: RoundResult) -> str:
    """Why a proposed round result is refused: the first field that differs."""
    for f in fields(RoundResult):
        name = f.name
        a, b = getattr(got, name), getattr(mine, name)
        if a == b:
            continue
        if name in ("accepted", "rejected"):
            ta = {x.trainer: x for x in a}
            tb = {x.trainer: x for x in b}
            diff = sorted(set(ta) ^ set(tb)) or sorted(t for t in ta if ta[t] != tb[t])
            t = diff[0]
            detail = (f"trainer {t.hex()[:12]}: proposed {ta.get(t)!r:.120}, "
                      f"ours {tb.get(t)!r:.120}")
        else:
            # the CIDs' tails: their first bytes are the same multihash header for all
            detail = f"proposed ..{_tail(a)}, ours ..{_tail(b)}"
        return (f"round {got.task_id}/{got.round} result differs from ours in {name} "
                f"(accepted {len(got.accepted)} vs {len(mine.accepted)}, rejected "
                f"{len(got.rejected)} vs {len(mine.rejected)}): {detail}")[:400]
    return f"round {got.task_id}/{got.round} result differs from ours"


def _tail(v: Any) -> str:
    return bytes(v).hex()[-16:] if isinstance(v, bytes | bytearray) else repr(v)[:32]
