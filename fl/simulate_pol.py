"""Proof of learning inside the simulator: record each trainer's transcript, forge the attackers', verify as a validator.

The chain verifies every submission's PoL before the robust screen sees it
(docs/fl-chain.md, section 4): an update whose transcript fails is rejected and only
the PoL-valid deltas are screened and aggregated. :class:`PolRound` does the same for
one simulated round, with the real recorder, reveal and verifier over a memory sink.

Attackers forge the strongest transcript they can without knowing the verification
seed: they train honestly on their own data (label flippers on their flipped data,
which PoL cannot tell from real labels) and replace the final checkpoint, which *is*
the submitted update (ADR 0500), by the global model plus their crafted delta, with
consistent weight-change norms (:func:`fl.pol.forgeries.rebuild`).
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from fl.data import Dataset
from fl.models import StateDict, flatten
from fl.pol import MemorySink, PolVerdict, Transcript, make_reveal, record_training, select_segments
from fl.pol import verify as pol_verify
from fl.pol.checkpoint import put_state
from fl.pol.forgeries import HonestRun, rebuild
from fl.train import TrainConfig

__all__ = ["SIM_POLICIES", "PolEntry", "PolRound", "pol_code"]

SIM_POLICIES = ("off", "attest", "replay")
_DOMAIN = b"fedledger/sim/pol/v1"


@dataclass(frozen=True)
class PolEntry:
    """One submission's PoL evidence: the trainer's run (data, sink) and the transcript it submits."""

    run: HonestRun
    transcript: Transcript
    transcript_cid: bytes


def pol_code(verdict: PolVerdict) -> str:
    """The screen-style reason of a PoL rejection: ``pol_<code>`` (e.g. ``pol_replay_mismatch``)."""
    return "pol_" + verdict.reason.split(":", 1)[0]


class PolRound:
    """One round's PoL: the global model in a memory sink, transcripts recorded against it."""

    def __init__(
        self,
        policy: str,
        *,
        k: int,
        seed: int,
        rnd: int,
        model_id: str,
        model_config: dict[str, Any],
        global_state: StateDict,
        device: str | torch.device,
    ) -> None:
        if policy not in SIM_POLICIES[1:]:
            raise ValueError(f"PoL policy must be one of {', '.join(SIM_POLICIES[1:])}")
        self.policy, self.k, self.model_id = policy, k, model_id
        self.model_config = dict(model_config)
        self.sink = MemorySink()
        self.global_state = global_state
        self.start_cid = put_state(self.sink, global_state)
        self._tag = struct.pack(">QQ", seed & ((1 << 64) - 1), rnd)
        self.round_id = hashlib.sha256(_DOMAIN + b"/round" + self._tag).digest()
        self.device = device

    def train(
        self, net: nn.Module, data: Dataset, cfg: TrainConfig
    ) -> tuple[npt.NDArray[np.float32], PolEntry]:
        """Train ``net`` from the global model on ``data`` and record the transcript."""
        net.load_state_dict(self.global_state)
        result, cid, t = record_training(
            net, data, cfg, round_id=self.round_id, k=self.k, sink=self.sink,
            model_id=self.model_id, model_config=self.model_config, start_cid=self.start_cid,
            device=self.device,
        )  # fmt: skip
        run = HonestRun(self.sink, data, cfg, self.model_id, self.round_id, t, cid,
                        self.global_state)  # fmt: skip
        return flatten(result.state), PolEntry(run, t, cid)

    def forge(self, honest: PolEntry, final: StateDict) -> PolEntry:
        """``honest``'s checkpoints with the last one (the update) replaced by ``final``."""
        cks = honest.run.checkpoints()
        cks[-1] = (final, cks[-1][1])
        t, cid = rebuild(honest.run, cks)
        return PolEntry(honest.run, t, cid)

    def verify(self, entry: PolEntry, client: int) -> PolVerdict:
        """Verify like a validator: a seed fixed after submission, the trainer's reveal, the round's start."""
        seed = hashlib.sha256(_DOMAIN + b"/seed" + self._tag + struct.pack(">Q", client)).digest()
        reveal = None
        if self.policy == "replay":
            chosen = select_segments(entry.transcript, seed)
            reveal = make_reveal(entry.transcript, entry.run.dataset, chosen, self.sink)
        return pol_verify(
            entry.transcript_cid, self.sink, seed=seed, policy=self.policy,
            expected_start_cid=self.start_cid, expected_round_id=self.round_id,
            update_cid=entry.transcript.update_cid, reveal_cid=reveal,
            expected_model=self.model_id, expected_train=entry.run.cfg, expected_k=self.k,
        )  # fmt: skip
