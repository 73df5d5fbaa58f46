"""The application: deterministic block execution, CheckTx, queries, and the extension registry.

``Application`` holds the registries that the FL task contract extends:

* ``register_tx_handler(body_type, handler)``: execute a ``TxBody`` subclass;
* ``register_evidence(evidence_type, verify, handle)``: accept and punish evidence;
* ``add_begin_block(hook)`` / ``add_end_block(hook)``: per-block logic;
* ``add_block_validator(hook)``: ProcessProposal-style checks (e.g. the PoL section).

Block execution order (every node, every block): validate the block; evidence
handlers; begin-block hooks; transactions in block order; end-block hooks;
core end block (mature unbondings, prune double-sign markers); derive the
validator set for H+2 from the staking records. A transaction that fails
authentication (signature, nonce) changes nothing; one whose handler raises
:class:`TxError` keeps only its nonce increment.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ledger.bank import handle_transfer
from ledger.block import Block
from ledger.chainstate import ChainState
from ledger.codec import encode, record_types
from ledger.context import (
    BlockContext,
    BlockHook,
    BlockInfo,
    TxContext,
    TxHandler,
    ValidatorHistory,
)
from ledger.errors import InvalidBlockError, InvalidCommitError, InvalidEvidenceError
from ledger.evidence import DuplicateVoteEvidence, Evidence, verify_duplicate_vote
from ledger.fl import register as register_fl_contract
from ledger.results import BlockResults, Code, TxError, TxResult, results_hash
from ledger.schema import Account, get_account, put_account
from ledger.staking import (
    already_slashed_for_double_sign,
    compute_validator_set,
    handle_bond,
    handle_unbond,
    handle_unjail,
    mature_unbondings,
    prune_double_sign_records,
    punish_double_sign,
)
from ledger.state import Overlay, QueryResult
from ledger.tx import Bond, Transfer, Tx, TxBody, Unbond, Unjail
from ledger.validators import ValidatorSet
from ledger.votes import verify_commit

EvidenceVerifier = Callable[[ChainState, Evidence, ValidatorHistory], None]
EvidenceHandler = Callable[[BlockContext, Evidence], None]
BlockValidator = Callable[[ChainState, Block], None]


class StateHistory:
    """The validator sets a ``ChainState`` itself knows: last, current and next height."""

    def __init__(self, state: ChainState) -> None:
        self._state = state

    def validators_at(self, height: int) -> ValidatorSet | None:
        s = self._state
        if height == s.last_block_height and height >= s.initial_height:
            return s.last_validators
        if height == s.height:
            return s.validators
        if height == s.height + 1:
            return s.next_validators
        return None


@dataclass(frozen=True)
class _EvidenceKind:
    verify: EvidenceVerifier
    handle: EvidenceHandler


class Application:
    def __init__(self) -> None:
        self._tx_handlers: dict[type[TxBody], TxHandler] = {}
        self._evidence: dict[type[Evidence], _EvidenceKind] = {}
        self._begin: list[BlockHook] = []
        self._end: list[BlockHook] = []
        self._block_validators: list[BlockValidator] = []

    # ---------------------------------------------------------------- registry

    def register_tx_handler(self, body_type: type[TxBody], handler: TxHandler) -> None:
        if not (isinstance(body_type, type) and issubclass(body_type, TxBody)):
            raise TypeError("body_type must be a TxBody subclass")
        if body_type not in record_types().values():
            raise TypeError(f"{body_type.__name__} is not a registered @record")
        if body_type in self._tx_handlers:
            raise ValueError(f"a handler for {body_type.__name__} is already registered")
        self._tx_handlers[body_type] = handler

    def register_evidence(
        self, evidence_type: type[Evidence], verify: EvidenceVerifier, handle: EvidenceHandler
    ) -> None:
        if evidence_type in self._evidence:
            raise ValueError(f"{evidence_type.__name__} is already registered")
        self._evidence[evidence_type] = _EvidenceKind(verify, handle)

    def add_begin_block(self, hook: BlockHook) -> None:
        self._begin.append(hook)

    def add_end_block(self, hook: BlockHook) -> None:
        self._end.append(hook)

    def add_block_validator(self, hook: BlockValidator) -> None:
        """``hook(state, block)`` raises :class:`InvalidBlockError` to reject a proposal."""
        self._block_validators.append(hook)

    def tx_body_types(self) -> list[type[TxBody]]:
        return list(self._tx_handlers)

    # ---------------------------------------------------------------- validation

    def validate_block(
        self, state: ChainState, block: Block, history: ValidatorHistory | None = None
    ) -> None:
        """Raise :class:`InvalidBlockError` unless ``block`` may follow ``state``.

        This is the ProcessProposal check (the consensus driver prevotes nil on
        an error) and the first step of :meth:`apply_block`. It does not run
        the transactions: a failing transaction is a result, not an invalid block.
        """
        h = block.header
        params = state.params

        def expect(ok: bool, what: str) -> None:
            if not ok:
                raise InvalidBlockError(f"block {h.height}: {what}")

        expect(h.chain_id == state.chain_id, f"chain id {h.chain_id!r} != {state.chain_id!r}")
        expect(h.height == state.height, f"expected height {state.height}")
        first = h.height == state.initial_height
        if first:
            expect(h.time >= state.last_block_time, "time before genesis time")
        else:
            expect(h.time > state.last_block_time, "time not after the last block's time")
        expect(h.last_block_id == state.last_block_id, "wrong last_block_id")
        expect(h.validators_hash == state.validators.hash, "wrong validators_hash")
        expect(h.next_validators_hash == state.next_validators.hash, "wrong next_validators_hash")
        expect(h.app_hash == state.app_hash, "wrong app_hash")
        expect(h.last_results_hash == state.last_results_hash, "wrong last_results_hash")
        expect(state.validators.get(h.proposer_address) is not None, "proposer not a validator")
        bad = block.check_body_hashes()
        expect(bad is None, f"body does not match header {bad}")
        expect(len(block.txs) <= params.block.max_txs, f"more than {params.block.max_txs} txs")
        size = len(block.encoded)
        expect(size <= params.block.max_bytes, f"{size} bytes exceeds {params.block.max_bytes}")

        if first:
            expect(block.last_commit is None, "first block carries a last commit")
        else:
            if block.last_commit is None:
                raise InvalidCommitError(f"block {h.height}: missing last commit")
            try:
                verify_commit(
                    state.chain_id,
                    state.last_validators,
                    block.last_commit,
                    state.last_block_id,
                    height=state.last_block_height,
                )
            except InvalidCommitError as e:
                raise InvalidCommitError(f"block {h.height}: last commit: {e}") from e

        self._validate_evidence(state, block, history or StateHistory(state))
        for hook in self._block_validators:
            hook(state, block)

    def _validate_evidence(
        self, state: ChainState, block: Block, history: ValidatorHistory
    ) -> None:
        max_age = state.params.evidence.max_age_num_blocks
        total = 0
        seen: set[bytes] = set()
        for i, ev in enumerate(block.evidence):
            where = f"block {block.height}: evidence {i}"
            kind = self._evidence.get(type(ev))
            if kind is None:
                raise InvalidEvidenceError(f"{where}: no handler for {type(ev).__name__}")
            if not ev.height <= state.last_block_height:
                raise InvalidEvidenceError(f"{where}: height {ev.height} is not in the past")
            if state.height - ev.height > max_age:
                raise InvalidEvidenceError(f"{where}: older than {max_age} blocks")
            key = ev.dedup_key()
            if key in seen:
                raise InvalidEvidenceError(f"{where}: duplicates earlier evidence")
            seen.add(key)
            total += len(encode(ev))
            if total > state.params.evidence.max_bytes:
                raise InvalidEvidenceError(
                    f"{where}: evidence bytes exceed {state.params.evidence.max_bytes}"
                )
            try:
                kind.verify(state, ev, history)
            except InvalidEvidenceError as e:
                raise InvalidEvidenceError(f"{where}: {e}") from e

    # ---------------------------------------------------------------- execution

    def apply_block(
        self, state: ChainState, block: Block, history: ValidatorHistory | None = None
    ) -> tuple[ChainState, BlockResults]:
        """Validate and execute ``block``; returns the new state and the results.

        Deterministic: a pure function of (state, block, the validator sets of
        past heights that evidence refers to). Raises :class:`InvalidBlockError`
        (and changes nothing) for a block that must not be committed.
        """
        self.validate_block(state, block, history)
        h = block.header
        root = Overlay(state.app)
        info = BlockInfo(state.chain_id, h.height, h.time, h.proposer_address)
        ctx = BlockContext(root, info, state.params, block)

        for ev in block.evidence:
            self._evidence[type(ev)].handle(ctx, ev)
        for hook in self._begin:
            hook(ctx)
        begin_events = tuple(ctx.events)
        ctx.events = []

        tx_results = tuple(self._deliver(ctx, tx) for tx in block.txs)

        for hook in self._end:
            hook(ctx)
        mature_unbondings(ctx)
        prune_double_sign_records(ctx)
        next_validators = compute_validator_set(root)
        if len(next_validators) == 0:
            # An empty set would halt the chain for good; keep the last one and say so.
            ctx.emit("validator_set_kept", reason="no validator would be left with power")
            next_validators = state.next_validators
        changed = next_validators != state.next_validators

        results = BlockResults(
            height=h.height,
            tx_results=tx_results,
            begin_block_events=begin_events,
            end_block_events=tuple(ctx.events),
            validator_set_update=next_validators if changed else None,
        )
        new_state = ChainState(
            chain_id=state.chain_id,
            initial_height=state.initial_height,
            last_block_height=h.height,
            last_block_id=block.id,
            last_block_time=h.time,
            last_validators=state.validators,
            validators=state.next_validators,
            next_validators=next_validators,
            last_results_hash=results_hash(tx_results),
            app=state.app.apply(root.changes()),
        )
        return new_state, results

    def _run_tx(
        self, view: Overlay, ctx: BlockContext, tx: Tx, *, verify_signature: bool, checking: bool
    ) -> TxResult:
        """Authenticate and execute ``tx`` on ``view``; on success its writes are committed."""
        handler = self._tx_handlers.get(type(tx.body))
        if handler is None:
            return TxResult(Code.UNKNOWN_TX_TYPE, f"no handler for {type(tx.body).__name__}")
        if verify_signature and not tx.verify_signature(ctx.info.chain_id):
            return TxResult(Code.BAD_SIGNATURE, "signature does not verify for this chain")
        signer = tx.signer
        auth = view.child()
        acct = get_account(auth, signer)
        if tx.nonce < acct.nonce:
            return TxResult(Code.NONCE_TOO_LOW, f"nonce {tx.nonce} < expected {acct.nonce}")
        if tx.nonce > acct.nonce:
            return TxResult(Code.NONCE_TOO_HIGH, f"nonce {tx.nonce} > expected {acct.nonce}")
        put_account(auth, signer, Account(acct.balance, acct.nonce + 1))
        body_view = auth.child()
        tctx = TxContext(body_view, ctx, tx, signer, checking)
        try:
            handler(tctx, tx.body)
        except TxError as e:
            result = TxResult(e.code, e.log)
        except Exception as e:  # a handler bug must not halt the chain; same on every node
            result = TxResult(Code.INTERNAL_ERROR, f"internal error: {type(e).__name__}")
        else:
            body_view.commit()
            result = TxResult(Code.OK, "", tuple(tctx.events))
        if checking and not result.ok:
            return result  # CheckTx keeps nothing of a rejected tx
        auth.commit()
        return result

    def _deliver(self, ctx: BlockContext, tx: Tx) -> TxResult:
        return self._run_tx(ctx.view, ctx, tx, verify_signature=True, checking=False)

    def check_tx(
        self,
        state: ChainState,
        tx: Tx,
        *,
        view: Overlay | None = None,
        verify_signature: bool = True,
    ) -> TxResult:
        """Mempool admission of a decoded tx against ``state`` (or a pending ``view`` over it).

        On success the tx's effects (nonce, balances) are written to ``view``,
        so later txs of the same sender are checked against them.
        """
        v = view if view is not None else Overlay(state.app)
        info = BlockInfo(state.chain_id, state.height, state.last_block_time, b"")
        ctx = BlockContext(v, info, state.params, None)
        return self._run_tx(v, ctx, tx, verify_signature=verify_signature, checking=True)

    # ---------------------------------------------------------------- queries

    def query(self, state: ChainState, key: bytes) -> QueryResult:
        """The value under ``key`` with a Merkle proof against ``state.app_hash``."""
        return state.app.query(key, state.last_block_height)


# ---------------------------------------------------------------- core wiring


def _verify_double_sign(state: ChainState, ev: Evidence, history: ValidatorHistory) -> None:
    assert isinstance(ev, DuplicateVoteEvidence)
    if already_slashed_for_double_sign(state.app, ev.height, ev.validator_address):
        raise InvalidEvidenceError("validator already punished for double signing at this height")
    vset = history.validators_at(ev.height)
    if vset is None:
        raise InvalidEvidenceError(f"validator set at height {ev.height} is unknown")
    verify_duplicate_vote(state.chain_id, ev, vset)


def _punish_double_sign(ctx: BlockContext, ev: Evidence) -> None:
    assert isinstance(ev, DuplicateVoteEvidence)
    punish_double_sign(ctx, ev)


def make_application() -> Application:
    """An application with the core transactions, evidence and the FL task contract installed.

    (Importing this module also registers the contract's records, tags 100-199,
    with the codec, so blocks with FL transactions and sections decode.)
    """
    app = Application()
    app.register_tx_handler(Transfer, handle_transfer)
    app.register_tx_handler(Bond, handle_bond)
    app.register_tx_handler(Unbond, handle_unbond)
    app.register_tx_handler(Unjail, handle_unjail)
    app.register_evidence(DuplicateVoteEvidence, _verify_double_sign, _punish_double_sign)
    register_fl_contract(app)
    return app
