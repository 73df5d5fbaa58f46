"""Consensus gossip messages on `/fedledger/<chain>/consensus` (strictly decoded)."""

from __future__ import annotations

from dataclasses import dataclass

from ledger.block import Block
from ledger.codec import decode_record, encode, record
from ledger.votes import Proposal, Vote

# A proposal carries its whole block; it must fit one gossip message (py-libp2p drops
# payloads of 1 MiB or more), so proposers cap the block's size accordingly.
MAX_CONSENSUS_MESSAGE = 1_000_000


class ConsensusMessage:
    """Base of the messages on the consensus topic."""


@record(255)
@dataclass(frozen=True)
class ProposalMessage(ConsensusMessage):
    proposal: Proposal
    block: Block


@record(256)
@dataclass(frozen=True)
class VoteMessage(ConsensusMessage):
    vote: Vote


@record(257)
@dataclass(frozen=True)
class CatchupRequest(ConsensusMessage):
    """"I am at (height, round) and miss messages": validators re-send theirs for it."""

    height: int
    round: int

    def __post_init__(self) -> None:
        if self.height < 1 or self.round < 0:
            raise ValueError("height must be >= 1 and round >= 0")


def encode_message(msg: ConsensusMessage) -> bytes:
    return encode(msg)


def decode_message(data: bytes) -> ConsensusMessage:
    """Raises CodecError for anything but a well-formed consensus message."""
    return decode_record(data, ConsensusMessage, max_size=MAX_CONSENSUS_MESSAGE)  # type: ignore[type-abstract]
