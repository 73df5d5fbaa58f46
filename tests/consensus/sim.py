"""Deterministic multi-node simulation of the pure core: fake network and clock, one seed.

Run one seed: ``python -m tests.consensus.sim --seed N [-v]``.

Everything random comes from ``random.Random(seed)``: the validator powers (4 to 7 nodes),
which validators are byzantine (power < 1/3 of the total), the global stabilization time
(GST), and every delay, drop and duplicate. Before GST the network drops, duplicates and
delays messages a lot; after GST it only delays (up to ``delta_ms``, so it reorders) and
duplicates. The simulated driver does what ``docs/consensus.md`` asks of the real one:
it signs and feeds back its own messages, keeps messages of the next height until it gets
there, and gossips: every ``gossip_ms`` an honest node sends each honest peer at its height
the votes and proposals of that height the peer lacks (own and relayed ones, like CometBFT's
reactor, which learns what peers have from their HasVote/NewRoundStep messages; here the
node looks at the peer's core state), and a peer that is behind gets the commits (proposal
and precommits) of up to ``SYNC_BATCH`` heights from its own on, as block sync would; it
feeds each to its core when it reaches that height. That is the paper's gossip property: a
message an honest node has reaches every honest node within ``gossip_ms + delta_ms`` of GST.

Byzantine validators run the honest core but equivocate: their votes go out with a
conflicting twin (nil or another value) to part of the peers, and as proposers they send
different proposals (one may be invalid) to different peers.

Checked: safety (no two honest nodes decide different values at a height), no honest
node ever signs two different votes for one height/round/type, evidence only ever accuses
byzantine validators, and liveness (every honest node decides ``heights_after_gst``
heights beyond the highest height any honest node was at when GST came, before
``liveness_bound_ms`` of simulated time past GST).
"""

from __future__ import annotations

import argparse
import heapq
import random
import sys
from dataclasses import dataclass, field, replace

from consensus.core import (
    BroadcastProposal,
    BroadcastVote,
    Decide,
    Effect,
    Event,
    NewHeight,
    Proposal,
    ProposalReceived,
    RecordEvidence,
    RequestValidity,
    RequestValue,
    ScheduleTimeout,
    State,
    Step,
    TimeoutConfig,
    TimeoutFired,
    ValidatorSet,
    ValidityVerdict,
    ValueReady,
    Vote,
    VoteReceived,
    VoteType,
    initial_state,
    step,
)

__all__ = ["SimConfig", "SimResult", "make_config", "reproduce_command", "run_seed", "simulate"]

# Event kinds in the queue
_DELIVER, _LOCAL, _TIMER, _GOSSIP, _CERTS = range(5)
SYNC_BATCH = 32  # commits sent at once to a peer that is behind

_Cert = tuple[Proposal, tuple[Vote, ...]]


@dataclass(frozen=True)
class SimConfig:
    seed: int
    powers: tuple[int, ...]
    byzantine: frozenset[int]
    gst_ms: int
    # "split": the byzantine validators agree on a partition of the others per height and
    # round; an equivocating proposer sends one value to each side and every byzantine vote
    # backs each side's value on that side (two polkas, each seen first where it can win).
    # "amplify": every peer gets both votes, the twin backing another proposed value, so the
    # byzantine power props up every competing value everywhere.
    byzantine_mode: str = "split"
    pre_gst_max_delay_ms: int = 300
    pre_gst_drop: float = 0.25
    dup_prob: float = 0.1
    delta_ms: int = 40  # max one-way delay after GST
    gossip_ms: int = 100
    timeout_commit_ms: int = 10
    heights_after_gst: int = 3
    liveness_bound_ms: int = 10_000
    max_steps: int = 300_000
    timeouts: TimeoutConfig = field(default_factory=TimeoutConfig)


def make_config(seed: int) -> SimConfig:
    """Draw a scenario from the seed (4 to 7 validators, byzantine power < 1/3)."""
    rng = random.Random(seed)
    n = rng.randint(4, 7)
    powers = tuple(rng.choice((1, 1, 2, 3, 5, 8, 10)) for _ in range(n))
    total = sum(powers)
    byzantine: set[int] = set()
    want = rng.randint(0, n // 3 + 1)
    for i in rng.sample(range(n), n):
        if len(byzantine) >= want:
            break
        if 3 * (sum(powers[j] for j in byzantine) + powers[i]) < total:
            byzantine.add(i)
    propose = rng.choice((60, 150, 300))
    vote = rng.choice((40, 80, 150))
    delta = rng.choice((20, 50))
    timeouts = TimeoutConfig(propose, delta, vote, delta, vote, delta)
    return SimConfig(
        seed=seed,
        powers=powers,
        byzantine=frozenset(byzantine),
        gst_ms=rng.choice((0, rng.randint(0, 800), rng.randint(0, 3000))),
        byzantine_mode=rng.choice(("split", "amplify")),
        pre_gst_max_delay_ms=rng.choice((100, 300, 800)),
        pre_gst_drop=rng.choice((0.1, 0.3, 0.5)),
        delta_ms=rng.choice((10, 40, 80)),
        gossip_ms=rng.choice((50, 100, 200)),
        timeouts=timeouts,
    )


def reproduce_command(seed: int) -> str:
    return f"python -m tests.consensus.sim --seed {seed} -v"


@dataclass
class SimResult:
    seed: int
    ok: bool
    reason: str
    steps: int
    sim_time_ms: int
    decided: dict[int, bytes]  # height -> value decided by honest nodes
    evidence: int  # RecordEvidence effects seen by honest nodes

    def summary(self) -> str:
        status = "ok" if self.ok else f"FAILED: {self.reason}"
        return (
            f"seed {self.seed}: {status}; {len(self.decided)} heights decided, "
            f"{self.steps} core steps, {self.sim_time_ms} ms simulated, "
            f"{self.evidence} evidence records"
        )


class _Failure(Exception):
    pass


def _address(i: int) -> bytes:
    return b"val-%02d" % i


def _sign(msg: Vote | Proposal, signer: bytes) -> Vote | Proposal:
    return replace(msg, signature=b"sig:" + signer)


class _Node:
    __slots__ = ("index", "address", "byzantine", "state", "future", "certs", "synced", "signed")

    def __init__(self, index: int, byzantine: bool, config: TimeoutConfig) -> None:
        self.index = index
        self.address = _address(index)
        self.byzantine = byzantine
        self.state: State = initial_state(self.address, config)
        self.future: list[Vote | Proposal] = []  # messages of the next height
        self.certs: dict[int, _Cert] = {}  # commits of the heights this node decided
        self.synced: dict[int, _Cert] = {}  # commits received for heights not reached yet
        self.signed: dict[tuple[int, int, int], bytes | None] = {}  # (h, r, type) -> value


class Simulation:
    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed * 7919 + 17)
        self.now = 0
        self.seq = 0
        self.queue: list[tuple[int, int, int, int, object]] = []
        self.nodes = [_Node(i, i in cfg.byzantine, cfg.timeouts) for i in range(len(cfg.powers))]
        self.honest = [n for n in self.nodes if not n.byzantine]
        self.valsets: dict[int, ValidatorSet] = {
            1: ValidatorSet.genesis((_address(i), p) for i, p in enumerate(cfg.powers))
        }
        self.decided: dict[int, bytes] = {}
        self.decided_by: dict[int, int] = {}  # height -> number of honest nodes decided
        self.steps = 0
        self.evidence = 0
        self.target: int | None = None  # height every honest node must decide (set at GST)
        self.partitions: dict[tuple[int, int], frozenset[int]] = {}
        self.split_values: dict[tuple[int, int], tuple[bytes, bytes]] = {}

    # ------------------------------------------------------------ queue and network

    def _push(self, at: int, kind: int, node: int, payload: object) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (at, self.seq, kind, node, payload))

    def _send(self, src: int, dst: int, kind: int, payload: object) -> None:
        rng = self.rng
        before_gst = self.now < self.cfg.gst_ms
        if before_gst and rng.random() < self.cfg.pre_gst_drop:
            return
        max_delay = self.cfg.pre_gst_max_delay_ms if before_gst else self.cfg.delta_ms
        self._push(self.now + rng.randint(1, max_delay), kind, dst, payload)
        if rng.random() < self.cfg.dup_prob:
            self._push(self.now + rng.randint(1, max_delay), kind, dst, payload)

    def _broadcast(self, src: int, msg: Vote | Proposal) -> None:
        for j in range(len(self.nodes)):
            if j != src:
                self._send(src, j, _DELIVER, msg)

    def _valset(self, height: int) -> ValidatorSet:
        vs = self.valsets.get(height)
        if vs is None:
            vs = self._valset(height - 1).next_height()
            self.valsets[height] = vs
        return vs

    # ------------------------------------------------------------ one node's driver

    def _feed(self, node: _Node, event: Event) -> None:
        pending = [event]
        while pending:
            ev = pending.pop(0)
            node.state, effects = step(node.state, ev)
            self.steps += 1
            for effect in effects:
                self._effect(node, effect, pending)

    def _effect(self, node: _Node, effect: Effect, pending: list[Event]) -> None:
        if isinstance(effect, BroadcastVote):
            vote = effect.vote
            signed = _sign(vote, node.address)
            assert isinstance(signed, Vote)
            if not node.byzantine:
                key = (vote.height, vote.round, int(vote.type))
                if key in node.signed and node.signed[key] != vote.value_id:
                    raise _Failure(f"honest node {node.index} double-signed {key}")
                node.signed[key] = vote.value_id
            pending.append(VoteReceived(signed))
            if node.byzantine:
                self._equivocate_vote(node, signed)
            else:
                self._broadcast(node.index, signed)
        elif isinstance(effect, BroadcastProposal):
            signed_p = _sign(effect.proposal, node.address)
            assert isinstance(signed_p, Proposal)
            pending.append(ProposalReceived(signed_p))
            if node.byzantine:
                # its own core learns the twin too, so its twin votes can back it
                pending.append(ProposalReceived(self._equivocate_proposal(node, signed_p)))
            else:
                self._broadcast(node.index, signed_p)
        elif isinstance(effect, ScheduleTimeout):
            timer = TimeoutFired(effect.kind, effect.height, effect.round)
            self._push(self.now + effect.duration_ms, _TIMER, node.index, timer)
        elif isinstance(effect, RequestValue):
            value = b"v%d.%d.%d" % (effect.height, effect.round, node.index)
            answer = ValueReady(effect.height, effect.round, value)
            self._push(self.now + 1, _LOCAL, node.index, answer)
        elif isinstance(effect, RequestValidity):
            ok = not effect.value_id.startswith(b"bad")
            verdict = ValidityVerdict(effect.height, effect.round, effect.value_id, ok)
            self._push(self.now + 1, _LOCAL, node.index, verdict)
        elif isinstance(effect, Decide):
            self._on_decide(node, effect)
        elif isinstance(effect, RecordEvidence):
            if not node.byzantine:
                self.evidence += 1
                accused = self.nodes[int(effect.vote_a.validator[4:])]
                if not accused.byzantine:
                    raise _Failure(f"evidence against honest node {accused.index}")

    def _side_one(self, height: int, round: int) -> frozenset[int]:
        """The byzantine validators' agreed partition for a height and round."""
        key = (height, round)
        side = self.partitions.get(key)
        if side is None:
            others = list(range(len(self.nodes)))
            self.rng.shuffle(others)
            side = frozenset(others[: len(others) // 2])
            self.partitions[key] = side
        return side

    def _equivocate_vote(self, node: _Node, vote: Vote) -> None:
        pair = self.split_values.get((vote.height, vote.round))
        if pair is not None and self.cfg.byzantine_mode == "split":
            first = replace(vote, value_id=pair[0])
            second = replace(vote, value_id=pair[1])
        else:
            rivals = [
                p.value_id
                for p in node.state.proposals.get(vote.round, ())
                if p.value_id != vote.value_id
            ]
            if rivals:
                twin_value: bytes | None = self.rng.choice(rivals)
            elif vote.value_id is not None:
                twin_value = None
            else:
                twin_value = b"v%d.%d.evil" % (vote.height, vote.round)
            first, second = vote, replace(vote, value_id=twin_value)
        side = self._side_one(vote.height, vote.round)
        amplify = self.cfg.byzantine_mode == "amplify"
        for j in range(len(self.nodes)):
            if j == node.index or self.nodes[j].byzantine:
                continue
            if amplify:
                self._send(node.index, j, _DELIVER, first)
                self._send(node.index, j, _DELIVER, second)
            else:
                self._send(node.index, j, _DELIVER, first if j in side else second)

    def _equivocate_proposal(self, node: _Node, p: Proposal) -> Proposal:
        alt = b"bad" if self.rng.random() < 0.3 else b"v"
        twin = replace(p, value_id=alt + b"%d.%d.alt%d" % (p.height, p.round, node.index))
        self.split_values[(p.height, p.round)] = (p.value_id, twin.value_id)
        side = self._side_one(p.height, p.round)
        for j in range(len(self.nodes)):
            if j != node.index:
                self._send(node.index, j, _DELIVER, p if j in side else twin)
        return twin

    def _on_decide(self, node: _Node, d: Decide) -> None:
        node.certs[d.height] = (d.proposal, d.precommits)
        if not node.byzantine:
            first = self.decided.setdefault(d.height, d.value_id)
            if first != d.value_id:
                raise _Failure(
                    f"safety: height {d.height} decided {first!r} and {d.value_id!r} "
                    f"(node {node.index})"
                )
            self.decided_by[d.height] = self.decided_by.get(d.height, 0) + 1
        self._push(
            self.now + self.cfg.timeout_commit_ms,
            _LOCAL,
            node.index,
            NewHeight(d.height + 1, self._valset(d.height + 1)),
        )

    def _deliver(self, node: _Node, msg: Vote | Proposal) -> None:
        height = node.state.height
        if msg.height == height:
            event: Event = VoteReceived(msg) if isinstance(msg, Vote) else ProposalReceived(msg)
            self._feed(node, event)
        elif msg.height == height + 1 and len(node.future) < 4096:
            node.future.append(msg)

    def _new_height(self, node: _Node, event: NewHeight) -> None:
        future, node.future = node.future, []
        self._feed(node, event)
        cert = node.synced.pop(event.height, None)
        if cert is not None:
            self._apply_cert(node, cert)
        for msg in future:
            self._deliver(node, msg)

    def _apply_cert(self, node: _Node, cert: _Cert) -> None:
        proposal, precommits = cert
        for vote in precommits:  # first, so that L55 brings the core to the commit round
            self._feed(node, VoteReceived(vote))
        self._feed(node, ProposalReceived(proposal))

    def _on_certs(self, node: _Node, certs: tuple[_Cert, ...]) -> None:
        height = node.state.height
        for cert in certs:
            h = cert[0].height
            if h == height and node.state.step is not Step.COMMIT:
                self._apply_cert(node, cert)
            elif h > height and len(node.synced) < 4 * SYNC_BATCH:
                node.synced.setdefault(h, cert)

    def _gossip(self, node: _Node) -> None:
        """Send each honest peer what it lacks of this node's height (or the commit it needs)."""
        mine = node.state
        keeper = mine.votes
        if keeper is None:
            return
        for peer in self.honest:
            if peer is node:
                continue
            theirs = peer.state
            if theirs.height < mine.height:
                last = min(mine.height, theirs.height + SYNC_BATCH)
                certs = tuple(node.certs[h] for h in range(theirs.height, last) if h in node.certs)
                if certs:
                    self._send(node.index, peer.index, _CERTS, certs)
                continue
            if theirs.height != mine.height or theirs.votes is None:
                continue
            their_rounds = theirs.votes.rounds
            for round, rv in keeper.rounds.items():
                their_rv = their_rounds.get(round)
                for vote_type in (VoteType.PREVOTE, VoteType.PRECOMMIT):
                    have = their_rv.tally(vote_type).votes if their_rv is not None else {}
                    for validator, votes in rv.tally(vote_type).votes.items():
                        got = have.get(validator, ())
                        for vote in votes:
                            if not any(g.value_id == vote.value_id for g in got):
                                self._send(node.index, peer.index, _DELIVER, vote)
            for round, proposals in mine.proposals.items():
                known = theirs.proposals.get(round, ())
                for p in proposals:
                    if p not in known:
                        self._send(node.index, peer.index, _DELIVER, p)

    # ------------------------------------------------------------ main loop

    def run(self) -> SimResult:
        try:
            reason = self._run()
            ok = reason == ""
        except _Failure as e:
            ok, reason = False, str(e)
        return SimResult(
            self.cfg.seed, ok, reason, self.steps, self.now, dict(self.decided), self.evidence
        )

    def _run(self) -> str:
        cfg = self.cfg
        for node in self.nodes:
            self._push(0, _LOCAL, node.index, NewHeight(1, self._valset(1)))
            if not node.byzantine:  # byzantine nodes never relay
                self._push(self.rng.randint(1, cfg.gossip_ms), _GOSSIP, node.index, None)
        deadline = cfg.gst_ms + cfg.liveness_bound_ms
        while self.queue:
            at, _, kind, index, payload = heapq.heappop(self.queue)
            if self.target is None and at >= cfg.gst_ms:
                self.target = max(n.state.height for n in self.honest) + cfg.heights_after_gst
            if self.target is not None and self.decided_by.get(self.target, 0) == len(self.honest):
                return ""
            if at > deadline:
                return self._liveness_failure(deadline)
            if self.steps > cfg.max_steps:
                return f"liveness: more than {cfg.max_steps} core steps"
            self.now = at
            node = self.nodes[index]
            if kind == _DELIVER:
                assert isinstance(payload, (Vote, Proposal))
                self._deliver(node, payload)
            elif kind == _LOCAL:
                if isinstance(payload, NewHeight):
                    if payload.height == node.state.height + 1:
                        self._new_height(node, payload)
                else:
                    assert isinstance(payload, (ValueReady, ValidityVerdict))
                    self._feed(node, payload)
            elif kind == _TIMER:
                assert isinstance(payload, TimeoutFired)
                self._feed(node, payload)
            elif kind == _GOSSIP:
                self._gossip(node)
                self._push(self.now + cfg.gossip_ms, _GOSSIP, index, None)
            elif kind == _CERTS:
                assert isinstance(payload, tuple)
                self._on_certs(node, payload)
        return "event queue ran dry"

    def _liveness_failure(self, deadline: int) -> str:
        heights = {n.index: (n.state.height, n.state.round, n.state.step.name) for n in self.honest}
        return (
            f"liveness: honest nodes did not all decide height {self.target} "
            f"by {deadline} ms (GST {self.cfg.gst_ms} ms); (height, round, step): {heights}"
        )


def simulate(cfg: SimConfig) -> SimResult:
    return Simulation(cfg).run()


def run_seed(seed: int) -> SimResult:
    return simulate(make_config(seed))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--count", type=int, default=1, help="run seeds seed..seed+count-1")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    failed = 0
    for seed in range(args.seed, args.seed + args.count):
        cfg = make_config(seed)
        result = simulate(cfg)
        if args.verbose:
            print(f"seed {seed}: {cfg}")
        if args.verbose or not result.ok:
            print(result.summary())
        failed += not result.ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
