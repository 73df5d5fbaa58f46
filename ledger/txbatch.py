"""Batched transaction gossip: many encoded transactions per ``/txs`` gossip message.

py-libp2p's gossipsub delivers a few hundred messages per second on one
machine, so the mempool gossips ``TxBatch`` messages. The batch carries raw
tx bytes, not decoded records: each tx is then checked on its own by the
mempool, so one bad tx costs its sender (and the relaying peer's score) only
that tx, never the rest of the batch.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ledger.codec import CodecError, decode_record, encode, record

# py-libp2p 0.8.1 silently drops gossip payloads of 1 MiB or more (LIBP2P_NOTES.md, trap 7);
# half of that leaves room for the pubsub envelope.
MAX_BATCH_BYTES = 512 * 1024
MAX_BATCH_TXS = 10_000
_OVERHEAD = 16  # record tag + array headers, generous


@record(11)
@dataclass(frozen=True)
class TxBatch:
    txs: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if not self.txs:
            raise ValueError("a tx batch holds at least one tx")
        if any(not tx for tx in self.txs):
            raise ValueError("empty tx in batch")


def encode_tx_batch(txs: Iterable[bytes]) -> bytes:
    return encode(TxBatch(tuple(txs)))


def decode_tx_batch(
    data: bytes, *, max_bytes: int = MAX_BATCH_BYTES, max_txs: int = MAX_BATCH_TXS
) -> list[bytes]:
    """Strictly decode a gossip message; every failure is a :class:`CodecError`."""
    batch = decode_record(data, TxBatch, max_size=max_bytes)
    if len(batch.txs) > max_txs:
        raise CodecError(f"batch of {len(batch.txs)} txs exceeds {max_txs}")
    return list(batch.txs)


def split_into_batches(txs: Iterable[bytes], max_bytes: int = MAX_BATCH_BYTES) -> list[bytes]:
    """Pack encoded txs, in order, into as few messages of at most ``max_bytes`` as possible.

    A tx too large for any message is skipped (the mempool's per-tx limit is
    far below the message limit, so this only guards misconfiguration).
    """
    out: list[bytes] = []
    cur: list[bytes] = []
    size = _OVERHEAD
    for tx in txs:
        item = len(tx) + 5  # msgpack bin header is at most 5 bytes
        if item + _OVERHEAD > max_bytes:
            continue
        if cur and (size + item > max_bytes or len(cur) >= MAX_BATCH_TXS):
            out.append(encode_tx_batch(cur))
            cur, size = [], _OVERHEAD
        cur.append(tx)
        size += item
    if cur:
        out.append(encode_tx_batch(cur))
    return out
