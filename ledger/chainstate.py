"""``ChainState``: what a node knows after the last committed block (CometBFT's ``State``)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from ledger.params import ConsensusParams
from ledger.schema import get_params
from ledger.state import AppState
from ledger.validators import ValidatorSet


@dataclass(frozen=True, eq=False)
class ChainState:
    """Immutable; ``apply_block`` returns a new one.

    After block H: ``last_validators`` signed H, ``validators`` sign H+1 and
    ``next_validators`` sign H+2 (stake changes of block H land here, as in
    CometBFT). Before the first block ``last_block_height`` is
    ``initial_height - 1``, ``last_block_id`` is empty, ``last_validators`` is
    empty and ``last_block_time`` is the genesis time.
    """

    chain_id: str
    initial_height: int
    last_block_height: int
    last_block_id: bytes
    last_block_time: int  # unix milliseconds
    last_validators: ValidatorSet
    validators: ValidatorSet
    next_validators: ValidatorSet
    last_results_hash: bytes
    app: AppState

    @property
    def app_hash(self) -> bytes:
        return self.app.root

    @property
    def height(self) -> int:
        """The height of the next block."""
        return self.last_block_height + 1

    @cached_property
    def params(self) -> ConsensusParams:
        return get_params(self.app)

    def summary(self) -> tuple[object, ...]:
        """Everything that defines the state, for equality checks across processes."""
        return (
            self.chain_id,
            self.initial_height,
            self.last_block_height,
            self.last_block_id,
            self.last_block_time,
            self.last_validators,
            self.validators,
            self.next_validators,
            self.last_results_hash,
            self.app_hash,
        )

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, ChainState)
            and self.summary() == other.summary()
            and self.app == other.app
        )

    __hash__ = None  # type: ignore[assignment]
