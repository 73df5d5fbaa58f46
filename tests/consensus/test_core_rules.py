"""Table-driven tests of the pure core: one or more tables per rule of Algorithm 1.

Each table is a list of (description, event, expected effects, expected state) steps run
against one process, in the style of malachite's driver tests. Unless a table says otherwise,
four validators of power 1 (total 4: a quorum is 3, f + 1 is 2) and we are ``v4``; height 1
proposers by round are v1, v2, v3, v4 (checked in ``test_proposer_order_used_by_tables``).
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from consensus.core import (
    NIL_ROUND,
    BroadcastProposal,
    BroadcastVote,
    Decide,
    NewHeight,
    Proposal,
    ProposerSelector,
    RecordEvidence,
    RequestValidity,
    RequestValue,
    ScheduleTimeout,
    Step,
    TimeoutKind,
    ValidatorSet,
    ValidityVerdict,
    ValueReady,
    initial_state,
    step,
)
from tests.consensus.core_helpers import (
    CONFIG,
    Expect,
    TestStep,
    own,
    precommit,
    prevote,
    proposal,
    recv,
    run_steps,
    timeout,
)

V1, V2, V3, V4 = b"v1", b"v2", b"v3", b"v4"
VALS = ValidatorSet.genesis([(V1, 1), (V2, 1), (V3, 1), (V4, 1)])
A, B = b"block-A", b"block-B"
PROPOSE, PREVOTE, PRECOMMIT = TimeoutKind.PROPOSE, TimeoutKind.PREVOTE, TimeoutKind.PRECOMMIT


def st(kind: TimeoutKind, round: int = 0, height: int = 1) -> ScheduleTimeout:
    return ScheduleTimeout(kind, height, round, CONFIG.duration_ms(kind, round))


def bv_prevote(value: bytes | None, round: int = 0, me: bytes = V4) -> BroadcastVote:
    return BroadcastVote(own(prevote(me, value, round)))


def bv_precommit(value: bytes | None, round: int = 0, me: bytes = V4) -> BroadcastVote:
    return BroadcastVote(own(precommit(me, value, round)))


def valid(value: bytes, round: int = 0, ok: bool = True) -> ValidityVerdict:
    return ValidityVerdict(1, round, value, ok)


START = TestStep(
    "L10/L21: start height 1, v1 proposes round 0, we wait for its proposal",
    NewHeight(1, VALS),
    [st(PROPOSE)],
    Expect(0, Step.PROPOSE),
)


def lock_on_a_in_round_0() -> list[TestStep]:
    """Prefix shared by several tables: we prevote A, see a polka for A and lock on it."""
    return [
        START,
        TestStep("v1 proposes A: ask ProcessProposal", recv(proposal(V1, A)), [RequestValidity(1, 0, A)]),
        TestStep("L22-L24: A is valid, not locked: prevote A", valid(A), [bv_prevote(A)],
                 Expect(0, Step.PREVOTE)),
        TestStep("v1 prevotes A", recv(prevote(V1, A))),
        TestStep("v2 prevotes A", recv(prevote(V2, A))),
        TestStep(
            "L36-L43: our own prevote completes the polka: lock A, precommit A",
            recv(prevote(V4, A)),
            [bv_precommit(A)],
            Expect(0, Step.PRECOMMIT, locked=(A, 0), valid=(A, 0)),
        ),
    ]  # fmt: skip


def round_0_ends_without_decision() -> list[TestStep]:
    return [
        TestStep("v1 precommits nil", recv(precommit(V1, None))),
        TestStep("v2 precommits nil", recv(precommit(V2, None))),
        TestStep("L47: 2f+1 precommits of any kind: schedule timeoutPrecommit",
                 recv(precommit(V4, A)), [st(PRECOMMIT)]),
        TestStep("L65-L67: timeoutPrecommit: start round 1 (v2 proposes)", timeout(PRECOMMIT),
                 [st(PROPOSE, 1)], Expect(1, Step.PROPOSE, locked=(A, 0), valid=(A, 0))),
    ]  # fmt: skip


TABLES: dict[str, tuple[bytes | None, ValidatorSet, list[TestStep]]] = {}

# ---------------------------------------------------------------- L11-L21: StartRound

TABLES["L14-L19 proposer without valid value asks for a value and proposes it"] = (
    V1,
    VALS,
    [
        TestStep("L14/L18: we propose round 0: getValue() and timeoutPropose",
                 NewHeight(1, VALS), [RequestValue(1, 0), st(PROPOSE)], Expect(0, Step.PROPOSE)),
        TestStep("a value for another round is ignored", ValueReady(1, 1, A)),
        TestStep("L19: the value arrives: broadcast the proposal", ValueReady(1, 0, A),
                 [BroadcastProposal(Proposal(1, 0, A, NIL_ROUND, V1))]),
        TestStep("a second value is ignored: the proposal is out", ValueReady(1, 0, B)),
        TestStep("L22-L24: our proposal comes back signed; we built it, so no ProcessProposal",
                 recv(proposal(V1, A)), [bv_prevote(A, me=V1)], Expect(0, Step.PREVOTE)),
    ],
)  # fmt: skip

TABLES["L14-L16 proposer with a valid value re-proposes it with its valid round"] = (
    V2,
    VALS,
    [
        TestStep("start: v1 proposes round 0", NewHeight(1, VALS), [st(PROPOSE)],
                 Expect(0, Step.PROPOSE)),
        TestStep("v1 proposes A", recv(proposal(V1, A)), [RequestValidity(1, 0, A)]),
        TestStep("L24: prevote A", valid(A), [bv_prevote(A, me=V2)], Expect(0, Step.PREVOTE)),
        TestStep("v1 prevotes A", recv(prevote(V1, A))),
        TestStep("v3 prevotes A", recv(prevote(V3, A))),
        TestStep("L36: polka for A: lock and precommit A", recv(prevote(V2, A)),
                 [bv_precommit(A, me=V2)], Expect(0, Step.PRECOMMIT, (A, 0), (A, 0))),
        TestStep("v1 precommits nil", recv(precommit(V1, None))),
        TestStep("v3 precommits nil", recv(precommit(V3, None))),
        TestStep("L47", recv(precommit(V2, A)), [st(PRECOMMIT)]),
        TestStep(
            "L15-L16/L19: round 1 is ours and validValue = A: propose A with vr = 0",
            timeout(PRECOMMIT),
            [BroadcastProposal(Proposal(1, 1, A, 0, V2)), st(PROPOSE, 1)],
            Expect(1, Step.PROPOSE, (A, 0), (A, 0)),
        ),
        TestStep("a late value is ignored: the proposal is already out", ValueReady(1, 1, B)),
        TestStep("L28-L30: our proposal back, polka for A in round 0 exists: prevote A",
                 recv(proposal(V2, A, round=1, pol_round=0)), [bv_prevote(A, 1, me=V2)],
                 Expect(1, Step.PREVOTE, (A, 0), (A, 0))),
    ],
)  # fmt: skip

# ---------------------------------------------------------------- L22-L27: prevote

TABLES["L22-L24 valid proposal, not locked: prevote it"] = (
    V4,
    VALS,
    [
        START,
        TestStep("a proposal from v1: ask for valid(v)", recv(proposal(V1, A)),
                 [RequestValidity(1, 0, A)]),
        TestStep("the same proposal again (gossip): nothing", recv(proposal(V1, A))),
        TestStep("a verdict for another height is ignored", ValidityVerdict(2, 0, A, True)),
        TestStep("L24: valid: prevote A", valid(A), [bv_prevote(A)], Expect(0, Step.PREVOTE)),
        TestStep("a second verdict changes nothing", valid(A, ok=False)),
    ],
)  # fmt: skip

TABLES["L22-L26 invalid proposal: prevote nil"] = (
    V4,
    VALS,
    [
        START,
        TestStep("v1 proposes A", recv(proposal(V1, A)), [RequestValidity(1, 0, A)]),
        TestStep("L26: ProcessProposal rejects A: prevote nil", valid(A, ok=False),
                 [bv_prevote(None)], Expect(0, Step.PREVOTE)),
    ],
)  # fmt: skip

TABLES["L22-L26 locked on A, proposal B without PoL: prevote nil"] = (
    V4,
    VALS,
    [
        *lock_on_a_in_round_0(),
        *round_0_ends_without_decision(),
        TestStep("v2 proposes B in round 1", recv(proposal(V2, B, round=1)),
                 [RequestValidity(1, 1, B)]),
        TestStep("L23/L26: B is valid but we are locked on A: prevote nil", valid(B, 1),
                 [bv_prevote(None, 1)], Expect(1, Step.PREVOTE, (A, 0), (A, 0))),
    ],
)  # fmt: skip

TABLES["L22-L24 locked on A, A proposed again without PoL: prevote A"] = (
    V4,
    VALS,
    [
        *lock_on_a_in_round_0(),
        *round_0_ends_without_decision(),
        TestStep("L23 (lockedValue = v): v2 proposes A, valid(A) known: prevote A",
                 recv(proposal(V2, A, round=1)), [bv_prevote(A, 1)],
                 Expect(1, Step.PREVOTE, (A, 0), (A, 0))),
    ],
)  # fmt: skip

TABLES["L22 ignores proposals not from proposer(h, r) and malformed ones"] = (
    V4,
    VALS,
    [
        START,
        TestStep("v2 is not round 0's proposer", recv(proposal(V2, A))),
        TestStep("wrong height", recv(proposal(V1, A, height=2))),
        TestStep("round too far ahead", recv(proposal(V1, A, round=5))),
        TestStep("pol_round not below round", recv(proposal(V1, A, pol_round=0))),
        TestStep("pol_round below -1", recv(proposal(V1, A, pol_round=-2))),
        TestStep("negative round", recv(proposal(V1, A, round=-1))),
        TestStep("L57: nothing valid arrived: timeoutPropose prevotes nil", timeout(PROPOSE),
                 [bv_prevote(None)], Expect(0, Step.PREVOTE)),
    ],
)  # fmt: skip

# ---------------------------------------------------------------- L28-L33: PoLC

TABLES["L28-L30 unlock on a higher PoLC"] = (
    V4,
    VALS,
    [
        *lock_on_a_in_round_0(),
        *round_0_ends_without_decision(),
        TestStep("v2 proposes B in round 1", recv(proposal(V2, B, round=1)),
                 [RequestValidity(1, 1, B)]),
        TestStep("L26: locked on A: prevote nil", valid(B, 1), [bv_prevote(None, 1)],
                 Expect(1, Step.PREVOTE, (A, 0), (A, 0))),
        TestStep("own prevote nil", recv(prevote(V4, None, 1))),
        TestStep("v1 prevotes B", recv(prevote(V1, B, 1))),
        TestStep("L34: 2f+1 prevotes of any kind: schedule timeoutPrevote",
                 recv(prevote(V2, B, 1)), [st(PREVOTE, 1)]),
        TestStep("L61-L64: timeoutPrevote: precommit nil", timeout(PREVOTE, 1),
                 [bv_precommit(None, 1)], Expect(1, Step.PRECOMMIT, (A, 0), (A, 0))),
        TestStep("L36/L42-L43: polka for B after our precommit: validValue = B, lock stays",
                 recv(prevote(V3, B, 1)), [], Expect(1, Step.PRECOMMIT, (A, 0), (B, 1))),
        TestStep("own precommit nil", recv(precommit(V4, None, 1))),
        TestStep("v1 precommits B", recv(precommit(V1, B, 1))),
        TestStep("L47", recv(precommit(V2, B, 1)), [st(PRECOMMIT, 1)]),
        TestStep("L65: round 2 (v3 proposes)", timeout(PRECOMMIT, 1), [st(PROPOSE, 2)],
                 Expect(2, Step.PROPOSE, (A, 0), (B, 1))),
        TestStep("L28-L30: B with vr = 1 >= lockedRound 0 and its polka: prevote B",
                 recv(proposal(V3, B, round=2, pol_round=1)), [bv_prevote(B, 2)],
                 Expect(2, Step.PREVOTE, (A, 0), (B, 1))),
    ],
)  # fmt: skip

TABLES["L28-L32 PoL older than our lock for another value: prevote nil"] = (
    V4,
    VALS,
    [
        START,
        TestStep("L57: no proposal: prevote nil", timeout(PROPOSE), [bv_prevote(None)],
                 Expect(0, Step.PREVOTE)),
        TestStep("own prevote nil", recv(prevote(V4, None))),
        TestStep("v1 prevotes B", recv(prevote(V1, B))),
        TestStep("L34", recv(prevote(V2, B)), [st(PREVOTE)]),
        TestStep("polka for B in round 0, but we never saw B's proposal", recv(prevote(V3, B))),
        TestStep("L61: precommit nil", timeout(PREVOTE), [bv_precommit(None)],
                 Expect(0, Step.PRECOMMIT)),
        TestStep("own precommit nil", recv(precommit(V4, None))),
        TestStep("v1 precommits nil", recv(precommit(V1, None))),
        TestStep("L47", recv(precommit(V2, None)), [st(PRECOMMIT)]),
        TestStep("L65: round 1", timeout(PRECOMMIT), [st(PROPOSE, 1)], Expect(1, Step.PROPOSE)),
        TestStep("v2 proposes A", recv(proposal(V2, A, round=1)), [RequestValidity(1, 1, A)]),
        TestStep("L24", valid(A, 1), [bv_prevote(A, 1)], Expect(1, Step.PREVOTE)),
        TestStep("own prevote A", recv(prevote(V4, A, 1))),
        TestStep("v1 prevotes A", recv(prevote(V1, A, 1))),
        TestStep("L36: polka for A in round 1: lock A at 1", recv(prevote(V2, A, 1)),
                 [bv_precommit(A, 1)], Expect(1, Step.PRECOMMIT, (A, 1), (A, 1))),
        TestStep("own precommit A", recv(precommit(V4, A, 1))),
        TestStep("v1 precommits nil", recv(precommit(V1, None, 1))),
        TestStep("L47", recv(precommit(V2, None, 1)), [st(PRECOMMIT, 1)]),
        TestStep("L65: round 2 (v3 proposes)", timeout(PRECOMMIT, 1), [st(PROPOSE, 2)],
                 Expect(2, Step.PROPOSE, (A, 1), (A, 1))),
        TestStep("B with vr = 0: ask valid(B)", recv(proposal(V3, B, round=2, pol_round=0)),
                 [RequestValidity(1, 2, B)]),
        TestStep("L29/L32: lockedRound 1 > vr 0 and B != A: prevote nil", valid(B, 2),
                 [bv_prevote(None, 2)], Expect(2, Step.PREVOTE, (A, 1), (A, 1))),
    ],
)  # fmt: skip

TABLES["L28 waits for the PoL polka, then prevotes"] = (
    V4,
    VALS,
    [
        START,
        TestStep("L57", timeout(PROPOSE), [bv_prevote(None)], Expect(0, Step.PREVOTE)),
        TestStep("L61-L64: timeoutPrevote: precommit nil", timeout(PREVOTE),
                 [bv_precommit(None)], Expect(0, Step.PRECOMMIT)),
        TestStep("v1 precommits nil", recv(precommit(V1, None))),
        TestStep("v2 precommits nil", recv(precommit(V2, None))),
        TestStep("L47", recv(precommit(V3, None)), [st(PRECOMMIT)]),
        TestStep("L65: round 1", timeout(PRECOMMIT), [st(PROPOSE, 1)], Expect(1, Step.PROPOSE)),
        TestStep("v2 proposes A with vr = 0", recv(proposal(V2, A, round=1, pol_round=0)),
                 [RequestValidity(1, 1, A)]),
        TestStep("valid, but no polka for A in round 0 yet: L28 not enabled", valid(A, 1)),
        TestStep("v1 prevoted A in round 0", recv(prevote(V1, A))),
        TestStep("v2 prevoted A in round 0", recv(prevote(V2, A))),
        TestStep("L28-L30: the third prevote completes the PoL: prevote A",
                 recv(prevote(V3, A)), [bv_prevote(A, 1)], Expect(1, Step.PREVOTE)),
    ],
)  # fmt: skip

# ---------------------------------------------------------------- L34-L46: prevote step

TABLES["L34 + L61 timeoutPrevote without a polka: precommit nil"] = (
    V4,
    VALS,
    [
        START,
        TestStep("L57: timeoutPropose: prevote nil", timeout(PROPOSE), [bv_prevote(None)],
                 Expect(0, Step.PREVOTE)),
        TestStep("own prevote nil", recv(prevote(V4, None))),
        TestStep("v1 prevotes A", recv(prevote(V1, A))),
        TestStep("L34: third prevote, no majority: schedule timeoutPrevote",
                 recv(prevote(V2, B)), [st(PREVOTE)]),
        TestStep("L34 fires once per round", recv(prevote(V3, B))),
        TestStep("L61-L64: precommit nil", timeout(PREVOTE), [bv_precommit(None)],
                 Expect(0, Step.PRECOMMIT)),
        TestStep("L62: a second timeoutPrevote does nothing", timeout(PREVOTE)),
    ],
)  # fmt: skip

TABLES["L44 polka for nil: precommit nil"] = (
    V4,
    VALS,
    [
        START,
        TestStep("L57", timeout(PROPOSE), [bv_prevote(None)], Expect(0, Step.PREVOTE)),
        TestStep("own prevote nil", recv(prevote(V4, None))),
        TestStep("v1 prevotes nil", recv(prevote(V1, None))),
        TestStep("L34 and L44-L46: 2f+1 prevotes for nil", recv(prevote(V2, None)),
                 [st(PREVOTE), bv_precommit(None)], Expect(0, Step.PRECOMMIT)),
    ],
)  # fmt: skip

TABLES["L36 polka seen before the proposal: precommit once the proposal is valid"] = (
    V4,
    VALS,
    [
        START,
        TestStep("L57", timeout(PROPOSE), [bv_prevote(None)], Expect(0, Step.PREVOTE)),
        TestStep("v1 prevotes A", recv(prevote(V1, A))),
        TestStep("v2 prevotes A", recv(prevote(V2, A))),
        TestStep("L34: polka for A, but no proposal for A yet", recv(prevote(V3, A)),
                 [st(PREVOTE)]),
        TestStep("the proposal arrives", recv(proposal(V1, A)), [RequestValidity(1, 0, A)]),
        TestStep("L36-L41: valid(A): lock and precommit A", valid(A), [bv_precommit(A)],
                 Expect(0, Step.PRECOMMIT, (A, 0), (A, 0))),
    ],
)  # fmt: skip

TABLES["L36 never locks on an invalid value"] = (
    V4,
    VALS,
    [
        START,
        TestStep("v1 proposes A", recv(proposal(V1, A)), [RequestValidity(1, 0, A)]),
        TestStep("L26: invalid", valid(A, ok=False), [bv_prevote(None)], Expect(0, Step.PREVOTE)),
        TestStep("v1 prevotes A", recv(prevote(V1, A))),
        TestStep("v2 prevotes A", recv(prevote(V2, A))),
        TestStep("L34 only: polka for an invalid A", recv(prevote(V3, A)), [st(PREVOTE)]),
        TestStep("L61: precommit nil", timeout(PREVOTE), [bv_precommit(None)],
                 Expect(0, Step.PRECOMMIT)),
    ],
)  # fmt: skip

# ---------------------------------------------------------------- L47, L55, L65

TABLES["L47 + L65 timeoutPrecommit starts the next round, where we propose"] = (
    V2,
    VALS,
    [
        TestStep("start", NewHeight(1, VALS), [st(PROPOSE)], Expect(0, Step.PROPOSE)),
        TestStep("v1 precommits A", recv(precommit(V1, A))),
        TestStep("v3 precommits nil", recv(precommit(V3, None))),
        TestStep("L47 applies in any step: schedule timeoutPrecommit",
                 recv(precommit(V4, B)), [st(PRECOMMIT)]),
        TestStep("L47 fires once per round", recv(precommit(V2, B))),
        TestStep("a timeout of another round is stale", timeout(PRECOMMIT, 1)),
        TestStep("a timeout of another height is stale", timeout(PRECOMMIT, height=2)),
        TestStep("L65-L67, L14/L18: round 1 is ours: getValue, timeout grows by a delta",
                 timeout(PRECOMMIT), [RequestValue(1, 1), st(PROPOSE, 1)],
                 Expect(1, Step.PROPOSE)),
        TestStep("L57 of round 0 is stale now", timeout(PROPOSE, 0)),
    ],
)  # fmt: skip

TABLES["L55 round skip on f+1 power in a higher round"] = (
    V4,
    VALS,
    [
        START,
        TestStep("one validator in round 5 is not f+1", recv(prevote(V1, None, 5))),
        TestStep("the same validator again in round 5 still counts once",
                 recv(precommit(V1, A, 5))),
        TestStep("L55-L56: a second validator in round 5: StartRound(5)",
                 recv(precommit(V2, A, 5)), [st(PROPOSE, 5)], Expect(5, Step.PROPOSE)),
        TestStep("f+1 in a lower round does nothing", recv(prevote(V3, None, 3))),
        TestStep("v3 in round 9", recv(prevote(V3, None, 9))),
        TestStep("L55: f+1 in round 9 (v3 prevote, v4 precommit)", recv(precommit(V4, None, 9)),
                 [st(PROPOSE, 9)], Expect(9, Step.PROPOSE)),
    ],
)  # fmt: skip

# ---------------------------------------------------------------- L49: decide

TABLES["L49 decide in the current round"] = (
    V4,
    VALS,
    [
        *lock_on_a_in_round_0(),
        TestStep("v1 precommits A", recv(precommit(V1, A))),
        TestStep("v2 precommits A", recv(precommit(V2, A))),
        TestStep(
            "L49-L51: our precommit completes 2f+1 for A: decide with the commit",
            recv(precommit(V4, A)),
            [Decide(1, 0, A, proposal(V1, A),
                    (precommit(V1, A), precommit(V2, A), precommit(V4, A)))],
            Expect(0, Step.COMMIT, (A, 0), (A, 0), decision=A),
        ),
        TestStep("after deciding, the height ignores everything", recv(precommit(V3, A))),
        TestStep("timeouts too", timeout(PRECOMMIT)),
    ],
)  # fmt: skip

TABLES["L49 commit from an earlier round after moving on"] = (
    V4,
    VALS,
    [
        START,
        TestStep("v1 proposes A", recv(proposal(V1, A)), [RequestValidity(1, 0, A)]),
        TestStep("L24", valid(A), [bv_prevote(A)], Expect(0, Step.PREVOTE)),
        TestStep("v2 in round 1", recv(prevote(V2, None, 1))),
        TestStep("L55: v3 in round 1: skip to round 1", recv(prevote(V3, None, 1)),
                 [st(PROPOSE, 1)], Expect(1, Step.PROPOSE)),
        TestStep("v1 precommitted A in round 0", recv(precommit(V1, A))),
        TestStep("v2 precommitted A in round 0", recv(precommit(V2, A))),
        TestStep("L49: 2f+1 precommits for A in round 0 and A's proposal: decide round 0",
                 recv(precommit(V3, A)),
                 [Decide(1, 0, A, proposal(V1, A),
                         (precommit(V1, A), precommit(V2, A), precommit(V3, A)))],
                 Expect(1, Step.COMMIT, decision=A)),
    ],
)  # fmt: skip

TABLES["L49-L50 decide only once the proposal is known and valid"] = (
    V4,
    VALS,
    [
        START,
        TestStep("v1 precommits A", recv(precommit(V1, A))),
        TestStep("v2 precommits A", recv(precommit(V2, A))),
        TestStep("L47: 2f+1 precommits for A but no proposal yet", recv(precommit(V3, A)),
                 [st(PRECOMMIT)]),
        TestStep("the proposal: ask valid(A)", recv(proposal(V1, A)), [RequestValidity(1, 0, A)]),
        TestStep("L50: valid(A): decide", valid(A),
                 [Decide(1, 0, A, proposal(V1, A),
                         (precommit(V1, A), precommit(V2, A), precommit(V3, A)))],
                 Expect(0, Step.COMMIT, decision=A)),
    ],
)  # fmt: skip

TABLES["L50 never decides an invalid value"] = (
    V4,
    VALS,
    [
        START,
        TestStep("the proposal", recv(proposal(V1, A)), [RequestValidity(1, 0, A)]),
        TestStep("invalid: prevote nil", valid(A, ok=False), [bv_prevote(None)],
                 Expect(0, Step.PREVOTE)),
        TestStep("v1 precommits A", recv(precommit(V1, A))),
        TestStep("v2 precommits A", recv(precommit(V2, A))),
        TestStep("2f+1 precommits for an invalid A: only L47", recv(precommit(V3, A)),
                 [st(PRECOMMIT)]),
    ],
)  # fmt: skip

# ---------------------------------------------------------------- vote keeper in the machine

TABLES["duplicate votes are ignored and never make a quorum"] = (
    V4,
    VALS,
    [
        START,
        TestStep("L57", timeout(PROPOSE), [bv_prevote(None)], Expect(0, Step.PREVOTE)),
        TestStep("v1 prevotes A", recv(prevote(V1, A))),
        TestStep("v1 prevotes A again", recv(prevote(V1, A))),
        TestStep("and again, with other signature bytes", recv(replace(prevote(V1, A), signature=b"other"))),
        TestStep("v2 prevotes A: 2 distinct, no L34", recv(prevote(V2, A))),
        TestStep("L34 on the third distinct validator", recv(prevote(V4, None)), [st(PREVOTE)]),
    ],
)  # fmt: skip

TABLES["equivocation: evidence per conflicting vote; it counts per value, once for 'any'"] = (
    V4,
    VALS,
    [
        START,
        TestStep("v1 prevotes A", recv(prevote(V1, A))),
        TestStep("v1 also prevotes B: evidence", recv(prevote(V1, B)),
                 [RecordEvidence(prevote(V1, A), prevote(V1, B))]),
        TestStep("the same conflicting vote again: a duplicate", recv(prevote(V1, B))),
        TestStep("v1 also prevotes nil: evidence again", recv(prevote(V1, None)),
                 [RecordEvidence(prevote(V1, A), prevote(V1, None))]),
        TestStep("a fourth value: evidence", recv(prevote(V1, b"C")),
                 [RecordEvidence(prevote(V1, A), prevote(V1, b"C"))]),
        TestStep("a fifth value: over MAX_VOTES_PER_SLOT, dropped", recv(prevote(V1, b"D"))),
        TestStep("v1 precommits A", recv(precommit(V1, A))),
        TestStep("v1 also precommits B: evidence", recv(precommit(V1, B)),
                 [RecordEvidence(precommit(V1, A), precommit(V1, B))]),
        TestStep("L57", timeout(PROPOSE), [bv_prevote(None)], Expect(0, Step.PREVOTE)),
        TestStep("v2 prevotes B: two validators, no L34 however many votes v1 sent",
                 recv(prevote(V2, B))),
        TestStep("L34 on the third validator; nil has v1 and v4 only", recv(prevote(V4, None)),
                 [st(PREVOTE)]),
        TestStep("L44: v3's nil makes 2f+1 for nil with v1's second vote",
                 recv(prevote(V3, None)), [bv_precommit(None)], Expect(0, Step.PRECOMMIT)),
    ],
)  # fmt: skip

TABLES["votes of another height or from non-validators are ignored"] = (
    V4,
    VALS,
    [
        START,
        TestStep("height 2", recv(prevote(V1, None, 6, height=2))),
        TestStep("stranger", recv(prevote(b"v9", None, 6))),
        TestStep("v2", recv(prevote(V2, None, 6))),
        TestStep("neither counted toward L55: v3 makes it f+1", recv(prevote(V3, None, 6)),
                 [st(PROPOSE, 6)], Expect(6, Step.PROPOSE)),
    ],
)  # fmt: skip

# ---------------------------------------------------------------- stake-weighted thresholds

W1, W2, W3, WBIG = b"w1", b"w2", b"w3", b"w4"
WEIGHTED = ValidatorSet.genesis([(W1, 1), (W2, 1), (W3, 1), (WBIG, 3)])  # total 6


def _w_start() -> TestStep:
    proposer = ProposerSelector(WEIGHTED).proposer(0)
    assert proposer == WBIG  # the heaviest validator proposes first
    return TestStep("start", NewHeight(1, WEIGHTED), [st(PROPOSE)], Expect(0, Step.PROPOSE))


TABLES["weighted: power, not heads, makes quorums (> 2/3) and f+1 (> 1/3)"] = (
    W1,
    WEIGHTED,
    [
        _w_start(),
        TestStep("L57", timeout(PROPOSE), [bv_prevote(None, me=W1)], Expect(0, Step.PREVOTE)),
        TestStep("w1 own nil (power 1)", recv(prevote(W1, None))),
        TestStep("w2 nil (2)", recv(prevote(W2, None))),
        TestStep("w3 nil: 3 of 6 heads but power 3 is not > 4", recv(prevote(W3, None))),
        TestStep("L34 and L44: w4 (power 3) makes 6", recv(prevote(WBIG, None)),
                 [st(PREVOTE), bv_precommit(None, me=W1)], Expect(0, Step.PRECOMMIT)),
        TestStep("L55: w4 alone has power 3 > 6/3 in round 2: skip", recv(prevote(WBIG, None, 2)),
                 [st(PROPOSE, 2)], Expect(2, Step.PROPOSE)),
    ],
)  # fmt: skip

# ---------------------------------------------------------------- non-validator

TABLES["a non-validator follows and decides without broadcasting"] = (
    b"observer",
    VALS,
    [
        START,
        TestStep("proposal", recv(proposal(V1, A)), [RequestValidity(1, 0, A)]),
        TestStep("L24 without a vote to send", valid(A), [], Expect(0, Step.PREVOTE)),
        TestStep("v1 prevotes A", recv(prevote(V1, A))),
        TestStep("v2 prevotes A", recv(prevote(V2, A))),
        TestStep("L36 without a vote to send", recv(prevote(V3, A)), [],
                 Expect(0, Step.PRECOMMIT, (A, 0), (A, 0))),
        TestStep("v1 precommits A", recv(precommit(V1, A))),
        TestStep("v2 precommits A", recv(precommit(V2, A))),
        TestStep("L49", recv(precommit(V3, A)),
                 [Decide(1, 0, A, proposal(V1, A),
                         (precommit(V1, A), precommit(V2, A), precommit(V3, A)))],
                 Expect(0, Step.COMMIT, (A, 0), (A, 0), decision=A)),
    ],
)  # fmt: skip


@pytest.mark.parametrize("name", list(TABLES))
def test_rule_table(name: str) -> None:
    me, _, steps = TABLES[name]
    run_steps(initial_state(me, CONFIG), steps)


def test_proposer_order_used_by_tables() -> None:
    selector = ProposerSelector(VALS)
    assert [selector.proposer(r) for r in range(5)] == [V1, V2, V3, V4, V1]


def test_new_height_resets_lock_and_valid_and_log() -> None:
    s = run_steps(initial_state(V4, CONFIG), lock_on_a_in_round_0())
    assert (s.locked_value, s.valid_value) == (A, A)
    nxt = VALS.next_height()
    s, effects = step(s, NewHeight(2, nxt))
    assert effects == [st(PROPOSE, 0, height=2)]
    assert Expect.of(s) == Expect(0, Step.PROPOSE)
    assert s.height == 2 and s.proposals == {} and s.verdicts == {}
    assert s.proposer() == ProposerSelector(nxt).proposer(0) == V2
    # the old height's messages are ignored now
    assert step(s, recv(prevote(V1, A)))[1] == []
    with pytest.raises(ValueError, match="NewHeight"):
        step(s, NewHeight(2, nxt))


def test_events_before_the_first_height_are_ignored() -> None:
    s = initial_state(V4, CONFIG)
    for event in (recv(prevote(V1, A)), recv(proposal(V1, A)), timeout(PROPOSE), valid(A)):
        assert step(s, event) == (s, [])


def test_duplicate_returns_the_same_state_object() -> None:
    s = run_steps(initial_state(V4, CONFIG), [START, TestStep("v1", recv(prevote(V1, A)))])
    again, effects = step(s, recv(prevote(V1, A)))
    assert again is s and effects == []


def test_unknown_event_type_is_a_clear_error() -> None:
    s = run_steps(initial_state(V4, CONFIG), [START])
    with pytest.raises(TypeError, match="not a consensus event"):
        step(s, "prevote")  # type: ignore[arg-type]
