"""Algorithm 1 of Buchman, Kwon, Milosevic (2018) as one pure function: ``step(state, event)``.

Every transition of the paper is in this file, tagged with its line numbers (``# L22``).
An event first updates the message log (votes, proposals, verdicts) or fires a timeout or
value rule directly; then :func:`_advance` applies the ``upon`` rules that became enabled,
one at a time, until none is: each returned state is a fixpoint of the rules, so an event
that changes nothing (a duplicate) needs no rule check at all.

Deviations from the paper, all as in CometBFT/malachite:

* ``valid(v)`` is asynchronous: a proposal is acted on only once ``ValidityVerdict`` (or our
  own ``ValueReady``) gave its verdict; until then the rules that need it wait;
* the proposer also schedules ``timeoutPropose`` (L21 is for everyone), so a driver that
  is slow to build a block or fails to sign cannot stall the round;
* the node's own messages count when the driver feeds them back signed;
* after a decision the core waits in ``Step.COMMIT`` for the driver's ``NewHeight`` instead
  of starting height ``h + 1`` itself (L52-L54), so the driver can commit the block first;
* proposals are taken up to one round ahead of ``round_p``; later ones are dropped (the
  proposer re-broadcasts), so no message can make the core compute far-away proposers;
* messages of other heights are ignored: buffering the next height is the driver's job.

Vote counting (an equivocator counts toward each value it voted for) is the vote keeper's;
see ``votekeeper.py`` and ADR 0202.
"""

from __future__ import annotations

from consensus.core.effects import (
    BroadcastProposal,
    BroadcastVote,
    Decide,
    Effect,
    RecordEvidence,
    RequestValidity,
    RequestValue,
    ScheduleTimeout,
)
from consensus.core.events import (
    Event,
    NewHeight,
    ProposalReceived,
    TimeoutFired,
    ValidityVerdict,
    ValueReady,
    VoteReceived,
)
from consensus.core.proposer import ProposerSelector
from consensus.core.state import State
from consensus.core.types import NIL_ROUND, Proposal, Step, TimeoutKind, Vote, VoteType
from consensus.core.votekeeper import AddResult, VoteKeeper

__all__ = ["step"]

PROPOSAL_ROUNDS_AHEAD = 1


def step(state: State, event: Event) -> tuple[State, list[Effect]]:
    """Apply one event; return the next state and the effects for the driver, in order."""
    out: list[Effect] = []
    if isinstance(event, NewHeight):
        return _advance(_new_height(state, event, out), out), out
    if state.step is Step.UNSTARTED or state.step is Step.COMMIT:
        return state, out  # nothing to do before a height starts or after it decided
    if isinstance(event, VoteReceived):
        nxt = _on_vote(state, event.vote, out)
    elif isinstance(event, ProposalReceived):
        nxt = _on_proposal(state, event.proposal, out)
    elif isinstance(event, TimeoutFired):
        nxt = _on_timeout(state, event, out)
    elif isinstance(event, ValidityVerdict):
        nxt = _on_verdict(state, event)
    elif isinstance(event, ValueReady):
        nxt = _on_value_ready(state, event, out)
    else:
        raise TypeError(f"not a consensus event: {type(event).__name__}")
    if nxt is state:
        return state, out
    return _advance(nxt, out), out


# ------------------------------------------------------------------ heights and rounds


def _new_height(state: State, event: NewHeight, out: list[Effect]) -> State:
    if type(event.height) is not int or event.height <= state.height:
        raise ValueError(f"NewHeight({event.height}) after height {state.height}")
    validators = event.validators
    # L53: reset locked/valid value and round and empty the message log.
    fresh = State(
        address=state.address,
        config=state.config,
        height=event.height,
        is_validator=state.address is not None and state.address in validators,
        proposers=ProposerSelector(validators),
        votes=VoteKeeper.empty(event.height, validators),
    )
    return _start_round(fresh, 0, out)  # L10, L54


def _start_round(state: State, round: int, out: list[Effect]) -> State:
    # L11-L13
    s = state._replace(
        round=round,
        step=Step.PROPOSE,
        proposed=False,
        prevote_timeout_scheduled=False,
        precommit_timeout_scheduled=False,
        polka_handled=False,
    )
    if s.is_validator and s.proposer(round) == s.address:  # L14
        if s.valid_value is not None:  # L15
            proposal = Proposal(s.height, round, s.valid_value, s.valid_round, s.address or b"")
            out.append(BroadcastProposal(proposal))  # L16, L19
            s = s._replace(proposed=True)
        else:
            out.append(RequestValue(s.height, round))  # L18: getValue(), answered by ValueReady
    # L21 (the proposer too: see the module docstring)
    out.append(_timeout(s, TimeoutKind.PROPOSE))
    return s


def _timeout(s: State, kind: TimeoutKind) -> ScheduleTimeout:
    return ScheduleTimeout(kind, s.height, s.round, s.config.duration_ms(kind, s.round))


# ------------------------------------------------------------------ message log


def _on_vote(s: State, vote: Vote, out: list[Effect]) -> State:
    assert s.votes is not None
    if vote.type != VoteType.PREVOTE and vote.type != VoteType.PRECOMMIT:
        return s
    keeper, result, earlier = s.votes.add(vote)
    if result is AddResult.ADDED:
        return s._replace(votes=keeper)
    if result is AddResult.CONFLICT:
        assert earlier is not None
        out.append(RecordEvidence(earlier, vote))
        return s._replace(votes=keeper)
    return s  # duplicate or not ours to count


def _on_proposal(s: State, p: Proposal, out: list[Effect]) -> State:
    if (
        p.height != s.height
        or type(p.round) is not int
        or not 0 <= p.round <= s.round + PROPOSAL_ROUNDS_AHEAD
        or type(p.pol_round) is not int
        or not (p.pol_round == NIL_ROUND or 0 <= p.pol_round < p.round)
        or not isinstance(p.value_id, bytes)
        or p.proposer != s.proposer(p.round)  # "from proposer(h_p, r)" (L22, L28, L36, L49)
    ):
        return s
    known = s.proposals.get(p.round, ())
    for q in known:
        if q.value_id == p.value_id and q.pol_round == p.pol_round:
            return s  # duplicate
    # A proposer may equivocate: keep every proposal it signed for the round, because the
    # one the others prevote for is the one we need for L36/L49.
    proposals = dict(s.proposals)
    proposals[p.round] = (*known, p)
    s = s._replace(proposals=proposals)
    if p.value_id not in s.verdicts and p.value_id not in s.validity_requested:
        out.append(RequestValidity(s.height, p.round, p.value_id))
        s = s._replace(validity_requested=s.validity_requested | {p.value_id})
    return s


def _on_verdict(s: State, event: ValidityVerdict) -> State:
    if event.height != s.height or event.value_id in s.verdicts:
        return s  # valid(v) is a function of v: the first verdict stands
    verdicts = dict(s.verdicts)
    verdicts[event.value_id] = bool(event.valid)
    return s._replace(verdicts=verdicts)


def _on_value_ready(s: State, event: ValueReady, out: list[Effect]) -> State:
    # L18-L19: the value asked for by getValue() arrives; propose it unless the round moved
    # on, the propose step ended, or a proposal is already out.
    if (
        event.height != s.height
        or event.round != s.round
        or s.step is not Step.PROPOSE
        or s.proposed
        or not s.is_validator
        or s.proposer() != s.address
        or not isinstance(event.value_id, bytes)
    ):
        return s
    proposal = Proposal(s.height, s.round, event.value_id, NIL_ROUND, s.address or b"")
    out.append(BroadcastProposal(proposal))  # L19
    verdicts = dict(s.verdicts)
    verdicts[event.value_id] = True  # we built it: valid(v) by construction
    return s._replace(proposed=True, verdicts=verdicts)


# ------------------------------------------------------------------ timeouts


def _on_timeout(s: State, event: TimeoutFired, out: list[Effect]) -> State:
    if event.height != s.height or event.round != s.round:
        return s
    if event.kind == TimeoutKind.PROPOSE:
        if s.step is Step.PROPOSE:  # L57-L58
            return _prevote(s, None, out)  # L59-L60
        return s
    if event.kind == TimeoutKind.PREVOTE:
        if s.step is Step.PREVOTE:  # L61-L62
            return _precommit(s, None, out)  # L63-L64
        return s
    if event.kind == TimeoutKind.PRECOMMIT:  # L65-L66
        return _start_round(s, s.round + 1, out)  # L67
    return s


# ------------------------------------------------------------------ votes we cast


def _prevote(s: State, value_id: bytes | None, out: list[Effect]) -> State:
    if s.is_validator:
        assert s.address is not None
        out.append(BroadcastVote(Vote(VoteType.PREVOTE, s.height, s.round, value_id, s.address)))
    return s._replace(step=Step.PREVOTE)


def _precommit(s: State, value_id: bytes | None, out: list[Effect]) -> State:
    if s.is_validator:
        assert s.address is not None
        vote = Vote(VoteType.PRECOMMIT, s.height, s.round, value_id, s.address)
        out.append(BroadcastVote(vote))
    return s._replace(step=Step.PRECOMMIT)


# ------------------------------------------------------------------ upon rules


def _find_proposal(s: State, round: int, value_id: bytes) -> Proposal | None:
    for p in s.proposals.get(round, ()):
        if p.value_id == value_id:
            return p
    return None


def _advance(s: State, out: list[Effect]) -> State:
    """Apply enabled ``upon`` rules until none is; L49 first (deciding ends the height)."""
    while True:
        if s.step is Step.COMMIT:
            return s
        votes = s.votes
        assert votes is not None

        # L49: ⟨PROPOSAL, h_p, r, v, ∗⟩ from proposer(h_p, r) AND 2f+1 ⟨PRECOMMIT, h_p, r, id(v)⟩
        # while decision_p[h_p] = nil, for any round r.
        for round, value_id in votes.commit_quorums:
            proposal = _find_proposal(s, round, value_id)
            if proposal is not None and s.verdicts.get(value_id) is True:  # L50
                precommits = tuple(
                    sorted(
                        votes.tally(round, VoteType.PRECOMMIT).votes_for(value_id),
                        key=lambda v: v.validator,
                    )
                )
                out.append(Decide(s.height, round, value_id, proposal, precommits))  # L51
                return s._replace(step=Step.COMMIT, decision=value_id)  # L52-L54: driver

        # L55: f+1 ⟨∗, h_p, round, ∗, ∗⟩ with round > round_p -> StartRound(round) (L56)
        skip = votes.skip_round(s.round)
        if skip is not None:
            s = _start_round(s, skip, out)
            continue

        r = s.round
        if s.step is Step.PROPOSE:
            nxt = _propose_rules(s, out)
            if nxt is not None:
                s = nxt
                continue
        else:
            # L36: ⟨PROPOSAL, h_p, round_p, v, ∗⟩ from proposer AND 2f+1 ⟨PREVOTE, h_p,
            # round_p, id(v)⟩ while valid(v) ∧ step_p ≥ prevote, for the first time
            if not s.polka_handled:
                polka = votes.quorum_value(r, VoteType.PREVOTE)
                if (
                    polka is not None
                    and s.verdicts.get(polka) is True
                    and _find_proposal(s, r, polka) is not None
                ):
                    s = s._replace(polka_handled=True)
                    if s.step is Step.PREVOTE:  # L37
                        s = s._replace(locked_value=polka, locked_round=r)  # L38-L39
                        s = _precommit(s, polka, out)  # L40-L41
                    s = s._replace(valid_value=polka, valid_round=r)  # L42-L43
                    continue
            if s.step is Step.PREVOTE:
                # L34: 2f+1 ⟨PREVOTE, h_p, round_p, ∗⟩ while step_p = prevote, first time
                if not s.prevote_timeout_scheduled and votes.has_quorum_any(r, VoteType.PREVOTE):
                    out.append(_timeout(s, TimeoutKind.PREVOTE))  # L35
                    s = s._replace(prevote_timeout_scheduled=True)
                    continue
                # L44: 2f+1 ⟨PREVOTE, h_p, round_p, nil⟩ while step_p = prevote
                if votes.has_quorum_for(r, VoteType.PREVOTE, None):
                    s = _precommit(s, None, out)  # L45-L46
                    continue

        # L47: 2f+1 ⟨PRECOMMIT, h_p, round_p, ∗⟩ for the first time
        if not s.precommit_timeout_scheduled and votes.has_quorum_any(r, VoteType.PRECOMMIT):
            out.append(_timeout(s, TimeoutKind.PRECOMMIT))  # L48
            s = s._replace(precommit_timeout_scheduled=True)
            continue
        return s


def _propose_rules(s: State, out: list[Effect]) -> State | None:
    """L22 and L28, while step_p = propose; ``None`` when neither is enabled."""
    votes = s.votes
    assert votes is not None
    for p in s.proposals.get(s.round, ()):
        valid = s.verdicts.get(p.value_id)
        if valid is None:
            continue  # valid(v) not known yet: wait for the verdict (or timeoutPropose)
        if p.pol_round == NIL_ROUND:
            # L22: ⟨PROPOSAL, h_p, round_p, v, −1⟩ from proposer(h_p, round_p)
            if valid and (s.locked_round == NIL_ROUND or s.locked_value == p.value_id):  # L23
                return _prevote(s, p.value_id, out)  # L24, L27
            return _prevote(s, None, out)  # L26, L27
        # L28: ⟨PROPOSAL, h_p, round_p, v, vr⟩ AND 2f+1 ⟨PREVOTE, h_p, vr, id(v)⟩,
        # 0 <= vr < round_p (checked when the proposal was accepted)
        if votes.has_quorum_for(p.pol_round, VoteType.PREVOTE, p.value_id):
            if valid and (s.locked_round <= p.pol_round or s.locked_value == p.value_id):  # L29
                return _prevote(s, p.value_id, out)  # L30, L33
            return _prevote(s, None, out)  # L32, L33
    return None
