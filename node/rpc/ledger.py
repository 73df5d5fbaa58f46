"""Ledger RPC methods (CometBFT names and result shapes): txs, blocks, validators, queries.

Shapes follow CometBFT's JSON: hashes and addresses are upper-case hex, 64-bit
integers are decimal strings (``"height": "5"``), tx bytes, keys, values and
signatures are base64, times are RFC 3339. Blocks are not split into parts, so a
``block_id`` carries only its ``hash``. Bad params answer -32602 naming the param;
a height or hash the node does not have answers -32002 with the latest height.

``abci_query`` proofs are the ledger's own (:class:`ledger.state.LeafProof` records
in ``proofOps``); :func:`verify_query_response` is the client side of that format,
kept here next to the encoder so the two cannot drift apart.
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any

import trio

from ledger.block import Block, Header
from ledger.codec import CodecError, decode_record, encode, sha256
from ledger.evidence import DuplicateVoteEvidence, Evidence
from ledger.genesis import format_time
from ledger.mempool import CheckTxResult
from ledger.merkle import merkle_proof
from ledger.results import BlockResults, Code, Event, TxResult
from ledger.schema import (
    ACCOUNT_PREFIX,
    VALIDATOR_PREFIX,
    Account,
    ValidatorRecord,
    account_key,
    validator_key,
)
from ledger.state import LeafProof, QueryResult, verify_query
from ledger.store import TxRecord
from ledger.validators import Validator, ValidatorSet
from ledger.votes import BlockIdFlag, Commit, Vote
from node.keys import pubkey_json
from node.rpc.jsonrpc import (
    NOT_FOUND,
    SERVER_ERROR,
    TIMEOUT,
    UNAVAILABLE,
    Param,
    Registry,
    RPCError,
    invalid_params,
)

if TYPE_CHECKING:
    from node.daemon import Node

MAX_BLOCKCHAIN_METAS = 20  # CometBFT's limit per `blockchain` call
DEFAULT_PER_PAGE = 30
MAX_PER_PAGE = 100
PROOF_OP_TYPE = "fedledger:state_leaf"
QUERY_PATHS = "/account/<address hex>, /validator/<address or pubkey hex>, /store/<key hex>"
_ZERO_TIME = "0001-01-01T00:00:00Z"  # CometBFT's zero time, for absent commit slots
_ADDRESS_LEN = 20
_PUBKEY_LEN = 32


# ---------------------------------------------------------------- JSON shapes


def _hex(b: bytes) -> str:
    return b.hex().upper()


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def block_id_json(block_id: bytes | None) -> dict[str, Any]:
    return {"hash": _hex(block_id or b"")}


def header_json(h: Header) -> dict[str, Any]:
    return {
        "chain_id": h.chain_id,
        "height": str(h.height),
        "time": format_time(h.time),
        "last_block_id": block_id_json(h.last_block_id),
        "last_commit_hash": _hex(h.last_commit_hash),
        "data_hash": _hex(h.data_hash),
        "validators_hash": _hex(h.validators_hash),
        "next_validators_hash": _hex(h.next_validators_hash),
        "app_hash": _hex(h.app_hash),
        "last_results_hash": _hex(h.last_results_hash),
        "evidence_hash": _hex(h.evidence_hash),
        "pol_hash": _hex(h.pol_hash),
        "proposer_address": _hex(h.proposer_address),
    }


def commit_json(c: Commit | None) -> dict[str, Any]:
    if c is None:  # the first block's last commit, as CometBFT renders it
        return {"height": "0", "round": 0, "block_id": block_id_json(None), "signatures": []}
    sigs = []
    for s in c.signatures:
        absent = s.flag == BlockIdFlag.ABSENT
        sigs.append(
            {
                "block_id_flag": int(s.flag),
                "validator_address": _hex(s.validator_address),
                "timestamp": _ZERO_TIME if absent else format_time(s.timestamp),
                "signature": None if absent else _b64(s.signature),
            }
        )
    return {
        "height": str(c.height),
        "round": c.round,
        "block_id": block_id_json(c.block_id),
        "signatures": sigs,
    }


def vote_json(v: Vote) -> dict[str, Any]:
    return {
        "type": int(v.type),
        "height": str(v.height),
        "round": v.round,
        "block_id": block_id_json(v.block_id),
        "timestamp": format_time(v.timestamp),
        "validator_address": _hex(v.validator_address),
        "validator_index": v.validator_index,
        "signature": _b64(v.signature),
    }


def evidence_json(ev: Evidence) -> dict[str, Any]:
    if isinstance(ev, DuplicateVoteEvidence):
        return {
            "type": "tendermint/DuplicateVoteEvidence",
            "value": {
                "vote_a": vote_json(ev.vote_a),
                "vote_b": vote_json(ev.vote_b),
                "height": str(ev.height),
                "hash": _hex(ev.hash),
            },
        }
    # Evidence kinds added by contracts: their canonical bytes, decodable with the ledger codec.
    return {
        "type": f"fedledger/{type(ev).__name__}",
        "value": {"height": str(ev.height), "hash": _hex(ev.hash), "data": _b64(encode(ev))},
    }


def block_json(b: Block) -> dict[str, Any]:
    pol = None
    if b.pol is not None:
        pol = {
            "type": type(b.pol).__name__,
            "hash": _hex(b.header.pol_hash),
            "data": _b64(encode(b.pol)),
        }
    return {
        "header": header_json(b.header),
        "data": {"txs": [_b64(tx.encoded) for tx in b.txs]},
        "evidence": {"evidence": [evidence_json(ev) for ev in b.evidence]},
        "last_commit": commit_json(b.last_commit),
        "pol": pol,
    }


def block_meta_json(b: Block) -> dict[str, Any]:
    return {
        "block_id": block_id_json(b.id),
        "block_size": str(len(b.encoded)),
        "header": header_json(b.header),
        "num_txs": str(len(b.txs)),
    }


def event_json(e: Event) -> dict[str, Any]:
    return {
        "type": e.type,
        "attributes": [{"key": k, "value": v, "index": True} for k, v in e.attributes.items()],
    }


def code_name(code: int) -> str:
    try:
        return Code(code).name
    except ValueError:
        return ""  # a contract's code (100-199); its module names it


def tx_result_json(r: TxResult) -> dict[str, Any]:
    """CometBFT's ExecTxResult; ``info`` carries the code's name (no gas on this chain)."""
    return {
        "code": r.code,
        "data": None,
        "log": r.log,
        "info": code_name(r.code),
        "gas_wanted": "0",
        "gas_used": "0",
        "events": [event_json(e) for e in r.events],
        "codespace": "",
    }


def check_tx_json(r: CheckTxResult) -> dict[str, Any]:
    return tx_result_json(TxResult(r.code, r.log))


def validator_json(v: Validator, proposer_priority: int = 0) -> dict[str, Any]:
    return {
        "address": _hex(v.address),
        "pub_key": pubkey_json(v.pubkey),
        "voting_power": str(v.power),
        "proposer_priority": str(proposer_priority),
    }


def _validator_updates(before: ValidatorSet | None, after: ValidatorSet) -> list[dict[str, Any]]:
    """CometBFT's ValidatorUpdate diff: changed or new powers, and power 0 for removals."""
    old = {v.address: v for v in (before.validators if before else ())}
    out = [
        {"pub_key": pubkey_json(v.pubkey), "power": str(v.power)}
        for v in after.validators
        if old.get(v.address) != v
    ]
    new = {v.address for v in after.validators}
    out += [
        {"pub_key": pubkey_json(v.pubkey), "power": "0"}
        for a, v in sorted(old.items())
        if a not in new
    ]
    return out


# ---------------------------------------------------------------- abci_query proofs


def query_response_json(qr: QueryResult, prove: bool, decoded: Any) -> dict[str, Any]:
    found = qr.value is not None
    ops = None
    if prove:
        ops = {
            "ops": [
                {"type": PROOF_OP_TYPE, "key": _b64(p.key), "data": _b64(encode(p))}
                for p in qr.proofs
            ]
        }
    return {
        "response": {
            "code": 0,
            "log": "exists" if found else "does not exist",
            "info": "",
            "index": "0",
            "key": _b64(qr.key),
            "value": None if qr.value is None else _b64(qr.value),
            "proofOps": ops,
            "height": str(qr.height),
            "codespace": "",
            "decoded": decoded,
        }
    }


def query_result_from_response(result: dict[str, Any]) -> QueryResult:
    """Rebuild the ledger's :class:`QueryResult` from an ``abci_query`` result.

    Raises ValueError when the answer carries no proof or is malformed.
    """
    try:
        resp = result["response"]
        ops = resp.get("proofOps")
        if not isinstance(ops, dict) or not isinstance(ops.get("ops"), list):
            raise ValueError("the answer carries no proof (query with prove=true)")
        proofs = []
        for op in ops["ops"]:
            if op.get("type") != PROOF_OP_TYPE:
                raise ValueError(f"unknown proof op type {op.get('type')!r}")
            proofs.append(decode_record(base64.b64decode(op["data"], validate=True), LeafProof))
        value = resp.get("value")
        return QueryResult(
            key=base64.b64decode(resp["key"], validate=True),
            value=None if value is None else base64.b64decode(value, validate=True),
            height=int(resp["height"]),
            proofs=tuple(proofs),
        )
    except (KeyError, TypeError, AttributeError, binascii.Error, CodecError) as e:
        raise ValueError(f"malformed abci_query answer: {e}") from None


def verify_query_response(result: dict[str, Any], app_hash: bytes) -> bool:
    """True iff an ``abci_query`` answer (with ``prove=true``) is proven by ``app_hash``.

    ``app_hash`` must be the hash of the state after block ``response.height``: the
    ``app_hash`` of header ``height + 1``, or ``status``'s ``latest_app_hash`` while
    ``height`` is the latest height.
    """
    return verify_query(app_hash, query_result_from_response(result))


# ---------------------------------------------------------------- param parsing


def parse_hash(name: str, value: str) -> bytes:
    """A 32-byte hash given as hex (optionally 0x) or base64."""
    s = value.strip()
    if s.lower().startswith("0x"):
        s = s[2:]
    if len(s) == 64:
        try:
            return bytes.fromhex(s)
        except ValueError:
            pass
    try:
        raw = base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise invalid_params(f"{name}: expected a 32-byte hash as 64 hex digits or base64")
    return raw


def _hex_arg(name: str, text: str) -> bytes:
    s = text[2:] if text.lower().startswith("0x") else text
    try:
        return bytes.fromhex(s)
    except ValueError:
        raise invalid_params(f"{name}: {text!r:.80} is not valid hex") from None


def _not_found(msg: str) -> RPCError:
    return RPCError(NOT_FOUND, "Not found", msg)


# ---------------------------------------------------------------- async CheckTx worker


class _AsyncSubmitter:
    """CheckTx for ``broadcast_tx_async``: the call returns at once, one worker (a node
    service) checks the txs in arrival order, so a client's consecutive nonces are admitted
    in order."""

    def __init__(self, node: Node, capacity: int) -> None:
        self._node = node
        self._send, self._recv = trio.open_memory_channel[bytes](capacity)
        node.add_service("rpc-async-checktx", self._run)

    def submit(self, raw: bytes) -> bool:
        try:
            self._send.send_nowait(raw)
        except trio.WouldBlock:
            return False
        return True

    async def _run(self) -> None:
        async for raw in self._recv:
            try:
                await self._node.chain.submit_tx(raw)
            except Exception as e:  # a worker crash would stop every later async broadcast
                self._node.log.error("async CheckTx failed", error=repr(e))


# ---------------------------------------------------------------- methods


def register_ledger(reg: Registry, node: Node) -> None:
    """Register the ledger methods on the node's registry."""
    chain = node.chain
    submitter = _AsyncSubmitter(node, capacity=max(1, node.cfg.mempool.max_txs))

    def latest() -> int:
        return chain.height

    def stored_height(height: int | None) -> int:
        """``height`` (default: the latest) if its block is stored, else -32002."""
        top, base = latest(), chain.store.base
        if height is None:
            if top < base:
                raise _not_found("no block committed yet: the latest height is 0")
            return top
        if height > top:
            raise _not_found(f"height {height} is not available: the latest height is {top}")
        if height < base:
            raise _not_found(
                f"height {height} is below the lowest stored height {base} "
                f"(the latest height is {top})"
            )
        return height

    def load_block(height: int) -> Block:
        b = chain.store.block(height)
        if b is None:
            raise _not_found(
                f"block {height} is missing from the store (the latest height is {latest()})"
            )
        return b

    # ------------------------------------------------------------ transactions

    async def broadcast_tx_async(tx: bytes) -> dict[str, Any]:
        """Queue a tx for CheckTx and return its hash at once (CheckTx result not reported)."""
        if not submitter.submit(tx):
            raise RPCError(
                UNAVAILABLE,
                "Server busy",
                "too many async txs waiting for CheckTx; retry or use broadcast_tx_sync",
            )
        return {"code": 0, "data": "", "log": "", "codespace": "", "hash": _hex(sha256(tx))}

    async def broadcast_tx_sync(tx: bytes) -> dict[str, Any]:
        """CheckTx a tx; the result says whether the mempool admitted it."""
        res = await chain.submit_tx(tx)
        return {
            "code": res.code,
            "data": "",
            "log": res.log,
            "codespace": "",
            "hash": _hex(res.hash),
        }

    async def wait_included(tx_hash: bytes) -> TxRecord:
        while True:
            rec = chain.store.tx(tx_hash)
            if rec is not None:
                return rec
            # Saved before the mempool is updated: gone from both means dropped, not committed.
            if tx_hash not in chain.mempool:
                raise RPCError(
                    SERVER_ERROR,
                    "Tx dropped",
                    f"tx {_hex(tx_hash)} left the mempool without being committed "
                    f"(a block at height {latest()} made it invalid, or the mempool "
                    "was flushed)",
                )
            await chain.wait_for_height(latest() + 1)

    async def broadcast_tx_commit(tx: bytes) -> dict[str, Any]:
        """CheckTx a tx, then wait until a block includes it (rpc.timeout_broadcast_tx_commit_ms)."""
        res = await chain.submit_tx(tx)
        out: dict[str, Any] = {
            "check_tx": check_tx_json(res),
            "tx_result": tx_result_json(TxResult(0, "")),
            "hash": _hex(res.hash),
            "height": "0",
        }
        if not res.ok:
            return out
        timeout_ms = node.cfg.rpc.timeout_broadcast_tx_commit_ms
        with trio.move_on_after(timeout_ms / 1000):
            rec = await wait_included(res.hash)
            out["tx_result"] = tx_result_json(rec.result)
            out["height"] = str(rec.height)
            return out
        raise RPCError(
            TIMEOUT,
            "Timed out",
            f"tx {_hex(res.hash)} passed CheckTx but was not committed within "
            f"{timeout_ms} ms (rpc.timeout_broadcast_tx_commit_ms); it stays in the "
            "mempool: look it up later with `tx`",
        )

    async def tx(hash: str, prove: bool = False) -> dict[str, Any]:
        """A committed tx by hash: height, index, result, the tx (base64), optionally a proof."""
        h = parse_hash("hash", hash)
        rec = chain.store.tx(h)
        if rec is None:
            raise _not_found(
                f"tx {_hex(h)} is not committed on this node (the latest height "
                f"is {latest()}; pending txs are listed by unconfirmed_txs)"
            )
        out: dict[str, Any] = {
            "hash": _hex(h),
            "height": str(rec.height),
            "index": rec.index,
            "tx_result": tx_result_json(rec.result),
            "tx": _b64(rec.tx.encoded),
        }
        if prove:
            # Leaves of data_hash are the tx hashes: a client hashes `data` to get the leaf.
            b = load_block(rec.height)
            p = merkle_proof([t.hash for t in b.txs], rec.index)
            out["proof"] = {
                "root_hash": _hex(b.header.data_hash),
                "data": _b64(rec.tx.encoded),
                "proof": {
                    "total": str(p.total),
                    "index": str(p.index),
                    "leaf_hash": _b64(p.leaf_hash),
                    "aunts": [_b64(a) for a in p.aunts],
                },
            }
        return out

    # ------------------------------------------------------------ blocks

    async def block(height: int | None = None) -> dict[str, Any]:
        """The block at a height (default: the latest)."""
        b = load_block(stored_height(height))
        return {"block_id": block_id_json(b.id), "block": block_json(b)}

    async def block_by_hash(hash: str) -> dict[str, Any]:
        """The block with this block id (hash of its header)."""
        h = parse_hash("hash", hash)
        b = chain.store.block_by_hash(h)
        if b is None:
            raise _not_found(f"no block with hash {_hex(h)} (the latest height is {latest()})")
        return {"block_id": block_id_json(b.id), "block": block_json(b)}

    async def blockchain(minHeight: int = 0, maxHeight: int = 0) -> dict[str, Any]:
        """Headers of at most 20 blocks in [minHeight, maxHeight], newest first."""
        top, base = latest(), chain.store.base
        hi = top if maxHeight == 0 else min(maxHeight, top)
        lo = base if minHeight == 0 else max(minHeight, base)
        if minHeight and maxHeight and minHeight > maxHeight:
            raise invalid_params(f"minHeight {minHeight} is greater than maxHeight {maxHeight}")
        if top < base:
            return {"last_height": str(top), "block_metas": []}
        if lo > hi:
            raise _not_found(f"no blocks in [{lo}, {hi}]: the latest height is {top}")
        lo = max(lo, hi - MAX_BLOCKCHAIN_METAS + 1)
        metas = [block_meta_json(load_block(h)) for h in range(hi, lo - 1, -1)]
        return {"last_height": str(top), "block_metas": metas}

    async def commit(height: int | None = None) -> dict[str, Any]:
        """The header and commit of a height; ``canonical`` once block height+1 carries it."""
        h = stored_height(height)
        b = load_block(h)
        c = chain.store.commit(h)
        return {
            "signed_header": {"header": header_json(b.header), "commit": commit_json(c)},
            "canonical": h < latest(),
        }

    async def block_results(height: int | None = None) -> dict[str, Any]:
        """Tx results, block events and validator updates of a height (default: the latest)."""
        h = stored_height(height)
        res: BlockResults | None = chain.store.block_results(h)
        if res is None:
            raise _not_found(f"results of block {h} are missing (the latest height is {latest()})")
        updates = []
        if res.validator_set_update is not None:
            updates = _validator_updates(chain.store.validators_at(h + 1), res.validator_set_update)
        nxt = chain.store.header(h + 1)
        app_hash = nxt.app_hash if nxt is not None else chain.state.app_hash
        return {
            "height": str(h),
            "txs_results": [tx_result_json(r) for r in res.tx_results] or None,
            "begin_block_events": [event_json(e) for e in res.begin_block_events],
            "end_block_events": [event_json(e) for e in res.end_block_events],
            "validator_updates": updates,
            "consensus_param_updates": None,
            "app_hash": _hex(app_hash),
        }

    # ------------------------------------------------------------ validators

    async def validators(
        height: int | None = None, page: int = 1, per_page: int = DEFAULT_PER_PAGE
    ) -> dict[str, Any]:
        """The validator set that signs a height (default: the next height), paginated."""
        top = latest()
        h = chain.state.height if height is None else height
        vset = chain.store.validators_at(h)
        if vset is None:
            raise _not_found(
                f"validator set of height {h} is not known: the latest height is "
                f"{top} (sets are known from {chain.store.base} to {top + 2})"
            )
        per_page = min(per_page, MAX_PER_PAGE)
        total = len(vset)
        pages = max(1, -(-total // per_page))
        if page > pages:
            raise invalid_params(f"page: must be within [1, {pages}], got {page}")
        chunk = vset.validators[(page - 1) * per_page : page * per_page]
        prios = node.proposer_priorities(h)
        return {
            "block_height": str(h),
            "validators": [validator_json(v, prios.get(v.address, 0)) for v in chunk],
            "count": str(len(chunk)),
            "total": str(total),
        }

    # ------------------------------------------------------------ mempool

    async def num_unconfirmed_txs() -> dict[str, Any]:
        """Number and total bytes of the txs in the mempool."""
        n = str(len(chain.mempool))
        return {"n_txs": n, "total": n, "total_bytes": str(chain.mempool.size_bytes), "txs": None}

    async def unconfirmed_txs(limit: int = DEFAULT_PER_PAGE) -> dict[str, Any]:
        """Up to ``limit`` (max 100) mempool txs in arrival order, base64."""
        txs = chain.mempool.txs(min(limit, MAX_PER_PAGE))
        return {
            "n_txs": str(len(txs)),
            "total": str(len(chain.mempool)),
            "total_bytes": str(chain.mempool.size_bytes),
            "txs": [_b64(t.encoded) for t in txs],
        }

    # ------------------------------------------------------------ state queries

    async def abci_query(
        path: str, data: bytes = b"", height: int = 0, prove: bool = False
    ) -> dict[str, Any]:
        """A state query (paths: /account/<addr>, /validator/<addr|pubkey>, /store/<key>)."""
        state = chain.state
        if height not in (0, state.last_block_height):
            raise invalid_params(
                f"height: state queries are answered at the latest height "
                f"only ({state.last_block_height}); pass 0 or omit it"
            )
        kind, key = _query_key(path, data)
        qr = chain.app.query(state, key)
        return query_response_json(qr, prove, _decoded(kind, key, qr.value))

    reg.add("broadcast_tx_async", broadcast_tx_async, [Param("tx", "bytes", required=True)])
    reg.add("broadcast_tx_sync", broadcast_tx_sync, [Param("tx", "bytes", required=True)])
    reg.add("broadcast_tx_commit", broadcast_tx_commit, [Param("tx", "bytes", required=True)])
    reg.add("tx", tx, [Param("hash", "str", required=True, max_len=100), Param("prove", "bool")])
    reg.add("block", block, [Param("height", "int", minimum=1)])
    reg.add("block_by_hash", block_by_hash, [Param("hash", "str", required=True, max_len=100)])
    reg.add(
        "blockchain",
        blockchain,
        [Param("minHeight", "int", minimum=0), Param("maxHeight", "int", minimum=0)],
    )
    reg.add("commit", commit, [Param("height", "int", minimum=1)])
    reg.add("block_results", block_results, [Param("height", "int", minimum=1)])
    reg.add(
        "validators",
        validators,
        [
            Param("height", "int", minimum=1),
            Param("page", "int", minimum=1),
            Param("per_page", "int", minimum=1),
        ],
    )
    reg.add("num_unconfirmed_txs", num_unconfirmed_txs)
    reg.add("unconfirmed_txs", unconfirmed_txs, [Param("limit", "int", minimum=1)])
    reg.add(
        "abci_query",
        abci_query,
        [
            Param("path", "str", required=True, max_len=300),
            Param("data", "hex", max_len=256),
            Param("height", "int", minimum=0),
            Param("prove", "bool"),
        ],
    )


def _query_key(path: str, data: bytes) -> tuple[str, bytes]:
    """(kind, state key) of an abci_query path; the argument may be given as ``data``."""
    parts = path.strip().split("/")
    if len(parts) < 2 or parts[0] != "" or parts[1] not in ("account", "validator", "store"):
        raise invalid_params(f"path: unknown query path {path!r:.80}; use {QUERY_PATHS}")
    kind = parts[1]
    arg_text = "/".join(parts[2:])
    if arg_text and data:
        raise invalid_params("data: give the argument in the path or in data, not both")
    arg = _hex_arg("path", arg_text) if arg_text else data
    if kind == "store":
        if not arg:
            raise invalid_params("path: /store needs a key: /store/<key hex>")
        return kind, arg
    if kind == "validator" and len(arg) == _PUBKEY_LEN:
        from ledger.crypto import address_of

        arg = address_of(arg)
    if len(arg) != _ADDRESS_LEN:
        what = "an address (20 bytes)" + (" or pubkey (32 bytes)" if kind == "validator" else "")
        raise invalid_params(f"path: /{kind} needs {what} in hex, got {len(arg)} bytes")
    return kind, account_key(arg) if kind == "account" else validator_key(arg)


def _decoded(kind: str, key: bytes, value: bytes | None) -> dict[str, Any] | None:
    """A readable view of an account or validator value (None for raw /store queries)."""
    try:
        if kind == "account":
            acct = Account() if value is None else decode_record(value, Account)
            return {
                "address": _hex(key[len(ACCOUNT_PREFIX) :]),
                "balance": str(acct.balance),
                "nonce": str(acct.nonce),
            }
        if kind == "validator" and value is not None:
            v = decode_record(value, ValidatorRecord)
            return {
                "address": _hex(key[len(VALIDATOR_PREFIX) :]),
                "pub_key": pubkey_json(v.pubkey),
                "operator": _hex(v.operator),
                "tokens": str(v.tokens),
                "voting_power": str(v.power),
                "jailed": v.jailed,
                "jailed_until": str(v.jailed_until),
                "name": v.name,
            }
    except CodecError as e:
        raise RPCError(SERVER_ERROR, "Corrupt state value", f"{key.hex()}: {e}") from None
    return None
