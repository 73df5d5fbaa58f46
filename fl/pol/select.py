"""Which segments a verifier replays: the largest updates plus seeded random picks (Jia et al. 2021)."""

from __future__ import annotations

import struct

from fl.pol.records import Transcript, transcript_hash
from ledger.codec import sha256

__all__ = ["DEFAULT_Q", "DEFAULT_RANDOM_PICKS", "SELECT_DOMAIN", "select_segments"]

SELECT_DOMAIN = b"fedledger/pol/select/v1"
DEFAULT_Q = 2
DEFAULT_RANDOM_PICKS = 2


def select_segments(
    transcript: Transcript,
    seed: bytes,
    q: int = DEFAULT_Q,
    random_picks: int = DEFAULT_RANDOM_PICKS,
) -> list[int]:
    """Sorted indices of the segments to replay.

    The ``q`` segments with the largest recorded weight change (ties: lower index), as in
    Jia et al.'s top-Q verification, then ``random_picks`` more drawn without replacement
    from the rest by ``SHA-256(domain || seed || transcript hash || u32 j)``. The seed is
    fixed after the transcript was committed (the chain uses a later block hash), so a
    trainer cannot know which small segments will be checked; the random picks are what
    catches forged segments kept deliberately small (Fang et al. 2023).
    """
    if not isinstance(seed, bytes) or not 1 <= len(seed) <= 64:
        raise ValueError("the verification seed must be 1..64 bytes")
    if q < 0 or random_picks < 0:
        raise ValueError("q and random_picks must be >= 0")
    segs = transcript.segments
    ranked = sorted(range(len(segs)), key=lambda i: (-segs[i].update_norm_q, i))
    chosen = ranked[:q]
    rest = sorted(set(range(len(segs))) - set(chosen))
    prefix = SELECT_DOMAIN + struct.pack(">B", len(seed)) + seed + transcript_hash(transcript)
    for j in range(random_picks):
        if not rest:
            break
        draw = int.from_bytes(sha256(prefix + struct.pack(">I", j)), "big")
        chosen.append(rest.pop(draw % len(rest)))
    return sorted(chosen)
