"""Proof of learning (Jia et al. 2021): transcripts, segment selection, reveals and verification."""

from fl.pol.errors import MissingContent, PolError
from fl.pol.recorder import DEFAULT_K, Recorder, record_training
from fl.pol.records import (
    PolVerdict,
    Reveal,
    RevealedSample,
    Segment,
    SegmentDistance,
    Tolerance,
    Transcript,
    transcript_hash,
)
from fl.pol.reveal import make_reveal
from fl.pol.schedule import batch_hash
from fl.pol.select import DEFAULT_Q, DEFAULT_RANDOM_PICKS, select_segments
from fl.pol.sink import ContentSink, MemorySink
from fl.pol.verify import DEFAULT_TOLERANCE, POLICIES, verify

__all__ = [
    "DEFAULT_K",
    "DEFAULT_Q",
    "DEFAULT_RANDOM_PICKS",
    "DEFAULT_TOLERANCE",
    "POLICIES",
    "ContentSink",
    "MemorySink",
    "MissingContent",
    "PolError",
    "PolVerdict",
    "Recorder",
    "Reveal",
    "RevealedSample",
    "Segment",
    "SegmentDistance",
    "Tolerance",
    "Transcript",
    "batch_hash",
    "make_reveal",
    "record_training",
    "select_segments",
    "transcript_hash",
    "verify",
]
