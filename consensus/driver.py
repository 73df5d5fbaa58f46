"""The consensus driver: all I/O around the pure core (gossip, WAL, timers, signing, commits).

One trio task owns the core state. Everything else — gossip handlers, timers, the block
builder, ProcessProposal checks, block sync — talks to it through one inbox channel, so
the core sees one totally ordered stream of events (the order the WAL records):

    gossip in --verify--> inbox --> WAL append --> step(state, event) --> effects
                                                        |
          sign (privval) -> WAL fsync -> publish <------+--> timers, build block, check block,
                                                             commit block, record evidence

Gossip is lossy (LIBP2P_NOTES.md), so the driver re-sends the current height's own
messages on an interval, asks peers for what it misses (``CatchupRequest``) when it makes
no progress, and answers such requests with its own messages of that round. A stalled
driver also fetches the round's messages from peers directly over a stream
(``fetch_round``, filled by the node with block sync's ``RoundMessagesRequest``): gossip
shares one stream per peer with the tx flood, and behind a backlog of tx gossip re-sent
votes did not arrive for minutes (7 validators under load, docs/BENCHMARKS.md).
Messages of the next height are verified against the next validator set and buffered.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from consensus.core import (
    BroadcastProposal,
    BroadcastVote,
    Decide,
    Effect,
    NewHeight,
    ProposalReceived,
    ProposerSelector,
    RecordEvidence,
    RequestValidity,
    RequestValue,
    ScheduleTimeout,
    State,
    Step,
    TimeoutConfig,
    TimeoutFired,
    TimeoutKind,
    ValidityVerdict,
    ValueReady,
    VoteReceived,
    initial_state,
    step,
)
from consensus.core import Proposal as CoreProposal
from consensus.core import Validator as CoreValidator
from consensus.core import ValidatorSet as CoreSet
from consensus.core import Vote as CoreVote
from consensus.core import VoteType as CoreVoteType
from consensus.evidence_pool import EvidencePool
from consensus.messages import (
    MAX_CONSENSUS_MESSAGE,
    CatchupRequest,
    ConsensusMessage,
    ProposalMessage,
    VoteMessage,
    decode_message,
    encode_message,
)
from consensus.privval import DoubleSignError, PrivValidator
from consensus.schedule import ProposerSchedule
from consensus.wal import (
    WAL,
    WalEndHeight,
    WalOwn,
    WalReceived,
    WalRecord,
    WalTimeout,
    WalValue,
    WalVerdict,
)
from ledger.app import Application
from ledger.block import Block, PolSection
from ledger.blockbuilder import build_block
from ledger.chainstate import ChainState
from ledger.codec import CodecError, decode_record, encode, sha256
from ledger.errors import InvalidBlockError, InvalidEvidenceError
from ledger.evidence import DuplicateVoteEvidence, Evidence
from ledger.failpoint import failpoint
from ledger.mempool import Mempool
from ledger.results import BlockResults
from ledger.store import ChainStore
from ledger.validators import ValidatorSet as LedgerSet
from ledger.votes import Commit, Proposal, Vote, VoteType, verify_proposal, verify_vote

# Room in a proposal message for everything but the txs (header, commit, PoL, framing).
_BLOCK_OVERHEAD = 64 * 1024
MAX_FUTURE_MESSAGES = 2000


class ChainAPI(Protocol):
    """What the driver needs of the node's ledger service (node.chain.ChainService)."""

    state: ChainState
    store: ChainStore
    app: Application
    mempool: Mempool

    async def commit_block(self, block: Block, commit: Commit) -> tuple[ChainState,
                                                                         BlockResults]: ...


@dataclass(frozen=True)
class DriverConfig:
    timeouts: TimeoutConfig = field(default_factory=TimeoutConfig)
    timeout_commit_ms: int = 1000
    create_empty_blocks: bool = True
    create_empty_blocks_interval_ms: int = 0
    rebroadcast_interval_ms: int = 1000
    max_message_bytes: int = MAX_CONSENSUS_MESSAGE
    byzantine_mode: str = ""  # test-only: "equivocate"


class Verdict:
    ACCEPT, IGNORE, REJECT = "accept", "ignore", "reject"


@dataclass(frozen=True)
class Checked:
    """A gossip message after verification: the core event it becomes, or why not."""

    verdict: str
    reason: str = ""
    message: ConsensusMessage | None = None
    height: int = 0
    event: Any = None  # ProposalReceived | VoteReceived | CatchupRequest


# inbox items ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Msg:
    checked: Checked


@dataclass(frozen=True)
class _Timeout:
    event: TimeoutFired


@dataclass(frozen=True)
class _Verdict:
    event: ValidityVerdict


@dataclass(frozen=True)
class _Value:
    height: int
    round: int
    block: Block


@dataclass(frozen=True)
class _StartHeight:
    height: int


@dataclass
class _Synced:
    block: Block
    commit: Commit
    done: trio.Event = field(default_factory=trio.Event)
    error: str = ""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class ConsensusDriver:
    """Runs Tendermint for one node on top of a :class:`ChainAPI`."""

    def __init__(
        self,
        chain: ChainAPI,
        privval: PrivValidator,
        cfg: DriverConfig,
        wal_path: Any,
        publish: Callable[[str, bytes], Awaitable[None]],
        log: Any,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.chain = chain
        self.privval = privval
        self.cfg = cfg
        self.publish = publish
        self.log = log
        self.clock = clock
        self.chain_id = chain.state.chain_id
        self.wal = WAL(wal_path)
        self.schedule = ProposerSchedule(chain.state.initial_height, self._ledger_set_at)
        self.evidence = EvidencePool()
        self.core: State = initial_state(privval.address, cfg.timeouts)
        self._send, self._recv = trio.open_memory_channel[Any](10_000)
        self._nursery: trio.Nursery | None = None
        self.height = 0  # the height the core works on
        self.decided = False
        self.replaying = False
        self._reset_height_state()
        self._future: list[Checked] = []
        self._selectors: dict[int, ProposerSelector] = {}
        self._last_progress = trio.current_time() if _in_trio() else 0.0
        self._catchup_answered: dict[tuple[int, int], float] = {}
        self.started = trio.Event()
        self.height_started = trio.Event()
        # hooks the FL contract fills (ProcessProposal / PrepareProposal)
        # ProcessProposal: (state, block) -> None if valid, else why not
        self.process_proposal: Callable[[ChainState, Block],
                                        Awaitable[str | None]] | None = None
        self.prepare_pol: Callable[[ChainState], Awaitable[PolSection | None]] | None = None
        self.on_commit: Callable[[Block], Awaitable[None]] | None = None
        self.behind: Callable[[int], None] = lambda height: None
        # fetch (height, round, want proposals)'s messages from peers over streams
        self.fetch_round: Callable[[int, int, bool], Awaitable[None]] | None = None
        self._fetching = False
        self.stats = {"rounds": 0, "commits": 0, "synced": 0, "double_sign_refusals": 0,
                      "fed": 0, "buffered": 0, "stale": 0, "catchup_answered": 0}

    def _reset_height_state(self) -> None:
        self.blocks: dict[bytes, Block] = {}
        self.proposal_msgs: dict[int, ProposalMessage] = {}
        self.votes: dict[tuple[int, int], dict[bytes, list[Vote]]] = {}  # (round,type)->addr
        self.own: list[ConsensusMessage] = []
        self._deferred: list[tuple[tuple[Any, ...], Effect]] = []
        self._answered: set[tuple[Any, ...]] = set()

    # ------------------------------------------------------------ validator sets

    def _ledger_set_at(self, height: int) -> LedgerSet | None:
        st = self.chain.state
        if height == st.height:
            return st.validators
        if height == st.height + 1:
            return st.next_validators
        return self.chain.store.validators_at(height)

    def _selector(self, height: int) -> ProposerSelector:
        sel = self._selectors.get(height)
        if sel is None:
            sel = ProposerSelector(self.schedule.set_for(height))
            self._selectors = {h: s for h, s in self._selectors.items() if h >= height - 1}
            self._selectors[height] = sel
        return sel

    # ------------------------------------------------------------ verification (gossip)

    def check(self, data: bytes) -> Checked:
        """Decode and verify a consensus gossip message (signature, set membership, height)."""
        try:
            msg = decode_message(data)
        except CodecError as e:
            return Checked(Verdict.REJECT, f"malformed consensus message: {e}")
        return self.check_message(msg)

    def check_message(self, msg: ConsensusMessage) -> Checked:
        base = self.chain.state.height
        if isinstance(msg, CatchupRequest):
            return Checked(Verdict.ACCEPT, message=msg, height=msg.height, event=msg)
        if isinstance(msg, VoteMessage):
            v = msg.vote
            h = v.height
        elif isinstance(msg, ProposalMessage):
            h = msg.proposal.height
        else:  # pragma: no cover - the codec only yields the types above
            return Checked(Verdict.REJECT, "unknown consensus message")
        if h < base or h > base + 1:
            if h > base + 1:
                self.behind(h)
            return Checked(Verdict.IGNORE, f"height {h} is not {base} or {base + 1}")
        vset = self._ledger_set_at(h)
        if vset is None:
            return Checked(Verdict.IGNORE, f"no validator set for height {h}")
        if isinstance(msg, VoteMessage):
            v = msg.vote
            val = vset.get(v.validator_address)
            if val is None or vset.index_of(v.validator_address) != v.validator_index:
                return Checked(Verdict.REJECT, "vote from a non-validator or wrong index")
            if not verify_vote(self.chain_id, v, val.pubkey):
                return Checked(Verdict.REJECT, "bad vote signature")
            cv = CoreVote(CoreVoteType(v.type), v.height, v.round, v.block_id,
                          v.validator_address, encode(v))
            return Checked(Verdict.ACCEPT, message=msg, height=h, event=VoteReceived(cv))
        p, block = msg.proposal, msg.block
        if block.header.id != p.block_id or block.header.height != h:
            return Checked(Verdict.REJECT, "proposal's block does not match its block id")
        if p.round > 10_000:
            return Checked(Verdict.IGNORE, "round too far ahead")
        try:
            proposer = self._selector(h).proposer(p.round)
        except ValueError as e:
            return Checked(Verdict.IGNORE, str(e))
        val = vset.get(proposer)
        if val is None or not verify_proposal(self.chain_id, p, val.pubkey):
            return Checked(Verdict.REJECT, "proposal not signed by the round's proposer")
        cp = CoreProposal(h, p.round, p.block_id, p.pol_round, proposer, encode(p))
        return Checked(Verdict.ACCEPT, message=msg, height=h, event=ProposalReceived(cp))

    async def deliver(self, checked: Checked) -> None:
        """Hand a verified gossip message to the driver task."""
        await self._send.send(_Msg(checked))

    def deliver_nowait(self, checked: Checked) -> bool:
        """Hand a message over from synchronous code (a gossip validator); False if the
        driver's queue is full (the message is dropped: best effort, like gossip)."""
        try:
            self._send.send_nowait(_Msg(checked))
        except trio.WouldBlock:
            return False
        return True

    # ------------------------------------------------------------ main task

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self.wal.open()
        if self.wal.truncated_bytes:
            self.log.warning("WAL had a torn tail, truncated", bytes=self.wal.truncated_bytes)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await self._start(self.chain.state.height, replay=True)
                nursery.start_soon(self._rebroadcast_loop)
                self.started.set()
                task_status.started()
                async for item in self._recv:
                    try:
                        await self._handle(item)
                    except Exception as e:  # one bad input must not stop consensus
                        self.stats["errors"] = self.stats.get("errors", 0) + 1
                        self.log.error("consensus event failed", item=type(item).__name__,
                                       error=repr(e), exc_info=e)
        finally:
            self.wal.close()

    async def _handle(self, item: Any) -> None:
        if isinstance(item, _Msg):
            await self._on_message(item.checked)
        elif isinstance(item, _Timeout):
            ev = item.event
            if ev.height == self.height and not self.decided:
                self.wal.append(WalTimeout(int(ev.kind), ev.height, ev.round))
                await self._feed(ev)
        elif isinstance(item, _Verdict):
            vd = item.event
            if vd.height == self.height and not self.decided:
                self.wal.append(WalVerdict(vd.height, vd.round, vd.value_id, vd.valid))
                await self._feed(vd)
        elif isinstance(item, _Value):
            if item.height == self.height and not self.decided:
                self.wal.append(WalValue(item.height, item.round, item.block))
                self.blocks[item.block.id] = item.block
                await self._feed(ValueReady(item.height, item.round, item.block.id))
        elif isinstance(item, _StartHeight):
            if item.height == self.chain.state.height and item.height > self.height:
                await self._start(item.height)
        elif isinstance(item, _Synced):
            await self._apply_synced(item)

    async def _on_message(self, c: Checked) -> None:
        msg = c.message
        if isinstance(msg, CatchupRequest):
            await self._answer_catchup(msg)
            return
        if c.height == self.height and not self.decided:
            self.stats["fed"] += 1
            if isinstance(msg, VoteMessage) and self.clock() - msg.vote.timestamp > 2000:
                self.stats["late"] = self.stats.get("late", 0) + 1
            self.wal.append(WalReceived(msg))  # type: ignore[arg-type]
            self._note_message(msg)  # type: ignore[arg-type]
            await self._feed(c.event)
        elif c.height > self.height:
            self.stats["buffered"] += 1
            if len(self._future) < MAX_FUTURE_MESSAGES:
                self._future.append(c)
        else:
            self.stats["stale"] += 1

    def _note_message(self, msg: ConsensusMessage) -> None:
        if isinstance(msg, ProposalMessage):
            self.blocks[msg.block.id] = msg.block
            self.proposal_msgs.setdefault(msg.proposal.round, msg)
        elif isinstance(msg, VoteMessage):
            v = msg.vote
            held = self.votes.setdefault((v.round, v.type), {}).setdefault(
                v.validator_address, [])
            if all(h.block_id != v.block_id for h in held):  # re-sent copies add nothing
                held.append(v)

    # ------------------------------------------------------------ heights

    async def _start(self, height: int, replay: bool = False) -> None:
        self.height = height
        self.decided = False
        self._reset_height_state()
        vs = self._core_set(height)
        self.core, effects = step(self.core, NewHeight(height, vs))
        self._progress()
        self.stats["rounds"] += 1
        if replay:
            await self._replay(height, effects)
        else:
            await self._perform_all(effects)
        future, self._future = self._future, []
        for c in future:
            if c.height == height:
                fresh = self.check_message(c.message)  # type: ignore[arg-type]
                if fresh.verdict == Verdict.ACCEPT:
                    await self._on_message(fresh)
            elif c.height > height:
                self._future.append(c)
        self.height_started.set()
        self.height_started = trio.Event()

    def _core_set(self, height: int) -> CoreSet:
        end = self.wal.last_end_height()
        if end is not None and end.height == height - 1 and end.next_validators:
            vs = CoreSet(tuple(CoreValidator(a, p, pr) for a, p, pr in end.next_validators),
                         end.next_proposer)
            self.schedule.remember(height, vs)
        return self.schedule.set_for(height)

    async def _replay(self, height: int, first_effects: list[Effect]) -> None:
        """Rebuild the core's state of ``height`` from the WAL after a restart (no new signing
        for steps already signed; effects whose answers were not logged run afterwards)."""
        records = self.wal.records_for_height(height)
        self.replaying = True
        try:
            await self._perform_all(first_effects)
            for rec in records:
                await self._replay_record(rec)
        finally:
            self.replaying = False
        if records:
            self.log.info("replayed WAL", height=height, records=len(records),
                          round=self.core.round, step=self.core.step.name)
        deferred, self._deferred = self._deferred, []
        for key, eff in deferred:
            if key not in self._answered:
                await self._feed_effects([eff])

    async def _replay_record(self, rec: WalRecord) -> None:
        if isinstance(rec, (WalReceived, WalOwn)):
            msg = rec.message
            c = self.check_message(msg)
            if c.verdict != Verdict.ACCEPT:
                return
            self._note_message(msg)
            if isinstance(rec, WalOwn):
                self.own.append(msg)
                if isinstance(msg, VoteMessage):
                    self._answered.add(("vote", msg.vote.round, msg.vote.type))
                elif isinstance(msg, ProposalMessage):
                    self._answered.add(("proposal", msg.proposal.round))
            await self._feed(c.event)
        elif isinstance(rec, WalTimeout):
            self._answered.add(("timeout", rec.kind, rec.round))
            await self._feed(TimeoutFired(TimeoutKind(rec.kind), rec.height, rec.round))
        elif isinstance(rec, WalVerdict):
            self._answered.add(("validity", rec.value_id))
            await self._feed(ValidityVerdict(rec.height, rec.round, rec.value_id, rec.valid))
        elif isinstance(rec, WalValue):
            self._answered.add(("value", rec.round))
            self.blocks[rec.block.id] = rec.block
            await self._feed(ValueReady(rec.height, rec.round, rec.block.id))

    # ------------------------------------------------------------ the core loop

    async def _feed(self, event: Any) -> None:
        self.core, effects = step(self.core, event)
        await self._feed_effects(effects)

    async def _feed_effects(self, effects: list[Effect]) -> None:
        queue = list(effects)
        while queue:
            eff = queue.pop(0)
            for ev in await self._perform(eff):
                self.core, more = step(self.core, ev)
                queue.extend(more)

    async def _perform_all(self, effects: list[Effect]) -> None:
        await self._feed_effects(effects)

    async def _perform(self, eff: Effect) -> list[Any]:
        """Carry out one effect; returns events to feed back (own signed messages)."""
        if self.replaying:
            key = _effect_key(eff)
            if key is not None:
                self._deferred.append((key, eff))
                return []
        if isinstance(eff, BroadcastVote):
            return await self._broadcast_vote(eff.vote)
        if isinstance(eff, BroadcastProposal):
            return await self._broadcast_proposal(eff.proposal)
        if isinstance(eff, ScheduleTimeout):
            self._spawn(self._timer, eff)
            self._progress()
            return []
        if isinstance(eff, RequestValue):
            self._spawn(self._build_value, eff.height, eff.round)
            return []
        if isinstance(eff, RequestValidity):
            self._spawn(self._check_validity, eff.height, eff.round, eff.value_id)
            return []
        if isinstance(eff, Decide):
            await self._decide(eff)
            return []
        if isinstance(eff, RecordEvidence):
            await self._record_evidence(eff)
            return []
        raise TypeError(f"unknown effect {eff!r}")  # pragma: no cover

    def _spawn(self, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        assert self._nursery is not None
        self._nursery.start_soon(fn, *args)

    def _progress(self) -> None:
        self._last_progress = trio.current_time()

    # ------------------------------------------------------------ own messages

    async def _broadcast_vote(self, cv: CoreVote) -> list[Any]:
        vset = self.chain.state.validators
        index = vset.index_of(self.privval.address)
        if index is None:
            return []
        vote = Vote(int(cv.type), cv.height, cv.round, cv.value_id, self.clock(),
                    self.privval.address, index, b"")
        try:
            signed = self.privval.sign_vote(vote)
        except DoubleSignError as e:
            self.stats["double_sign_refusals"] += 1
            self.log.error("privval refused to sign", error=str(e))
            return []
        msg = VoteMessage(signed)
        self.wal.append(WalOwn(msg), sync=True)
        self.own.append(msg)
        self._note_message(msg)
        await self._send_message(msg)
        if self.cfg.byzantine_mode == "equivocate" and cv.type is CoreVoteType.PREVOTE:
            await self._equivocate(signed)
        return [VoteReceived(dataclasses.replace(cv, signature=encode(signed)))]

    async def _equivocate(self, vote: Vote) -> None:
        """Test-only byzantine mode: also sign a conflicting prevote, bypassing the guard."""
        other = None if vote.block_id is not None else sha256(b"equivocation" + encode(vote))
        twin = self.privval.raw_sign_vote(dataclasses.replace(vote, block_id=other,
                                                              signature=b""))
        self.log.warning("BYZANTINE: sent a conflicting prevote", height=vote.height,
                         round=vote.round)
        await self._send_message(VoteMessage(twin))

    async def _broadcast_proposal(self, cp: CoreProposal) -> list[Any]:
        block = self.blocks.get(cp.value_id)
        if block is None:
            self.log.error("asked to propose an unknown block", block=cp.value_id.hex()[:12])
            return []
        prop = Proposal(cp.height, cp.round, cp.pol_round, cp.value_id, self.clock(), b"")
        try:
            signed = self.privval.sign_proposal(prop)
        except DoubleSignError as e:
            self.stats["double_sign_refusals"] += 1
            self.log.error("privval refused to sign", error=str(e))
            return []
        msg = ProposalMessage(signed, block)
        self.wal.append(WalOwn(msg), sync=True)
        self.own.append(msg)
        self._note_message(msg)
        await self._send_message(msg)
        self.log.info("proposed block", height=cp.height, round=cp.round,
                      block=cp.value_id.hex()[:12], txs=len(block.txs))
        return [ProposalReceived(dataclasses.replace(cp, signature=encode(signed)))]

    async def _send_message(self, msg: ConsensusMessage) -> None:
        try:
            await self.publish("consensus", encode_message(msg))
        except Exception as e:  # gossip is best effort; re-broadcast covers losses
            self.log.warning("consensus publish failed", error=repr(e))

    # ------------------------------------------------------------ timers, values, validity

    async def _timer(self, eff: ScheduleTimeout) -> None:
        await trio.sleep(eff.duration_ms / 1000)
        await self._send.send(_Timeout(TimeoutFired(eff.kind, eff.height, eff.round)))

    async def _build_value(self, height: int, round_: int) -> None:
        if not self.cfg.create_empty_blocks:
            await self._wait_for_txs(height)
        st = self.chain.state
        if st.height != height:
            return
        try:
            block = await self._make_block(st)
        except Exception as e:
            # PrepareProposal could not fill the block (e.g. an FL round whose submissions
            # are still being verified): propose nothing; the round times out, the others
            # prevote nil and the next proposer (or this one, later) tries again.
            self.log.warning("could not build a proposal; skipping this round", height=height,
                             round=round_, error=repr(e)[:200])
            return
        await self._send.send(_Value(height, round_, block))

    async def _wait_for_txs(self, height: int) -> None:
        interval = self.cfg.create_empty_blocks_interval_ms / 1000
        deadline = trio.current_time() + interval if interval > 0 else float("inf")
        # the mempool has no "tx arrived" event; poll it (cheap, and only while idle)
        while (len(self.chain.mempool) == 0 and not len(self.evidence)  # noqa: ASYNC110
               and trio.current_time() < deadline and self.chain.state.height == height):
            await trio.sleep(0.05)

    async def _make_block(self, st: ChainState) -> Block:
        params = st.params
        pol = await self.prepare_pol(st) if self.prepare_pol is not None else None
        evidence = self.evidence.pending(params.evidence.max_bytes)
        last_commit = None
        if st.height > st.initial_height:
            last_commit = self.chain.store.seen_commit(st.height - 1)
        budget = min(params.block.max_bytes, self.cfg.max_message_bytes) - _BLOCK_OVERHEAD
        budget -= len(encode(pol)) if pol is not None else 0
        budget -= sum(len(encode(e)) for e in evidence)
        budget -= len(encode(last_commit)) if last_commit is not None else 0
        txs = self.chain.mempool.reap(max_bytes=max(0, budget), max_txs=params.block.max_txs)
        t = max(self.clock(), st.last_block_time + 1)
        return build_block(st, txs, last_commit=last_commit, evidence=evidence, time=t,
                           proposer=self.privval.address, pol=pol)

    async def _check_validity(self, height: int, round_: int, value_id: bytes) -> None:
        block = self.blocks.get(value_id)
        st = self.chain.state
        valid, reason = False, "unknown block"
        reason_or_none: str | None
        if block is not None and st.height == height:
            try:
                self.chain.app.validate_block(st, block, self.chain.store)
                reason_or_none = None
                if self.process_proposal is not None:
                    reason_or_none = await self.process_proposal(st, block)
                valid = reason_or_none is None
                reason = reason_or_none or ""
            except InvalidBlockError as e:
                reason = str(e)
            except Exception as e:  # a failing hook must cost a nil prevote, not the node
                reason = f"proposal check failed: {e!r}"[:300]
        if not valid:
            self.log.warning("proposal rejected (prevote nil)", height=height, round=round_,
                             block=value_id.hex()[:12], reason=reason)
        await self._send.send(_Verdict(ValidityVerdict(height, round_, value_id, valid)))

    # ------------------------------------------------------------ decisions

    async def _decide(self, d: Decide) -> None:
        block = self.blocks[d.value_id]
        votes = [decode_record(v.signature, Vote) for v in d.precommits]
        commit = Commit.from_votes(self.chain.state.validators, d.height, d.round,
                                   d.value_id, votes)
        failpoint("consensus.before_commit")
        await self._commit(block, commit)
        self.decided = True
        self._spawn(self._start_after, d.height + 1, self.cfg.timeout_commit_ms / 1000)

    async def _commit(self, block: Block, commit: Commit) -> None:
        await self.chain.commit_block(block, commit)
        failpoint("consensus.after_commit")
        self.evidence.mark_committed(block.evidence)
        self.evidence.prune(self.chain.state)
        self.stats["commits"] += 1
        nxt = self.schedule.set_for(block.height + 1)
        self.wal.end_height(WalEndHeight(
            block.height, tuple((v.address, v.power, v.priority) for v in nxt.validators),
            nxt.proposer))
        self._progress()
        if self.on_commit is not None:
            await self.on_commit(block)

    async def _start_after(self, height: int, delay: float) -> None:
        await trio.sleep(delay)
        await self._send.send(_StartHeight(height))

    async def _record_evidence(self, eff: RecordEvidence) -> None:
        a = decode_record(eff.vote_a.signature, Vote)
        b = decode_record(eff.vote_b.signature, Vote)
        ev = DuplicateVoteEvidence.from_votes(a, b)
        try:
            added = self.add_evidence(ev)
        except InvalidEvidenceError as e:
            self.log.warning("own evidence did not verify", error=str(e))
            return
        if added:
            self.log.warning("double sign detected", validator=a.validator_address.hex(),
                             height=a.height, round=a.round)
            try:
                await self.publish("evidence", encode(ev))
            except Exception as e:
                self.log.warning("evidence publish failed", error=repr(e))

    def add_evidence(self, ev: Evidence) -> bool:
        st = self.chain.state
        return self.evidence.add(ev, self.chain_id, self._ledger_set_at(ev.height), st)

    # ------------------------------------------------------------ block sync entry

    async def apply_synced(self, block: Block, commit: Commit) -> str:
        """Commit a block fetched by block sync (its commit verified here); '' on success."""
        item = _Synced(block, commit)
        await self._send.send(item)
        await item.done.wait()
        return item.error

    async def _apply_synced(self, item: _Synced) -> None:
        from ledger.votes import verify_commit

        st = self.chain.state
        try:
            if item.block.height != st.height:
                raise InvalidBlockError(f"expected height {st.height}, got {item.block.height}")
            verify_commit(self.chain_id, st.validators, item.commit, item.block.id,
                          height=st.height)
            await self._commit(item.block, item.commit)
            self.stats["synced"] += 1
            await self._start(self.chain.state.height)
        except InvalidBlockError as e:
            item.error = str(e)
        finally:
            item.done.set()

    # ------------------------------------------------------------ gossip upkeep

    async def _rebroadcast_loop(self) -> None:
        """When the round makes no progress, re-send this node's latest messages and ask
        peers for theirs, backing off exponentially (interval, 2x, 4x, ... 8 s) until the
        round moves again.

        Only the messages of the current and the previous round are re-sent, and only while
        stalled: py-libp2p gossip costs milliseconds of CPU per message and node, and
        re-sending on a fixed beat while every node waits makes rounds slower than their
        timeouts (measured: a congestion collapse after a restart of half the validators).
        """
        interval = self.cfg.rebroadcast_interval_ms / 1000
        wait = interval
        last_seen = self._last_progress
        while True:
            await trio.sleep(interval)
            if self._last_progress != last_seen:
                last_seen, wait = self._last_progress, interval
            stalled = trio.current_time() - self._last_progress
            if self.decided or stalled < wait:
                continue
            lo = self.core.round - 1
            for msg in list(self.own):
                if _round_of(msg) >= lo and self._resend_by_gossip(msg):
                    await self._send_message(msg)
            if self.core.is_validator:
                # a full node has no votes to add: block sync and the stream fetch below
                # bring it the decision, and its requests (ten trainers in the FL testnet)
                # only made every validator re-send its votes to everyone
                await self._send_message(CatchupRequest(self.height, self.core.round))
            if self.fetch_round is not None and not self._fetching:
                self._spawn(self._fetch_round, self.height, self.core.round)
            wait = min(8.0, stalled + wait)  # next re-send after twice the silence so far

    def _resend_by_gossip(self, msg: ConsensusMessage) -> bool:
        """Whether a re-send of our own ``msg`` goes out as gossip. A proposal carries its
        block (up to a MiB) and every direct peer forwards gossip to every other, so with 7
        validators one re-sent proposal crossed 36 links, repeated by every stalled round's
        re-sends and catch-up answers; where peers can fetch a round's messages over a
        stream (``fetch_round``, which asks for proposals only when it lacks one), they take
        the proposal from there and gossip re-sends carry votes only."""
        return self.fetch_round is None or not isinstance(msg, ProposalMessage)

    async def _fetch_round(self, height: int, round_: int) -> None:
        assert self.fetch_round is not None
        self._fetching = True
        try:
            await self.fetch_round(height, round_, round_ not in self.proposal_msgs)
        except Exception as e:  # peers' answers are best effort, like gossip
            self.log.debug("round fetch failed", height=height, round=round_, error=repr(e))
        finally:
            self._fetching = False

    def held_messages(self, height: int, round_: int, proposals: bool = True,
                      max_bytes: int = 4 << 20) -> list[bytes]:
        """This height's messages for a stalled peer at ``round_``, as gossip payloads.

        Every vote held of rounds >= ``round_ - 1`` (the same window the re-send covers)
        and, if the peer wants them, the proposals of rounds ``round_`` up to this node's
        round (a proposal carries its whole block), votes first, within ``max_bytes``.
        """
        if height != self.height or self.decided:
            return []
        msgs: list[ConsensusMessage] = [
            VoteMessage(v)
            for (r, _t), by_addr in sorted(self.votes.items()) if r >= round_ - 1
            for vs in by_addr.values() for v in vs
        ]
        if proposals:
            msgs += [m for r, m in sorted(self.proposal_msgs.items())
                     if round_ <= r <= max(round_, self.core.round)]
        out, size = [], 0
        for m in msgs:
            data = encode_message(m)
            if size + len(data) > max_bytes:
                break
            out.append(data)
            size += len(data)
        return out

    def is_new(self, c: Checked) -> bool:
        """Whether a verified message adds to what this height holds (fetched copies of
        known votes would only grow the WAL)."""
        msg = c.message
        if c.height != self.height or self.decided:
            return c.height > self.height
        if isinstance(msg, VoteMessage):
            v = msg.vote
            held = self.votes.get((v.round, v.type), {}).get(v.validator_address, [])
            return all(h.block_id != v.block_id for h in held)
        if isinstance(msg, ProposalMessage):
            return msg.proposal.round not in self.proposal_msgs
        return False

    async def _answer_catchup(self, req: CatchupRequest) -> None:
        if req.height != self.height:
            return
        key = (req.height, req.round)
        now = trio.current_time()
        if now - self._catchup_answered.get(key, -1e9) < 2 * self.cfg.rebroadcast_interval_ms / 1000:
            return
        self._catchup_answered = {k: t for k, t in self._catchup_answered.items()
                                  if k[0] >= self.height}
        self._catchup_answered[key] = now
        self.stats["catchup_answered"] += 1
        # Only this node's own messages of that round: every author answers for itself.
        # Relaying everything held (as a first version did) made each request cost
        # nodes x (proposal + votes) publishes, and with trainers asking too, one stalled
        # height fed ten thousand messages to each node (measured) and starved the rounds.
        msgs = [m for m in self.own if _round_of(m) == req.round and self._resend_by_gossip(m)]
        # dedupe by encoding: records holding maps (a TaskSpec in a block) are not hashable
        unique = {encode(m): m for m in msgs}
        for m in unique.values():
            await self._send_message(m)

    # ------------------------------------------------------------ introspection (RPC)

    def round_state(self) -> dict[str, Any]:
        c = self.core
        votes: dict[str, Any] = {}
        if c.votes is not None:
            for (r, t), by_addr in sorted(self.votes.items()):
                name = f"round_{r}_{'prevotes' if t == VoteType.PREVOTE else 'precommits'}"
                votes[name] = {a.hex(): [v.block_id.hex() if v.block_id else "nil"
                                         for v in vs] for a, vs in by_addr.items()}
        return {
            "height": str(c.height), "round": c.round, "step": c.step.name,
            "decided": self.decided,
            "proposer": (c.proposer() or b"").hex().upper(),
            "locked_round": c.locked_round,
            "locked_block": c.locked_value.hex().upper() if c.locked_value else "",
            "valid_round": c.valid_round,
            "valid_block": c.valid_value.hex().upper() if c.valid_value else "",
            "is_validator": c.is_validator,
            "proposals": {str(r): m.proposal.block_id.hex().upper()
                          for r, m in self.proposal_msgs.items()},
            "votes": votes,
            "buffered_next_height": len(self._future),
            "evidence_pending": len(self.evidence),
            "stats": dict(self.stats),
        }

    def priorities(self, height: int | None = None) -> dict[bytes, int]:
        h = self.chain.state.height if height is None else height
        try:
            return {v.address: v.priority for v in self.schedule.set_for(h).validators}
        except ValueError:
            return {}


def _round_of(msg: ConsensusMessage) -> int:
    if isinstance(msg, VoteMessage):
        return msg.vote.round
    if isinstance(msg, ProposalMessage):
        return msg.proposal.round
    return -1


def _effect_key(eff: Effect) -> tuple[Any, ...] | None:
    """The WAL record that answers an effect during replay (None: perform it anyway)."""
    if isinstance(eff, BroadcastVote):
        return ("vote", eff.vote.round, int(eff.vote.type))
    if isinstance(eff, BroadcastProposal):
        return ("proposal", eff.proposal.round)
    if isinstance(eff, RequestValue):
        return ("value", eff.round)
    if isinstance(eff, RequestValidity):
        return ("validity", eff.value_id)
    if isinstance(eff, ScheduleTimeout):
        return ("timeout", int(eff.kind), eff.round)
    return None


def _in_trio() -> bool:
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return False
    return True


__all__ = ["ChainAPI", "Checked", "ConsensusDriver", "DriverConfig", "Step", "Verdict"]
