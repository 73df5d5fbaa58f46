"""The extension points the FL contract uses: tx handlers, hooks, block validators, contract state."""

from __future__ import annotations

import pytest

from ledger.app import Application, make_application
from ledger.block import Block
from ledger.chainstate import ChainState
from ledger.context import BlockContext, TxContext
from ledger.errors import InvalidBlockError
from ledger.results import Code, TxError
from ledger.schema import contract_prefix, get_account
from ledger.staking import jail
from ledger.testing import ChainBuilder, Wallet, make_testnet
from ledger.tx import TxBody
from tests.ledger.strategies import DemoPol, Note

NOTES = contract_prefix("notes")


def handle_note(ctx: TxContext, body: TxBody) -> None:
    assert isinstance(body, Note)
    if body.text == "boom":
        ctx.view.set(NOTES + b"partial", b"x")  # must be rolled back
        raise TxError(150, "refused")
    if body.text == "crash":
        ctx.view.set(NOTES + b"partial", b"x")
        raise KeyError("handler bug")
    ctx.view.set(NOTES + ctx.signer, body.text.encode())
    ctx.emit("note", author=ctx.signer, checking=ctx.checking)


def setup(app: Application) -> tuple[ChainBuilder, Wallet]:
    net = make_testnet(4, 1)
    cb = ChainBuilder(net, app=app)
    return cb, Wallet(net.account_keys[0], net.chain_id)


def test_unregistered_body_type_is_an_error_result() -> None:
    cb, w = setup(make_application())
    r = cb.advance([w.sign(Note("hi"))])
    assert r.results.tx_results[0].code == Code.UNKNOWN_TX_TYPE
    assert get_account(cb.state.app, w.address).nonce == 0


def test_registered_handler_runs_and_failures_roll_back() -> None:
    app = make_application()
    app.register_tx_handler(Note, handle_note)
    cb, w = setup(app)
    r = cb.advance([w.sign(Note("hi")), w.sign(Note("boom")), w.sign(Note("crash"))])
    assert [x.code for x in r.results.tx_results] == [0, 150, Code.INTERNAL_ERROR]
    assert r.results.tx_results[1].log == "refused"
    assert cb.state.app.get(NOTES + w.address) == b"hi"
    assert cb.state.app.get(NOTES + b"partial") is None
    assert get_account(cb.state.app, w.address).nonce == 3  # failed handlers keep the nonce bump
    with pytest.raises(ValueError, match="already registered"):
        app.register_tx_handler(Note, handle_note)
    with pytest.raises(TypeError):
        app.register_tx_handler(int, handle_note)  # type: ignore[arg-type]


def test_check_tx_runs_the_handler_in_checking_mode() -> None:
    app = make_application()
    app.register_tx_handler(Note, handle_note)
    cb, w = setup(app)
    assert app.check_tx(cb.state, w.sign(Note("boom"))).code == 150
    w.nonce = 0  # a rejected tx leaves nothing behind, not even its nonce
    res = app.check_tx(cb.state, w.sign(Note("ok")))
    assert res.ok and res.events[0].attributes["checking"] == "True"


def test_begin_end_hooks_and_block_validators() -> None:
    app = make_application()
    seen: list[tuple[str, int, int]] = []

    def begin(ctx: BlockContext) -> None:
        seen.append(("begin", ctx.info.height, len(ctx.block.txs) if ctx.block else -1))
        ctx.view.set(NOTES + b"height", ctx.info.height.to_bytes(8, "big"))

    def end(ctx: BlockContext) -> None:
        seen.append(("end", ctx.info.height, 0))
        if ctx.info.height == 2:
            # contracts punish through the staking API; the set for H+2 follows by itself
            jail(ctx.view, ctx.block.header.proposer_address, ctx.info.height + 10)  # type: ignore[union-attr]
        ctx.emit("round_closed", height=ctx.info.height)

    def require_pol_on_even_heights(state: ChainState, block: Block) -> None:
        if block.height % 2 == 0 and not isinstance(block.pol, DemoPol):
            raise InvalidBlockError("PoL section required")

    app.add_begin_block(begin)
    app.add_end_block(end)
    app.add_block_validator(require_pol_on_even_heights)
    cb, w = setup(app)
    r1 = cb.advance([w.transfer(w.address, 1)])
    assert seen == [("begin", 1, 1), ("end", 1, 0)]
    assert r1.results.end_block_events[0].type == "round_closed"
    with pytest.raises(InvalidBlockError, match="PoL section required"):
        cb.advance()
    r2 = cb.advance(pol=DemoPol((b"\x01" * 32,)))
    assert r2.block.pol == DemoPol((b"\x01" * 32,))
    assert cb.state.app.get(NOTES + b"height") == (2).to_bytes(8, "big")
    proposer = r2.block.header.proposer_address
    assert cb.state.next_validators.get(proposer) is None
    assert r2.results.validator_set_update is not None


def test_contract_prefix_rules() -> None:
    assert contract_prefix("fl") == b"ctr/fl/"
    for bad in ("", "a/b", "é"):
        with pytest.raises(ValueError):
            contract_prefix(bad)
