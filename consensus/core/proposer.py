"""CometBFT's weighted round-robin proposer selection with priorities, in exact int64 math.

Follows CometBFT ``types/validator_set.go`` and ``spec/consensus/proposer-selection.md``:

* each run (``increment``): rescale priorities so that ``max - min <= 2 * P`` (dividing by
  ``ceil(diff / (2P))``, truncating like Go), centre them (subtract the floor average, as Go's
  ``big.Int.Div`` does), then ``priority += power`` for everyone, the highest priority (ties:
  the smaller address) proposes and pays ``priority -= P``;
* a new validator enters at ``-(P + P >> 3)`` (``-1.125 * P``) where ``P`` is the total power
  after the update (before removals), then the set is rescaled and centred;
* every addition and subtraction is clipped to int64, total power is capped at ``MaxInt64 / 8``.

A :class:`ValidatorSet` is immutable; every operation returns a new one. Height ``h + 1``
uses ``set_h.next_height(changes)``; round ``r`` of a height uses the height's set
incremented ``r`` more times, one round at a time (:class:`ProposerSelector` caches them).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "MAX_TOTAL_VOTING_POWER",
    "PRIORITY_WINDOW_SIZE_FACTOR",
    "ProposerSelector",
    "Validator",
    "ValidatorSet",
    "center_priorities",
    "clip_int64",
    "increment_proposer_priority",
    "new_validator_priorities",
    "rescale_priorities",
    "update_validators",
]

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
MAX_TOTAL_VOTING_POWER = INT64_MAX // 8
PRIORITY_WINDOW_SIZE_FACTOR = 2


class Validator(NamedTuple):
    """(address, voting power, proposer priority); voting power is the bonded stake."""

    address: bytes
    power: int
    priority: int = 0


def clip_int64(x: int) -> int:
    """CometBFT's ``safeAddClip``/``safeSubClip``: saturate instead of wrapping."""
    if x > INT64_MAX:
        return INT64_MAX
    if x < INT64_MIN:
        return INT64_MIN
    return x


def _go_div(a: int, b: int) -> int:
    """Go's int64 ``/``: truncates toward zero (Python's ``//`` floors)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def _total_power(validators: Sequence[Validator]) -> int:
    total = 0
    for v in validators:
        total += v.power
        if total > MAX_TOTAL_VOTING_POWER:
            raise ValueError(f"total voting power exceeds {MAX_TOTAL_VOTING_POWER}")
    return total


def _canonical_order(validators: Iterable[Validator]) -> tuple[Validator, ...]:
    # CometBFT keeps sets sorted by power (descending) then address; the order never changes
    # which validator is selected (ties break on address) but fixes the set's encoding.
    return tuple(sorted(validators, key=lambda v: (-v.power, v.address)))


def rescale_priorities(validators: Sequence[Validator], diff_max: int) -> tuple[Validator, ...]:
    """Divide all priorities by ``ceil(diff / diff_max)`` when ``max - min > diff_max``."""
    if not validators:
        raise ValueError("empty validator set")
    if diff_max <= 0:
        return tuple(validators)
    priorities = [v.priority for v in validators]
    diff = max(priorities) - min(priorities)
    if diff <= diff_max:
        return tuple(validators)
    ratio = (diff + diff_max - 1) // diff_max
    return tuple(v._replace(priority=_go_div(v.priority, ratio)) for v in validators)


def center_priorities(validators: Sequence[Validator]) -> tuple[Validator, ...]:
    """Subtract the average priority (floor division: Go's ``big.Int.Div`` is Euclidean)."""
    if not validators:
        raise ValueError("empty validator set")
    avg = sum(v.priority for v in validators) // len(validators)
    if avg == 0:
        return tuple(validators)
    return tuple(v._replace(priority=clip_int64(v.priority - avg)) for v in validators)


def _most_priority(validators: Sequence[Validator]) -> int:
    best = 0
    for i in range(1, len(validators)):
        v, b = validators[i], validators[best]
        if v.priority > b.priority or (v.priority == b.priority and v.address < b.address):
            best = i
    return best


def increment_proposer_priority(
    validators: Sequence[Validator], times: int = 1
) -> tuple[tuple[Validator, ...], bytes]:
    """CometBFT's ``IncrementProposerPriority(times)``: the new list and the last proposer.

    Rescaling and centring happen once per call, then ``times`` elections.
    """
    if not validators:
        raise ValueError("empty validator set")
    if times <= 0:
        raise ValueError("times must be positive")
    total = _total_power(validators)
    vals = center_priorities(rescale_priorities(validators, PRIORITY_WINDOW_SIZE_FACTOR * total))
    proposer = b""
    for _ in range(times):
        raised = [v._replace(priority=clip_int64(v.priority + v.power)) for v in vals]
        i = _most_priority(raised)
        chosen = raised[i]
        raised[i] = chosen._replace(priority=clip_int64(chosen.priority - total))
        proposer = chosen.address
        vals = tuple(raised)
    return vals, proposer


def new_validator_priorities(total_power: int) -> int:
    """Entry priority of a new validator: ``-1.125 * P`` as ``-(P + P >> 3)``."""
    return -(total_power + (total_power >> 3))


def update_validators(
    validators: Sequence[Validator], changes: Iterable[tuple[bytes, int]]
) -> tuple[Validator, ...]:
    """CometBFT's ``UpdateWithChangeSet``: ``(address, power)``; power 0 removes.

    Changed validators keep their priority; new ones enter at ``-1.125 * P`` where ``P`` is
    the total after additions and changes but before removals; then rescale and centre.
    Raises ``ValueError`` for duplicates, negative power, removing an unknown validator, an
    empty result or a total above ``MAX_TOTAL_VOTING_POWER``.
    """
    change_list = list(changes)
    if not change_list:
        return tuple(validators)
    seen: set[bytes] = set()
    for change in change_list:
        if len(change) != 2 or not isinstance(change[0], bytes) or type(change[1]) is not int:
            raise ValueError("a change is (address: bytes, power: int)")
        address, power = change
        if address in seen:
            raise ValueError(f"duplicate entry for {address.hex()}")
        seen.add(address)
        if power < 0:
            raise ValueError(f"voting power can't be negative: {power}")
        if power > MAX_TOTAL_VOTING_POWER:
            raise ValueError(f"voting power can't be higher than {MAX_TOTAL_VOTING_POWER}")
    change_list.sort()
    existing = {v.address: v for v in validators}
    removals = [a for a, p in change_list if p == 0]
    updates = [(a, p) for a, p in change_list if p > 0]
    for address in removals:
        if address not in existing:
            raise ValueError(f"failed to find validator {address.hex()} to remove")
    new_count = sum(1 for a, _ in updates if a not in existing)
    if new_count == 0 and len(removals) == len(existing):
        raise ValueError("applying the validator changes would result in empty set")
    removed_power = sum(existing[a].power for a in removals)
    # Same overflow check as verifyUpdates: apply the deltas in ascending order.
    deltas = sorted(p - (existing[a].power if a in existing else 0) for a, p in updates)
    running = _total_power(validators) - removed_power
    for d in deltas:
        running += d
        if running > MAX_TOTAL_VOTING_POWER:
            raise ValueError(f"total voting power exceeds {MAX_TOTAL_VOTING_POWER}")
    after_updates_before_removals = running + removed_power
    entry = new_validator_priorities(after_updates_before_removals)
    merged = dict(existing)
    for address, power in updates:
        old = existing.get(address)
        merged[address] = Validator(address, power, old.priority if old else entry)
    for address in removals:
        del merged[address]
    vals = tuple(merged.values())
    total = _total_power(vals)
    vals = center_priorities(rescale_priorities(vals, PRIORITY_WINDOW_SIZE_FACTOR * total))
    return _canonical_order(vals)


@dataclass(frozen=True, slots=True)
class ValidatorSet:
    """An immutable validator set with proposer priorities and its last elected proposer.

    ``proposer`` is the validator elected by the last increment (CometBFT's
    ``GetProposer()``); it is ``None`` only right after :meth:`update`.
    """

    validators: tuple[Validator, ...]
    proposer: bytes | None
    total_power: int = field(init=False, repr=False, compare=False)
    _powers: dict[bytes, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        vals = tuple(Validator(*v) for v in self.validators)
        if not vals:
            raise ValueError("empty validator set")
        powers: dict[bytes, int] = {}
        for v in vals:
            if not isinstance(v.address, bytes) or not v.address:
                raise ValueError("validator address must be non-empty bytes")
            if type(v.power) is not int or v.power <= 0:
                raise ValueError(f"voting power must be a positive int, got {v.power!r}")
            if type(v.priority) is not int or not INT64_MIN <= v.priority <= INT64_MAX:
                raise ValueError(f"priority must be an int64, got {v.priority!r}")
            if v.address in powers:
                raise ValueError(f"duplicate validator {v.address.hex()}")
            powers[v.address] = v.power
        if self.proposer is not None and self.proposer not in powers:
            raise ValueError("proposer not in validator set")
        object.__setattr__(self, "validators", _canonical_order(vals))
        object.__setattr__(self, "total_power", _total_power(vals))
        object.__setattr__(self, "_powers", powers)

    @classmethod
    def genesis(cls, members: Iterable[tuple[bytes, int]]) -> ValidatorSet:
        """CometBFT's ``NewValidatorSet``: all enter together, then one increment."""
        return cls(update_validators((), members), None).increment()

    def __len__(self) -> int:
        return len(self.validators)

    def __contains__(self, address: object) -> bool:
        return address in self._powers

    def power_of(self, address: bytes) -> int:
        """Voting power of ``address``; 0 for a non-member."""
        return self._powers.get(address, 0)

    @property
    def addresses(self) -> tuple[bytes, ...]:
        return tuple(v.address for v in self.validators)

    def increment(self, times: int = 1) -> ValidatorSet:
        vals, proposer = increment_proposer_priority(self.validators, times)
        return ValidatorSet(vals, proposer)

    def update(self, changes: Iterable[tuple[bytes, int]]) -> ValidatorSet:
        changes = list(changes)
        if not changes:
            return self
        return ValidatorSet(update_validators(self.validators, changes), None)

    def next_height(self, changes: Iterable[tuple[bytes, int]] = ()) -> ValidatorSet:
        """The set of the next height: apply the changes, then one increment."""
        return self.update(changes).increment()


class ProposerSelector:
    """``proposer(round)`` for one height, each round one increment after the previous one.

    Keeps the sets it computed (round ``r`` costs ``r`` increments once), so asking about the
    same or a lower round is a lookup. Rounds advance one increment at a time whatever path a
    node took to reach a round, so all honest nodes agree on every round's proposer.
    """

    __slots__ = ("_sets",)

    def __init__(self, validators: ValidatorSet) -> None:
        if validators.proposer is None:
            raise ValueError("validator set has no proposer yet: increment it first")
        self._sets: list[ValidatorSet] = [validators]

    @property
    def validators(self) -> ValidatorSet:
        """The set of round 0 (what the height started with)."""
        return self._sets[0]

    def validators_at(self, round: int) -> ValidatorSet:
        if round < 0:
            raise ValueError(f"round must be >= 0, got {round}")
        sets = self._sets
        while len(sets) <= round:
            sets.append(sets[-1].increment())
        return sets[round]

    def proposer(self, round: int) -> bytes:
        proposer = self.validators_at(round).proposer
        assert proposer is not None  # every set after an increment has one
        return proposer
