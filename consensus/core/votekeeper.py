"""Vote keeper of one height: per-round tallies by value with powers, dedup, equivocation.

Immutable: :meth:`VoteKeeper.add` returns a new keeper that shares every untouched round
with the old one (copy-on-write of small dicts), so the state machine stays a pure function.

Thresholds are on voting power and strict: a *quorum* (the paper's 2f + 1) is more than 2/3
of the total power, *honest* (f + 1) is more than 1/3.

Counting follows the paper, where "2f + 1 ⟨PREVOTE, h, r, id(v)⟩" means messages from
distinct processes that prevoted ``id(v)``: a validator that equivocates counts toward each
value it voted for (its first ``MAX_VOTES_PER_SLOT`` distinct votes), while the "any" tallies
(L34, L47) and the f + 1 senders of L55 count it once. That is safe (two quorums for
different values share more than 1/3 of the power, so an honest validator, who never votes
twice) and it is what liveness needs: an honest node that saw a polka completed by a
byzantine vote can show that polka to the others, whatever twin they saw first. CometBFT
gets the same effect with its ``peerMaj23`` tracking.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum
from typing import NamedTuple

from consensus.core.proposer import ValidatorSet
from consensus.core.types import Vote, VoteType

__all__ = [
    "MAX_VOTES_PER_SLOT",
    "AddResult",
    "RoundVotes",
    "Tally",
    "VoteKeeper",
    "is_honest",
    "is_quorum",
]

MAX_VOTES_PER_SLOT = 4
"""Distinct votes kept per validator, round and type; further ones are only dropped, so an
equivocator cannot make the keeper grow without bound (its first conflict is evidence)."""


def is_quorum(power: int, total: int) -> bool:
    """More than 2/3 of the total power (2f + 1 in the paper)."""
    return 3 * power > 2 * total


def is_honest(power: int, total: int) -> bool:
    """More than 1/3 of the total power (f + 1: at least one correct sender)."""
    return 3 * power > total


class AddResult(IntEnum):
    ADDED = 0
    DUPLICATE = 1  # the same vote again (perhaps a re-broadcast): nothing changes
    CONFLICT = 2  # another vote of the same validator, round and type: counted, and evidence
    IGNORED = 3  # wrong height, negative round, unknown validator, too many conflicts


class Tally(NamedTuple):
    """Votes of one type in one round."""

    votes: Mapping[bytes, tuple[Vote, ...]]  # validator -> its distinct votes, first first
    power: Mapping[bytes | None, int]  # value id (None = nil) -> power of validators voting it
    total: int  # power of the validators that voted, each counted once

    def power_for(self, value_id: bytes | None) -> int:
        return self.power.get(value_id, 0)

    def votes_for(self, value_id: bytes | None) -> list[Vote]:
        return [v for votes in self.votes.values() for v in votes if v.value_id == value_id]


_EMPTY_TALLY = Tally({}, {}, 0)


class RoundVotes(NamedTuple):
    prevotes: Tally
    precommits: Tally
    senders: frozenset[bytes]  # validators with any vote in this round (L55 counts them once)
    sender_power: int

    def tally(self, vote_type: VoteType) -> Tally:
        return self.prevotes if vote_type == VoteType.PREVOTE else self.precommits


_EMPTY_ROUND = RoundVotes(_EMPTY_TALLY, _EMPTY_TALLY, frozenset(), 0)


class VoteKeeper(NamedTuple):
    """All votes of ``height``, counted with the powers of ``validators``.

    The records here are NamedTuples (immutable, and cheap to rebuild once per vote).
    """

    height: int
    validators: ValidatorSet
    rounds: Mapping[int, RoundVotes]
    # (round, value id) pairs with a quorum of precommits, in the order reached: L49 candidates
    commit_quorums: tuple[tuple[int, bytes], ...]

    @classmethod
    def empty(cls, height: int, validators: ValidatorSet) -> VoteKeeper:
        return cls(height, validators, {}, ())

    @property
    def total_power(self) -> int:
        return self.validators.total_power

    def round_votes(self, round: int) -> RoundVotes:
        return self.rounds.get(round, _EMPTY_ROUND)

    def tally(self, round: int, vote_type: VoteType) -> Tally:
        return self.rounds.get(round, _EMPTY_ROUND).tally(vote_type)

    def vote_of(self, validator: bytes, round: int, vote_type: VoteType) -> Vote | None:
        """The first vote of ``validator`` in that round and type."""
        votes = self.tally(round, vote_type).votes.get(validator)
        return votes[0] if votes else None

    def contains(self, vote: Vote) -> bool:
        """Whether this exact vote (signature aside) is recorded."""
        votes = self.tally(vote.round, vote.type).votes.get(vote.validator, ())
        return any(v.value_id == vote.value_id for v in votes)

    def has_quorum_for(self, round: int, vote_type: VoteType, value_id: bytes | None) -> bool:
        """2f + 1 ⟨type, h, round, value_id⟩ (``None``: nil)."""
        return is_quorum(self.tally(round, vote_type).power_for(value_id), self.total_power)

    def has_quorum_any(self, round: int, vote_type: VoteType) -> bool:
        """2f + 1 ⟨type, h, round, ∗⟩."""
        return is_quorum(self.tally(round, vote_type).total, self.total_power)

    def quorum_value(self, round: int, vote_type: VoteType) -> bytes | None:
        """The non-nil value with 2f + 1 votes, if any (one at most while byzantine < 1/3)."""
        tally = self.tally(round, vote_type)
        for value_id, power in tally.power.items():
            if value_id is not None and is_quorum(power, self.total_power):
                return value_id
        return None

    def skip_round(self, above: int) -> int | None:
        """The highest round > ``above`` with f + 1 power of senders (L55), if any."""
        best: int | None = None
        total = self.total_power
        for round, rv in self.rounds.items():
            if (
                round > above
                and (best is None or round > best)
                and is_honest(rv.sender_power, total)
            ):
                best = round
        return best

    def add(self, vote: Vote) -> tuple[VoteKeeper, AddResult, Vote | None]:
        """Record ``vote``; on ``CONFLICT`` the third item is the validator's first vote."""
        power = self.validators.power_of(vote.validator)
        if vote.height != self.height or vote.round < 0 or power == 0:
            return self, AddResult.IGNORED, None
        rv = self.rounds.get(vote.round, _EMPTY_ROUND)
        tally = rv.tally(vote.type)
        earlier = tally.votes.get(vote.validator, ())
        for v in earlier:
            if v.value_id == vote.value_id:
                return self, AddResult.DUPLICATE, None
        if len(earlier) >= MAX_VOTES_PER_SLOT:
            return self, AddResult.IGNORED, None

        votes = dict(tally.votes)
        votes[vote.validator] = (*earlier, vote)
        by_value = dict(tally.power)
        value_power = by_value.get(vote.value_id, 0) + power
        by_value[vote.value_id] = value_power
        new_tally = Tally(votes, by_value, tally.total if earlier else tally.total + power)
        if vote.validator in rv.senders:
            senders, sender_power = rv.senders, rv.sender_power
        else:
            senders, sender_power = rv.senders | {vote.validator}, rv.sender_power + power
        if vote.type == VoteType.PREVOTE:
            new_rv = RoundVotes(new_tally, rv.precommits, senders, sender_power)
        else:
            new_rv = RoundVotes(rv.prevotes, new_tally, senders, sender_power)
        rounds = dict(self.rounds)
        rounds[vote.round] = new_rv

        commit_quorums = self.commit_quorums
        if (
            vote.type == VoteType.PRECOMMIT
            and vote.value_id is not None
            and is_quorum(value_power, self.total_power)
            and not is_quorum(value_power - power, self.total_power)
        ):
            commit_quorums = (*commit_quorums, (vote.round, vote.value_id))
        keeper = VoteKeeper(self.height, self.validators, rounds, commit_quorums)
        if earlier:
            return keeper, AddResult.CONFLICT, earlier[0]
        return keeper, AddResult.ADDED, None
