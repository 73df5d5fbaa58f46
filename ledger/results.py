"""Result codes, events and per-transaction results of the application."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from ledger.codec import encode, record
from ledger.merkle import merkle_root
from ledger.validators import ValidatorSet


class Code(IntEnum):
    """Result codes of CheckTx and DeliverTx; 0 is success.

    1-49 core ledger, 50-99 mempool-only rejections, 100-199 the FL contract.
    Codes are part of the results hash, so never renumber one.
    """

    OK = 0
    DECODE_ERROR = 1
    BAD_SIGNATURE = 2
    NONCE_TOO_LOW = 3
    NONCE_TOO_HIGH = 4
    INSUFFICIENT_FUNDS = 5
    UNKNOWN_TX_TYPE = 6
    INVALID_TX = 7
    UNKNOWN_VALIDATOR = 8
    INSUFFICIENT_STAKE = 9
    UNAUTHORIZED = 10
    NOT_JAILED = 11
    STILL_JAILED = 12
    INTERNAL_ERROR = 13
    # mempool-only
    TX_TOO_LARGE = 50
    DUPLICATE_TX = 51
    MEMPOOL_FULL = 52
    MEMPOOL_FULL_BYTES = 53


class TxError(Exception):
    """Raised by a transaction handler to fail the transaction with a result code.

    The log must be deterministic text built by the handler (it is shown to
    users but excluded from the results hash).
    """

    def __init__(self, code: int, log: str) -> None:
        if not 0 < int(code) < 2**16:
            raise ValueError(f"result code {code} must be in 1..65535")
        super().__init__(log)
        self.code = int(code)
        self.log = log


@record(70)
@dataclass(frozen=True)
class Event:
    """A typed event with string attributes (CometBFT ``abci.Event``)."""

    type: str
    attributes: dict[str, str]


@record(71)
@dataclass(frozen=True)
class TxResult:
    code: int
    log: str
    events: tuple[Event, ...] = ()

    @property
    def ok(self) -> bool:
        return self.code == Code.OK


@record(72)
@dataclass(frozen=True)
class BlockResults:
    """What executing one block produced; kept in the store for RPC ``block_results``."""

    height: int
    tx_results: tuple[TxResult, ...]
    begin_block_events: tuple[Event, ...]
    end_block_events: tuple[Event, ...]
    # The validator set that signs height + 2, when this block changed it (else None).
    validator_set_update: ValidatorSet | None


def results_hash(results: tuple[TxResult, ...] | list[TxResult]) -> bytes:
    """Merkle root over ``encode([code, events])`` of each tx result.

    The log is left out (as CometBFT leaves it out): its wording may change
    between releases without forking the chain.
    """
    return merkle_root([encode([r.code, list(r.events)]) for r in results])
