"""The privval guard: signs votes and proposals, never anything that could be a double sign.

Like CometBFT's FilePV, it keeps the last signed (height, round, step) and the signed
message in ``data/priv_validator_state.json`` and refuses to sign:

* anything at a lower (height, round, step) than the last signature, and
* at the same (height, round, step), anything for a different block.

Re-signing the same message at the same (height, round, step) — after a crash the
consensus core asks again — returns the stored message unchanged (same timestamp, same
signature), so a restart never produces a second, different signature. The state file is
written (temp file + fsync + rename + directory fsync) *before* a signature is returned.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ledger.codec import CodecError, decode_record, encode
from ledger.crypto import PrivateKey
from ledger.failpoint import failpoint
from ledger.votes import Proposal, Vote, VoteType, sign_proposal, sign_vote

# Steps in the order a validator signs them within one round.
STEP_PROPOSE = 1
STEP_PREVOTE = 2
STEP_PRECOMMIT = 3


class DoubleSignError(Exception):
    """Signing this would contradict something already signed."""


class PrivvalStateError(ValueError):
    """The state file is corrupt; refusing to sign is safer than guessing."""


@dataclass(frozen=True)
class LastSign:
    height: int = 0
    round: int = 0
    step: int = 0
    message: bytes = b""  # the canonical encoding of the signed Vote or Proposal


def _step_of_vote(vote: Vote) -> int:
    return STEP_PREVOTE if vote.type == VoteType.PREVOTE else STEP_PRECOMMIT


class PrivValidator:
    """A validator's consensus key behind the double-sign guard."""

    def __init__(self, key: PrivateKey, state_file: Path, chain_id: str):
        self.key = key
        self.state_file = state_file
        self.chain_id = chain_id
        self.last = self._load()

    @property
    def address(self) -> bytes:
        return self.key.address

    # ------------------------------------------------------------ persistence

    def _load(self) -> LastSign:
        path = self.state_file
        if not path.exists():
            return LastSign()
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            last = LastSign(int(doc["height"]), int(doc["round"]), int(doc["step"]),
                            base64.b64decode(doc.get("signed_message", ""), validate=True))
        except (ValueError, KeyError, TypeError, json.JSONDecodeError) as e:
            raise PrivvalStateError(f"{path}: corrupt privval state ({e})") from None
        if last.message:
            try:
                self._decode(last.message)
            except CodecError as e:
                raise PrivvalStateError(f"{path}: corrupt signed message ({e})") from None
        return last

    def _save(self, last: LastSign) -> None:
        doc = {"height": str(last.height), "round": last.round, "step": last.step,
               "signed_message": base64.b64encode(last.message).decode()}
        tmp = self.state_file.with_name(self.state_file.name + ".tmp")
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        try:
            os.write(fd, (json.dumps(doc) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.state_file)
        dfd = os.open(self.state_file.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        self.last = last

    @staticmethod
    def _decode(raw: bytes) -> Vote | Proposal:
        try:
            return decode_record(raw, Vote)
        except CodecError:
            return decode_record(raw, Proposal)

    # ------------------------------------------------------------ the guard

    def _check(self, height: int, round_: int, step: int) -> bool:
        """True if exactly this (h, r, s) was signed before; raises if it went backwards."""
        last = self.last
        if (height, round_, step) < (last.height, last.round, last.step):
            raise DoubleSignError(
                f"refusing to sign h={height} r={round_} step={step}: already signed "
                f"h={last.height} r={last.round} step={last.step}")
        return (height, round_, step) == (last.height, last.round, last.step)

    def sign_vote(self, vote: Vote) -> Vote:
        step = _step_of_vote(vote)
        if self._check(vote.height, vote.round, step):
            prev = self._decode(self.last.message)
            if isinstance(prev, Vote) and prev.block_id == vote.block_id \
                    and prev.type == vote.type:
                return prev  # the same vote again (e.g. after a restart): same bytes
            raise DoubleSignError(
                f"refusing to sign a conflicting {VoteType(vote.type).name.lower()} at "
                f"h={vote.height} r={vote.round}: already signed block "
                f"{_short(getattr(prev, 'block_id', None))}, asked {_short(vote.block_id)}")
        signed = sign_vote(self.key, self.chain_id, vote)
        failpoint("privval.vote.before_save")
        self._save(LastSign(vote.height, vote.round, step, encode(signed)))
        return signed

    def sign_proposal(self, proposal: Proposal) -> Proposal:
        if self._check(proposal.height, proposal.round, STEP_PROPOSE):
            prev = self._decode(self.last.message)
            if isinstance(prev, Proposal) and prev.block_id == proposal.block_id \
                    and prev.pol_round == proposal.pol_round:
                return prev
            raise DoubleSignError(
                f"refusing to sign a second proposal at h={proposal.height} r={proposal.round}")
        signed = sign_proposal(self.key, self.chain_id, proposal)
        failpoint("privval.proposal.before_save")
        self._save(LastSign(proposal.height, proposal.round, STEP_PROPOSE, encode(signed)))
        return signed

    def raw_sign_vote(self, vote: Vote) -> Vote:
        """Sign WITHOUT the guard: only the test-only byzantine mode calls this."""
        return sign_vote(self.key, self.chain_id, vote)


def _short(block_id: Any) -> str:
    return "nil" if block_id is None else bytes(block_id).hex()[:12]
