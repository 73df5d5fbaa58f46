"""Building the next block on a chain state: every header field derived from the state."""

from __future__ import annotations

from collections.abc import Sequence

from ledger.block import Block, Header, PolSection, commit_hash, data_hash, evidence_hash, pol_hash
from ledger.chainstate import ChainState
from ledger.evidence import Evidence
from ledger.tx import Tx
from ledger.votes import Commit


def build_block(
    state: ChainState,
    txs: Sequence[Tx],
    *,
    last_commit: Commit | None,
    evidence: Sequence[Evidence],
    time: int,
    proposer: bytes,
    pol: PolSection | None = None,
) -> Block:
    """The block at ``state.height`` that ``Application.validate_block`` will accept.

    ``time`` must be later than ``state.last_block_time`` (BFT time is the proposer's
    clock, kept monotonic by the caller).
    """
    header = Header(
        chain_id=state.chain_id,
        height=state.height,
        time=time,
        last_block_id=state.last_block_id,
        last_commit_hash=commit_hash(last_commit),
        data_hash=data_hash(txs),
        validators_hash=state.validators.hash,
        next_validators_hash=state.next_validators.hash,
        app_hash=state.app_hash,
        last_results_hash=state.last_results_hash,
        evidence_hash=evidence_hash(evidence),
        pol_hash=pol_hash(pol),
        proposer_address=proposer,
    )
    return Block(header, tuple(txs), tuple(evidence), last_commit, pol)
