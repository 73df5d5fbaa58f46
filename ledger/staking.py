"""Stake: Bond/Unbond/Unjail handlers, the unbonding queue, slashing, jailing, the validator set.

Voting power = bonded tokens of a validator that is not jailed (1 token =
1 power). The validator set for H+2 is recomputed from the ``val/`` records
at the end of every block H (the records are few), so any code that changes
stake or jails, including the FL contract, needs no extra bookkeeping.
"""

from __future__ import annotations

import dataclasses

from ledger.bank import debit
from ledger.codec import decode_record
from ledger.context import BlockContext, TxContext
from ledger.crypto import ADDRESS_LEN, address_of
from ledger.evidence import DuplicateVoteEvidence
from ledger.params import PPM
from ledger.results import Code, TxError
from ledger.schema import (
    DOUBLE_SIGN_PREFIX,
    UNBONDING_PREFIX,
    VALIDATOR_PREFIX,
    Account,
    Delegation,
    SlashRecord,
    UnbondingEntry,
    ValidatorRecord,
    View,
    delegation_key,
    double_sign_key,
    get_account,
    get_record,
    get_validator,
    put_account,
    put_record,
    u64,
    unbonding_key,
    validator_key,
)
from ledger.state import Overlay
from ledger.tx import Bond, TxBody, Unbond, Unjail
from ledger.validators import Validator, ValidatorSet

_UNB_HEIGHT = slice(len(UNBONDING_PREFIX), len(UNBONDING_PREFIX) + 8)
_UNB_VAL = slice(len(UNBONDING_PREFIX) + 8, len(UNBONDING_PREFIX) + 8 + ADDRESS_LEN)
_UNB_DELEGATOR = slice(len(UNBONDING_PREFIX) + 8 + ADDRESS_LEN, None)


def _get_delegation(view: Overlay, validator: bytes, delegator: bytes) -> int:
    d = get_record(view, delegation_key(validator, delegator), Delegation)
    return 0 if d is None else d.amount


def _put_delegation(view: Overlay, validator: bytes, delegator: bytes, amount: int) -> None:
    if amount == 0:
        view.delete(delegation_key(validator, delegator))
    else:
        put_record(view, delegation_key(validator, delegator), Delegation(amount))


def _existing_validator(ctx: TxContext, pubkey: bytes) -> tuple[bytes, ValidatorRecord]:
    addr = address_of(pubkey)
    rec = get_validator(ctx.view, addr)
    if rec is None or rec.pubkey != pubkey:
        raise TxError(Code.UNKNOWN_VALIDATOR, f"no validator with address {addr.hex()}")
    return addr, rec


# ---------------------------------------------------------------- tx handlers


def handle_bond(ctx: TxContext, body: TxBody) -> None:
    assert isinstance(body, Bond)
    addr = address_of(body.validator_pubkey)
    rec = get_validator(ctx.view, addr)
    if rec is None:
        # No proof of possession: an operator must bond to a key it controls (docs/ledger.md).
        rec = ValidatorRecord(body.validator_pubkey, ctx.signer, 0, False, 0, "")
        ctx.emit("create_validator", validator=addr, operator=ctx.signer)
    elif rec.pubkey != body.validator_pubkey:  # a 160-bit address collision
        raise TxError(Code.INVALID_TX, "validator address belongs to another key")
    debit(ctx, ctx.signer, body.amount)
    delegated = _get_delegation(ctx.view, addr, ctx.signer)
    _put_delegation(ctx.view, addr, ctx.signer, delegated + body.amount)
    put_record(
        ctx.view, validator_key(addr), dataclasses.replace(rec, tokens=rec.tokens + body.amount)
    )
    ctx.emit("bond", validator=addr, delegator=ctx.signer, amount=body.amount)


def handle_unbond(ctx: TxContext, body: TxBody) -> None:
    assert isinstance(body, Unbond)
    addr, rec = _existing_validator(ctx, body.validator_pubkey)
    delegated = _get_delegation(ctx.view, addr, ctx.signer)
    if delegated < body.amount:
        raise TxError(Code.INSUFFICIENT_STAKE, f"bonded {delegated} < {body.amount}")
    _put_delegation(ctx.view, addr, ctx.signer, delegated - body.amount)
    put_record(
        ctx.view, validator_key(addr), dataclasses.replace(rec, tokens=rec.tokens - body.amount)
    )
    height = ctx.info.height
    release = height + ctx.params.staking.unbonding_blocks
    key = unbonding_key(release, addr, ctx.signer)
    prev = get_record(ctx.view, key, UnbondingEntry)
    amount = body.amount + (prev.amount if prev else 0)
    created = min(height, prev.creation_height) if prev else height
    put_record(ctx.view, key, UnbondingEntry(amount, created))
    ctx.emit("unbond", validator=addr, delegator=ctx.signer, amount=body.amount, release=release)


def handle_unjail(ctx: TxContext, body: TxBody) -> None:
    assert isinstance(body, Unjail)
    addr, rec = _existing_validator(ctx, body.validator_pubkey)
    if rec.operator != ctx.signer:
        raise TxError(Code.UNAUTHORIZED, "only the validator's operator may unjail it")
    if not rec.jailed:
        raise TxError(Code.NOT_JAILED, "validator is not jailed")
    if ctx.info.height < rec.jailed_until:
        raise TxError(Code.STILL_JAILED, f"jailed until height {rec.jailed_until}")
    put_record(ctx.view, validator_key(addr), dataclasses.replace(rec, jailed=False))
    ctx.emit("unjail", validator=addr)


# ---------------------------------------------------------------- slashing


def slash(view: Overlay, validator: bytes, infraction_height: int, fraction_ppm: int) -> int:
    """Burn ``fraction_ppm`` / 1e6 of the validator's stake; returns the tokens burned.

    Every delegation is cut (rounding down), and so is every unbonding entry
    created at or after the infraction height: stake that was bonded when
    the validator misbehaved stays accountable while it unbonds.
    """
    rec = get_validator(view, validator)
    if rec is None:
        return 0
    burned_bonded = 0
    for key, raw in list(view.items(delegation_key(validator, b""))):
        amount = decode_record(raw, Delegation).amount
        cut = amount * fraction_ppm // PPM
        if cut:
            burned_bonded += cut
            _put_delegation(view, validator, key[-ADDRESS_LEN:], amount - cut)
    burned = burned_bonded
    for key, raw in list(view.items(UNBONDING_PREFIX)):
        if key[_UNB_VAL] != validator:
            continue
        entry = decode_record(raw, UnbondingEntry)
        if entry.creation_height < infraction_height:
            continue
        cut = entry.amount * fraction_ppm // PPM
        if cut:
            burned += cut
            if entry.amount == cut:
                view.delete(key)
            else:
                put_record(view, key, UnbondingEntry(entry.amount - cut, entry.creation_height))
    rec = get_validator(view, validator)
    assert rec is not None
    put_record(
        view, validator_key(validator), dataclasses.replace(rec, tokens=rec.tokens - burned_bonded)
    )
    return burned


def jail(view: Overlay, validator: bytes, until: int) -> None:
    """Take the validator out of the set (from H+2) until its operator unjails it at ``until``."""
    rec = get_validator(view, validator)
    if rec is None:
        return
    until = max(until, rec.jailed_until)
    put_record(
        view, validator_key(validator), dataclasses.replace(rec, jailed=True, jailed_until=until)
    )


def already_slashed_for_double_sign(view: View, height: int, validator: bytes) -> bool:
    return view.get(double_sign_key(height, validator)) is not None


def punish_double_sign(ctx: BlockContext, evidence: DuplicateVoteEvidence) -> None:
    """The application's answer to committed DuplicateVoteEvidence: slash, jail, remember."""
    addr = evidence.validator_address
    staking = ctx.params.staking
    burned = slash(ctx.view, addr, evidence.height, staking.double_sign_slash_ppm)
    jail(ctx.view, addr, ctx.info.height + staking.jail_blocks)
    put_record(
        ctx.view, double_sign_key(evidence.height, addr), SlashRecord(ctx.info.height, burned)
    )
    ctx.emit(
        "slash",
        validator=addr,
        reason="double_sign",
        infraction_height=evidence.height,
        burned=burned,
    )


# ---------------------------------------------------------------- end block


def mature_unbondings(ctx: BlockContext) -> None:
    """Pay out the unbonding entries whose release height has come."""
    height = ctx.info.height
    for key, raw in list(ctx.view.items(UNBONDING_PREFIX)):
        if int.from_bytes(key[_UNB_HEIGHT], "big") > height:
            break
        entry = decode_record(raw, UnbondingEntry)
        delegator = key[_UNB_DELEGATOR]
        acct = get_account(ctx.view, delegator)
        put_account(ctx.view, delegator, Account(acct.balance + entry.amount, acct.nonce))
        ctx.view.delete(key)
        ctx.emit(
            "unbonding_complete", validator=key[_UNB_VAL], delegator=delegator, amount=entry.amount
        )


def prune_double_sign_records(ctx: BlockContext) -> None:
    """Forget markers older than the evidence age limit: such evidence is refused anyway."""
    cutoff = ctx.info.height - ctx.params.evidence.max_age_num_blocks
    end = DOUBLE_SIGN_PREFIX + u64(max(cutoff, 0))
    for key, _ in list(ctx.view.items(DOUBLE_SIGN_PREFIX)):
        if key >= end:
            break
        ctx.view.delete(key)


def compute_validator_set(view: Overlay) -> ValidatorSet:
    vals = []
    for key, raw in view.items(VALIDATOR_PREFIX):
        rec = decode_record(raw, ValidatorRecord)
        if rec.power > 0:
            vals.append(Validator(key[len(VALIDATOR_PREFIX) :], rec.pubkey, rec.power))
    return ValidatorSet.from_validators(vals)
