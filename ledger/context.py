"""Execution contexts handed to transaction handlers and begin/end-block hooks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ledger.block import Block
from ledger.params import ConsensusParams
from ledger.results import Event
from ledger.state import Overlay
from ledger.tx import Tx, TxBody
from ledger.validators import ValidatorSet


class ValidatorHistory(Protocol):
    """Validator sets of past heights (the chain store implements it)."""

    def validators_at(self, height: int) -> ValidatorSet | None: ...


@dataclass(frozen=True)
class BlockInfo:
    chain_id: str
    height: int
    time: int  # unix milliseconds; in CheckTx, the last block's time
    proposer_address: bytes  # empty in CheckTx


def _attrs(attrs: dict[str, object]) -> dict[str, str]:
    return {k: v.hex() if isinstance(v, bytes) else str(v) for k, v in attrs.items()}


@dataclass
class BlockContext:
    """What begin/end-block hooks and evidence handlers see of the block being executed.

    ``block`` is None in CheckTx. Hooks write state through ``view`` and report
    through :meth:`emit`; the validator set for H+2 is derived from the staking
    records after the last end-block hook, so contracts that slash or jail
    (through :mod:`ledger.staking`) need nothing else.
    """

    view: Overlay
    info: BlockInfo
    params: ConsensusParams
    block: Block | None
    events: list[Event] = field(default_factory=list)

    def emit(self, type_: str, **attrs: object) -> None:
        self.events.append(Event(type_, _attrs(attrs)))


@dataclass
class TxContext:
    """What a transaction handler sees: its own overlay (rolled back if it raises)."""

    view: Overlay
    block: BlockContext
    tx: Tx
    signer: bytes  # the signer's account address
    checking: bool  # True in CheckTx (mempool), False when executing a block
    events: list[Event] = field(default_factory=list)

    @property
    def info(self) -> BlockInfo:
        return self.block.info

    @property
    def params(self) -> ConsensusParams:
        return self.block.params

    def emit(self, type_: str, **attrs: object) -> None:
        self.events.append(Event(type_, _attrs(attrs)))


TxHandler = Callable[[TxContext, TxBody], None]
BlockHook = Callable[[BlockContext], None]
