"""Pure Tendermint core: ``step(state, event) -> (state, effects)``, vote keeper, proposers.

No I/O, clock, randomness, logging or networking: the driver (``consensus/``) turns network
messages, timers and application answers into events and carries out the effects.
"""

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
from consensus.core.machine import step
from consensus.core.proposer import (
    MAX_TOTAL_VOTING_POWER,
    PRIORITY_WINDOW_SIZE_FACTOR,
    ProposerSelector,
    Validator,
    ValidatorSet,
    center_priorities,
    increment_proposer_priority,
    rescale_priorities,
    update_validators,
)
from consensus.core.state import State, initial_state
from consensus.core.types import (
    NIL_ROUND,
    Proposal,
    Step,
    TimeoutConfig,
    TimeoutKind,
    Vote,
    VoteType,
)
from consensus.core.votekeeper import (
    MAX_VOTES_PER_SLOT,
    AddResult,
    RoundVotes,
    Tally,
    VoteKeeper,
    is_honest,
    is_quorum,
)

__all__ = [
    "MAX_TOTAL_VOTING_POWER",
    "MAX_VOTES_PER_SLOT",
    "NIL_ROUND",
    "PRIORITY_WINDOW_SIZE_FACTOR",
    "AddResult",
    "BroadcastProposal",
    "BroadcastVote",
    "Decide",
    "Effect",
    "Event",
    "NewHeight",
    "Proposal",
    "ProposalReceived",
    "ProposerSelector",
    "RecordEvidence",
    "RequestValidity",
    "RequestValue",
    "RoundVotes",
    "ScheduleTimeout",
    "State",
    "Step",
    "Tally",
    "TimeoutConfig",
    "TimeoutFired",
    "TimeoutKind",
    "Validator",
    "ValidatorSet",
    "ValidityVerdict",
    "ValueReady",
    "Vote",
    "VoteKeeper",
    "VoteReceived",
    "VoteType",
    "center_priorities",
    "increment_proposer_priority",
    "initial_state",
    "is_honest",
    "is_quorum",
    "rescale_priorities",
    "step",
    "update_validators",
]
