"""Test support for the FL contract: valid specs, fake CIDs, round results, and a chain driver.

``FLChain`` wraps :class:`ledger.testing.ChainBuilder`: each ``advance`` adds
the FL section the next block must carry (built from the state by
:func:`build_section`, every update accepted unless ``reject`` says
otherwise), so tests only say what differs. For tests and benchmarks only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ledger.codec import sha256
from ledger.crypto import PrivateKey
from ledger.fl.rounds import StateLike, as_view, due_rounds
from ledger.fl.section import Contribution, FLSection, Rejection, RoundResult
from ledger.fl.spec import TaskSpec
from ledger.fl.state import load_task, round_submissions
from ledger.fl.txs import Join, Leave, Reveal, SubmitUpdate, TaskCreate
from ledger.results import Event
from ledger.testing import ChainBuilder, CommittedBlock, TestNet, Wallet, make_testnet
from ledger.tx import Tx

# The binary layout of a content-store CID for a raw chunk: v1, raw (0x55), sha2-256, 32 bytes.
_CID_PREFIX = b"\x01\x55\x12\x20"

# fl.train.TrainConfig(lr=0.1, epochs=1, batch_size=32).to_plain()
DEFAULT_TRAIN: dict[str, Any] = {
    "optimizer": "sgd",
    "lr": "0.1",
    "momentum": "0.0",
    "weight_decay": "0.0",
    "epochs": 1,
    "batch_size": 32,
    "clip_norm": None,
    "seed": 0,
    "deterministic": True,
    "drop_last": False,
}


def fake_cid(label: str | bytes) -> bytes:
    """A well-formed binary CID of ``label`` (raw codec; nothing is stored)."""
    data = label.encode() if isinstance(label, str) else label
    return _CID_PREFIX + sha256(data)


def make_spec(**overrides: Any) -> TaskSpec:
    """A small valid task (MLP on digits, FedAvg, no privacy, no PoL) with ``overrides``."""
    fields: dict[str, Any] = dict(
        name="digits-mlp",
        model_id="mlp",
        model_config={},
        train=dict(DEFAULT_TRAIN),
        data_schema="digits",
        rounds=3,
        clients_per_round=3,
        min_participants=2,
        round_blocks=4,
        reveal_blocks=0,
        rule="fedavg",
        rule_params={},
        privacy="none",
        dp_clip_q=0,
        dp_noise_milli=0,
        dp_delta_ppb=0,
        pol_policy="off",
        pol_k=0,
        pool=9_000,
        trainer_reward_cap=1_000,
        validator_share_ppm=100_000,
        join_bond=100,
        slash_ppm=100_000,
        jail_after=2,
        validation_cid=b"",
        initial_model_cid=fake_cid("model/initial"),
        key_holders=(),
        he_context_cid=b"",
    )
    fields.update(overrides)
    return TaskSpec(**fields)


def he_spec(key_holders: Sequence[bytes], **overrides: Any) -> TaskSpec:
    """A valid HE task whose key holders are ``key_holders``."""
    base: dict[str, Any] = dict(
        privacy="he", key_holders=tuple(key_holders), he_context_cid=fake_cid("he/context")
    )
    base.update(overrides)
    return make_spec(**base)


def submit_body(
    task_id: int, round_: int, trainer: bytes, samples: int = 100, *, transcript: bool = True
) -> SubmitUpdate:
    """A SubmitUpdate with CIDs derived from (task, round, trainer)."""
    tag = f"{task_id}/{round_}/{trainer.hex()}"
    return SubmitUpdate(
        task_id=task_id,
        round=round_,
        update_cid=fake_cid("update/" + tag),
        transcript_cid=fake_cid("transcript/" + tag) if transcript else b"",
        sample_count=samples,
        data_commitment=sha256(b"data/" + trainer),
    )


# ---------------------------------------------------------------- results and sections

Verdicts = Mapping[bytes, tuple[str, bool]]  # trainer -> (reason, proven) for rejections


def build_result(
    state: StateLike,
    task_id: int,
    *,
    reject: Verdicts | None = None,
    new_model_cid: bytes | None = None,
    scores: Mapping[bytes, int] | None = None,
) -> RoundResult:
    """The structurally valid result of the task's open round: all accepted but ``reject``."""
    view = as_view(state)
    task = load_task(view, task_id)
    if task is None:
        raise ValueError(f"no task {task_id}")
    reject = reject or {}
    scores = scores or {}
    subs = round_submissions(view, task_id, task.round)
    accepted = tuple(
        Contribution(a, s.update_cid, s.sample_count, scores.get(a, 0), (), ())
        for a, s in subs
        if a not in reject
    )
    rejected = tuple(
        Rejection(a, s.update_cid, reject[a][0], scores.get(a, 0), reject[a][1])
        for a, s in subs
        if a in reject
    )
    digest, model, enc = b"", task.global_model_cid, b""
    if accepted and task.spec.uses_he:
        model, enc = b"", fake_cid(f"encrypted/{task_id}/{task.round}")
    elif accepted:
        model = new_model_cid or fake_cid(f"model/{task_id}/{task.round}")
        digest = sha256(b"digest/" + model)
    return RoundResult(task_id, task.round, accepted, rejected, digest, model, enc)


def build_section(
    state: StateLike, height: int, reject: Mapping[int, Verdicts] | None = None
) -> FLSection | None:
    """The FL section of the block at ``height`` (None when no round is due)."""
    due = due_rounds(state, height)
    if not due:
        return None
    reject = reject or {}
    return FLSection(tuple(build_result(state, t, reject=reject.get(t)) for t, _ in due))


# ---------------------------------------------------------------- chain driver

_AUTO: Any = object()


@dataclass
class FLChain:
    """A chain with the FL contract that fills in the FL section of every block."""

    net: TestNet
    builder: ChainBuilder = field(init=False)
    wallets: list[Wallet] = field(init=False)

    def __post_init__(self) -> None:
        self.builder = ChainBuilder(self.net)
        self.wallets = [Wallet(k, self.net.chain_id) for k in self.net.account_keys]

    @classmethod
    def make(cls, n_validators: int = 4, n_accounts: int = 8, balance: int = 1_000_000) -> FLChain:
        return cls(make_testnet(n_validators, n_accounts, balance=balance))

    @property
    def state(self) -> Any:
        return self.builder.state

    @property
    def height(self) -> int:
        """The height of the next block."""
        return int(self.builder.state.height)

    def addr(self, i: int) -> bytes:
        return self.wallets[i].address

    def advance(
        self,
        txs: Iterable[Tx] = (),
        *,
        reject: Mapping[int, Verdicts] | None = None,
        section: FLSection | None = _AUTO,
        signers: Iterable[PrivateKey] | None = None,
    ) -> CommittedBlock:
        """Propose, commit (by ``signers``, default all) and apply the next block."""
        pol = build_section(self.state, self.height, reject) if section is _AUTO else section
        block = self.builder.propose(list(txs), pol=pol)
        return self.builder.add(block, self.builder.commit_for(block, signers))

    def advance_empty(self, n: int) -> list[CommittedBlock]:
        return [self.advance() for _ in range(n)]

    # convenience transactions
    def create(self, i: int, spec: TaskSpec) -> Tx:
        return self.wallets[i].sign(TaskCreate(spec))

    def join(self, i: int, task_id: int, bond: int = 100, x25519: bytes = b"") -> Tx:
        return self.wallets[i].sign(Join(task_id, bond, x25519))

    def submit(self, i: int, task_id: int, round_: int, samples: int = 100, **kw: Any) -> Tx:
        return self.wallets[i].sign(submit_body(task_id, round_, self.addr(i), samples, **kw))

    def reveal(self, i: int, task_id: int, round_: int) -> Tx:
        cid = fake_cid(f"reveal/{task_id}/{round_}/{self.addr(i).hex()}")
        return self.wallets[i].sign(Reveal(task_id, round_, cid))

    def leave(self, i: int, task_id: int) -> Tx:
        return self.wallets[i].sign(Leave(task_id))


def codes(cb: CommittedBlock) -> list[int]:
    """The result codes of a block's transactions, in order."""
    return [r.code for r in cb.results.tx_results]


def events(cb: CommittedBlock, type_: str | None = None) -> list[Event]:
    """Every event of a block (begin block, txs, end block), optionally of one type."""
    res = cb.results
    all_events = [*res.begin_block_events]
    for r in res.tx_results:
        all_events.extend(r.events)
    all_events.extend(res.end_block_events)
    return [e for e in all_events if type_ is None or e.type == type_]


def scenario_app_hashes() -> list[str]:
    """A fixed chain exercising the whole contract; the app hash (hex) after each block.

    Used to show that separate processes compute identical hashes.
    """
    from ledger.fl.txs import DecryptedAggregate, InferenceRecord, KeyShare

    c = FLChain.make(n_validators=4, n_accounts=6)
    out: list[str] = []

    def step(txs: Iterable[Tx] = (), **kw: Any) -> None:
        c.advance(txs, **kw)
        out.append(c.state.app_hash.hex())

    holder = c.addr(5)
    step([c.create(0, make_spec(rounds=2, jail_after=1)), c.create(0, he_spec([holder], rounds=1))])
    step([c.join(i, 1) for i in (1, 2, 3)] + [c.join(i, 2, x25519=bytes(32)) for i in (1, 2)])
    step([c.submit(i, 1, 1) for i in (1, 2, 3)] + [c.submit(i, 2, 1) for i in (1, 2)])
    step(reject={1: {c.addr(3): ("pol_failed", True)}})
    w = c.wallets[5]
    step([w.sign(KeyShare(2, c.addr(1), fake_cid("ks"))), c.submit(1, 1, 2), c.submit(2, 1, 2)])
    step([w.sign(DecryptedAggregate(2, 1, fake_cid("decrypted")))])
    for _ in range(5):
        step()
    step([c.leave(i, 1) for i in (1, 2, 3)])
    step([c.wallets[4].sign(InferenceRecord(fake_cid("m"), sha256(b"q"), sha256(b"r")))])
    return out


def replace_result(section: FLSection, index: int, **changes: Any) -> FLSection:
    """``section`` with result ``index`` changed (for invalid-structure tests)."""
    results = list(section.results)
    results[index] = dataclasses.replace(results[index], **changes)
    return FLSection(tuple(results))
