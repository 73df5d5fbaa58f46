"""The Transfer handler: moves tokens between accounts."""

from __future__ import annotations

from ledger.context import TxContext
from ledger.results import Code, TxError
from ledger.schema import Account, get_account, put_account
from ledger.tx import Transfer, TxBody


def debit(ctx: TxContext, address: bytes, amount: int) -> None:
    acct = get_account(ctx.view, address)
    if acct.balance < amount:
        raise TxError(Code.INSUFFICIENT_FUNDS, f"balance {acct.balance} < {amount}")
    put_account(ctx.view, address, Account(acct.balance - amount, acct.nonce))


def credit(ctx: TxContext, address: bytes, amount: int) -> None:
    acct = get_account(ctx.view, address)
    put_account(ctx.view, address, Account(acct.balance + amount, acct.nonce))


def handle_transfer(ctx: TxContext, body: TxBody) -> None:
    assert isinstance(body, Transfer)
    debit(ctx, ctx.signer, body.amount)
    credit(ctx, body.to, body.amount)
    ctx.emit("transfer", sender=ctx.signer, recipient=body.to, amount=body.amount)
