"""In-process FL harness (no chain): centralized, FedAvg and robust rules with attackers.

One process plays the server and every client, in rounds: sample ``per_round`` of
``clients``, train the honest ones from the global model, let the malicious ones
craft their updates (omniscient: they see this round's honest deltas and submit
after them), quantize, screen and aggregate with :func:`fl.aggregate.aggregate`,
and evaluate the new global model on the held-out test split. The chain's
round-overhead benchmark runs the same workload on the chain against this baseline.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from fl.aggregate import (
    AggregateResult,
    ScreenContext,
    Update,
    Verdict,
    aggregate,
    apply_delta,
    dequantize,
    quantize,
)
from fl.aggregate.fixed import vector_digest
from fl.attacks import ATTACKS, AttackContext, craft, flip_labels, needs_own_training
from fl.data import Dataset, dirichlet, iid, load_dataset, shards, split
from fl.data.validation import draw_validation
from fl.models import (
    StateDict,
    build_model,
    flatten,
    output_weight_range,
    state_dict_of,
    unflatten,
)
from fl.models.exact import ExactModel, ValidationLoss
from fl.privacy.pipeline import PrivacyConfig, PrivacyPipeline
from fl.simulate_pol import SIM_POLICIES, PolEntry, PolRound, pol_code
from fl.train import TrainConfig, evaluate, select_device, train_local

__all__ = [
    "ABSENT", "DEFAULT_MODELS", "RoundMetrics", "RoundUpdates", "SimConfig", "SimResult",
    "run_simulation",
]  # fmt: skip

DEFAULT_MODELS = {"digits": "mlp", "mnist": "mnist_cnn", "cifar10": "cifar_cnn"}
# Not an attack: the malicious clients (the same draw as an attack's) submit nothing, so a
# run shows what a rule that rejects every attacker, and only them, would reach.
ABSENT = "absent"
_U64 = (1 << 64) - 1


@dataclass(frozen=True)
class SimConfig:
    dataset: str = "digits"
    data_dir: str | None = None
    model: str | None = None  # default: DEFAULT_MODELS[dataset]
    model_config: dict[str, Any] = field(default_factory=dict)
    clients: int = 100
    per_round: int = 10
    rounds: int = 50
    partition: str = "dirichlet"  # dirichlet | iid | shards
    alpha: float = 0.5
    shards_per_client: int = 2
    test_fraction: float = 0.2
    seed: int = 0
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(lr=0.1, momentum=0.9, epochs=2, batch_size=32)
    )
    rule: str = "fedavg"
    rule_params: dict[str, Any] = field(default_factory=dict)
    attack: str | None = None
    malicious: float = 0.0
    attack_params: dict[str, Any] = field(default_factory=dict)
    centralized: bool = False  # one model trained on the sampled clients' pooled data each round
    device: str = "auto"
    eval_every: int = 1  # evaluate every k rounds (and always after the last); others report NaN
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)  # none | dp | he | dp+he
    # A public validation set for the robust screen's loss check: this many samples drawn
    # (seeded) from the training split, as a task's validation_cid names one. 0: none.
    validation: int = 0
    # Proof of learning before the screen, as validators run it (fl/simulate_pol.py):
    # off | attest | replay, with a checkpoint every pol_k steps (the CLI's task default).
    pol: str = "off"
    pol_k: int = 8

    def __post_init__(self) -> None:
        if self.attack is not None and self.attack not in (*ATTACKS, ABSENT):
            known = ", ".join((*ATTACKS, ABSENT))
            raise ValueError(f"unknown attack {self.attack!r} (known: {known})")
        if not 0 <= self.malicious < 1:
            raise ValueError("malicious must be a fraction in [0, 1)")
        if not 1 <= self.per_round <= self.clients:
            raise ValueError("per_round must be in 1..clients")
        if self.rounds < 0:
            raise ValueError("rounds must be >= 0")
        if self.eval_every < 1:
            raise ValueError("eval_every must be >= 1")
        if self.validation < 0:
            raise ValueError("validation must be >= 0")
        if self.validation and (self.rule != "robust" or self.centralized):
            raise ValueError("a validation set is for the federated robust rule")
        if self.partition not in ("dirichlet", "iid", "shards"):
            raise ValueError(f"unknown partition {self.partition!r}")
        if self.pol not in SIM_POLICIES:
            raise ValueError(f"pol must be one of {', '.join(SIM_POLICIES)}")
        if self.pol != "off" and (self.centralized or self.privacy.mode != "none"):
            raise ValueError("PoL runs in federated plaintext rounds (not centralized or private)")
        if self.pol_k < 1:
            raise ValueError("pol_k must be >= 1")
        if self.privacy.mode != "none" and (self.rule != "fedavg" or self.centralized):
            raise ValueError(
                f"privacy mode {self.privacy.mode!r} runs only the federated fedavg rule"
            )

    def to_plain(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["train"] = self.train.to_plain()
        return out


@dataclass
class RoundMetrics:
    round: int
    accuracy: float
    loss: float
    submitted: int
    accepted: int
    rejected: int
    poisoned: int
    poisoned_rejected: int
    honest: int
    honest_rejected: int
    seconds: float
    train_seconds: float
    aggregate_seconds: float
    pol_seconds: float = 0.0  # PoL verification (recording is part of train_seconds)
    reasons: dict[str, int] = field(default_factory=dict)
    epsilon: float | None = None  # DP: privacy spent after this round at the task's delta
    privacy: dict[str, Any] = field(default_factory=dict)  # DP / HE timings and sizes


@dataclass(frozen=True)
class RoundUpdates:
    """What the aggregation of one round saw and decided (for analyses; see ``on_updates``).

    With PoL on, only the PoL-valid updates: the rule never sees the others."""

    round: int
    global_q: npt.NDArray[np.int64]  # the quantized global model the updates start from
    updates: list[Update]
    malicious: list[bool]  # aligned with ``updates``
    result: AggregateResult


@dataclass
class SimResult:
    config: SimConfig
    rounds: list[RoundMetrics]
    initial_accuracy: float
    seconds: float

    @property
    def final_accuracy(self) -> float:
        return self.rounds[-1].accuracy if self.rounds else self.initial_accuracy

    def fraction(self, rejected: str, total: str) -> float | None:
        t = sum(getattr(r, total) for r in self.rounds)
        return sum(getattr(r, rejected) for r in self.rounds) / t if t else None

    @property
    def poisoned_rejected_fraction(self) -> float | None:
        return self.fraction("poisoned_rejected", "poisoned")

    @property
    def honest_rejected_fraction(self) -> float | None:
        return self.fraction("honest_rejected", "honest")

    def to_plain(self) -> dict[str, Any]:
        return {
            "config": self.config.to_plain(),
            "initial_accuracy": self.initial_accuracy,
            "final_accuracy": self.final_accuracy,
            "poisoned_rejected_fraction": self.poisoned_rejected_fraction,
            "honest_rejected_fraction": self.honest_rejected_fraction,
            "seconds": self.seconds,
            "rounds": [_json_safe(dataclasses.asdict(r)) for r in self.rounds],
        }


def _json_safe(d: dict[str, Any]) -> dict[str, Any]:
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in d.items()}


def _partition(cfg: SimConfig, train: Dataset) -> list[npt.NDArray[np.int64]]:
    if cfg.partition == "iid":
        return iid(len(train), cfg.clients, cfg.seed)
    if cfg.partition == "shards":
        return shards(train.y, cfg.clients, cfg.shards_per_client, cfg.seed)
    return dirichlet(train.y, cfg.clients, cfg.alpha, cfg.seed)


def _client_seed(seed: int, rnd: int, client: int) -> int:
    return (seed * 1_000_003 + rnd * 10_007 + client) & _U64


def _no_change(
    rule: str, like: npt.NDArray[np.int64], verdicts: list[Verdict]
) -> AggregateResult:
    zero = np.zeros_like(like)
    return AggregateResult(rule, zero, verdicts, vector_digest(zero))


def _aggregate_valid(
    rule: str,
    updates: list[Update],
    pol_reasons: dict[int, str],
    params: dict[str, Any],
    ctx: ScreenContext,
) -> AggregateResult:
    """Aggregate the PoL-valid updates; the others get their PoL verdict (the chain's order)."""
    if not pol_reasons:
        return aggregate(rule, updates, params, ctx)
    keep = [i for i in range(len(updates)) if i not in pol_reasons]
    verdicts = [Verdict(False, pol_reasons.get(i, ""), 0) for i in range(len(updates))]
    if not keep:
        return _no_change(rule, updates[0].delta, verdicts)
    inner = aggregate(rule, [updates[i] for i in keep], params, ctx)
    for i, v in zip(keep, inner.verdicts, strict=True):
        verdicts[i] = v
    return AggregateResult(inner.rule, inner.delta, verdicts, inner.digest)


def run_simulation(
    cfg: SimConfig,
    *,
    data: tuple[Dataset, Dataset] | None = None,
    on_round: Callable[[RoundMetrics], None] | None = None,
    on_updates: Callable[[RoundUpdates], None] | None = None,
) -> SimResult:
    """Run ``cfg.rounds`` rounds and return per-round metrics (``data`` = (train, test) overrides
    loading; ``on_updates`` sees each round's updates and verdicts, e.g. benchmarks/label_flip_probe.py)."""
    started = time.perf_counter()
    if data is None:
        train_set, test_set = split(
            load_dataset(cfg.dataset, cfg.data_dir), cfg.test_fraction, cfg.seed
        )
    else:
        train_set, test_set = data
    parts = _partition(cfg, train_set)
    client_data = [train_set.subset(p, f"client{c}") for c, p in enumerate(parts)]
    model_id = cfg.model or DEFAULT_MODELS[cfg.dataset]
    device = select_device(cfg.device)
    net = build_model(model_id, cfg.model_config, seed=cfg.seed)
    template = state_dict_of(net)
    global_q = quantize(flatten(template))
    screen_ctx = ScreenContext(output_weight_range(net), cfg.train.batch_size)
    validation = None  # (exact model, x, y): the robust screen's loss check (ADR 0404)
    if cfg.validation:
        # default_rng([seed, tag]) is PCG64([seed, tag]): the draw this harness always made
        val = draw_validation(train_set, min(cfg.validation, len(train_set)),
                              [cfg.seed, 0x56414C])
        validation = (ExactModel(model_id, cfg.model_config), val.x, val.y)
    global_state = template

    rng = np.random.Generator(np.random.PCG64(cfg.seed))
    n_mal = int(round(cfg.malicious * cfg.clients)) if cfg.attack else 0
    malicious = set(rng.permutation(cfg.clients)[:n_mal].tolist())
    flipped = (
        {c: flip_labels(client_data[c]) for c in malicious} if cfg.attack == "label_flip" else {}
    )

    priv = None
    if cfg.privacy.mode != "none":
        sizes = sorted((len(p) for p in parts), reverse=True)
        priv = PrivacyPipeline(
            cfg.privacy, clients=cfg.clients, per_round=cfg.per_round, rounds=cfg.rounds,
            seed=cfg.seed, max_round_weight=sum(sizes[: cfg.per_round]), num_params=global_q.size,
        )  # fmt: skip
    blobs: list[bytes | None] = []

    def submit(delta: npt.NDArray[np.int64], c: int, rnd: int, honest: bool) -> Update:
        weight = len(parts[c])
        if priv is not None:
            sub = priv.client(delta, weight, rnd, c, honest=honest)
            delta, weight = sub.delta, sub.weight
            blobs.append(sub.ciphertext)
        return Update.of(delta, weight, order=len(updates))

    initial = evaluate(net, test_set, device).accuracy
    history: list[RoundMetrics] = []
    for rnd in range(cfg.rounds):
        if priv is not None:  # HE: trainers' offline work while they wait for the round
            priv.precompute(cfg.per_round)
        t0 = time.perf_counter()
        round_rng = np.random.Generator(np.random.PCG64([cfg.seed, rnd]))
        sampled = sorted(round_rng.choice(cfg.clients, cfg.per_round, replace=False).tolist())
        honest_ids = [c for c in sampled if c not in malicious]
        bad_ids = [c for c in sampled if c in malicious and cfg.attack != ABSENT]
        if cfg.attack == ABSENT:
            sampled = [c for c in sampled if c not in malicious]
        updates: list[Update] = []
        blobs.clear()
        is_bad: list[bool] = []

        pol = None
        if cfg.pol != "off":
            pol = PolRound(cfg.pol, k=cfg.pol_k, seed=cfg.seed, rnd=rnd, model_id=model_id,
                           model_config=cfg.model_config, global_state=global_state,
                           device=device)  # fmt: skip
        entries: list[PolEntry] = []  # aligned with ``updates`` when PoL is on
        last: list[PolEntry] = []  # the transcript of the latest train_client call

        def train_client(
            ds: Dataset,
            client: int,
            start: StateDict = global_state,
            rnd: int = rnd,
            pol: PolRound | None = pol,
            last: list[PolEntry] = last,
        ) -> npt.NDArray[np.float32]:
            tcfg = dataclasses.replace(cfg.train, seed=_client_seed(cfg.seed, rnd, client))
            if pol is not None:
                flat, entry = pol.train(net, ds, tcfg)
                last[:] = [entry]
                return flat
            net.load_state_dict(start)
            res = train_local(net, ds, tcfg, device)
            return flatten(res.state)

        if cfg.centralized:
            pooled = train_set.subset(np.concatenate([parts[c] for c in sampled]))
            new = quantize(train_client(pooled, 0))
            updates.append(Update.of(new - global_q, len(pooled)))
            is_bad.append(False)
        else:
            honest_float: list[npt.NDArray[np.float32]] = []
            for c in honest_ids:
                delta = quantize(train_client(client_data[c], c)) - global_q
                updates.append(submit(delta, c, rnd, True))
                entries.extend(last)
                is_bad.append(False)
                honest_float.append(dequantize(updates[-1].delta))
            for c in bad_ids:
                assert cfg.attack is not None
                own = None
                ds = flipped.get(c, client_data[c])
                if needs_own_training(cfg.attack):
                    own = dequantize(quantize(train_client(ds, c)) - global_q)
                elif pol is not None:
                    train_client(ds, c)  # a transcript to forge from: honest training
                ctx = AttackContext(
                    honest_float, own, len(sampled), len(bad_ids),
                    np.random.Generator(np.random.PCG64([cfg.seed, rnd, c])), cfg.attack_params,
                )  # fmt: skip
                delta = quantize(
                    np.clip(craft(cfg.attack, ctx), -60000.0, 60000.0).astype(np.float32)
                )
                if pol is not None and cfg.attack != "label_flip":
                    # the update is the transcript's final weights: forge them
                    final = unflatten(dequantize(global_q + delta), template)
                    entries.append(pol.forge(last[0], final))
                    delta = quantize(flatten(final)) - global_q
                else:
                    entries.extend(last)
                updates.append(submit(delta, c, rnd, False))
                is_bad.append(True)
        t_train = time.perf_counter() - t0

        t1 = time.perf_counter()
        pol_reasons: dict[int, str] = {}  # update index -> PoL rejection reason
        if pol is not None:
            for i, (entry, c) in enumerate(zip(entries, honest_ids + bad_ids, strict=True)):
                verdict = pol.verify(entry, c)
                if not verdict.ok:
                    pol_reasons[i] = pol_code(verdict)
        t_pol = time.perf_counter() - t1 if pol is not None else 0.0
        ids = [u.id for u in updates]
        if len(set(ids)) != len(ids):
            # Identical crafted deltas: make the ids unique, as the CIDs of distinct submissions are.
            updates = [
                Update(u.id + i.to_bytes(4, "big"), u.delta, u.weight, u.order)
                for i, u in enumerate(updates)
            ]
        rule = "fedavg" if cfg.centralized else cfg.rule
        if not updates:  # every sampled client was absent: the global model stays
            result = _no_change(rule, global_q, [])
        elif priv is not None:
            result = priv.aggregate(updates, blobs)
        else:
            round_ctx = screen_ctx
            if validation is not None and rule == "robust":
                exact, vx, vy = validation
                val_loss = ValidationLoss(exact, global_q, vx, vy)
                round_ctx = dataclasses.replace(
                    screen_ctx, validation=val_loss, label_directions=val_loss.label_directions
                )
            result = _aggregate_valid(rule, updates, pol_reasons, cfg.rule_params, round_ctx)
        if on_updates is not None:
            keep = [i for i in range(len(updates)) if i not in pol_reasons]
            screened = AggregateResult(
                result.rule, result.delta, [result.verdicts[i] for i in keep], result.digest
            )
            on_updates(RoundUpdates(rnd + 1, global_q, [updates[i] for i in keep],
                                    [is_bad[i] for i in keep], screened))  # fmt: skip
        global_q = quantize(dequantize(apply_delta(global_q, result.delta)))
        global_state = unflatten(dequantize(global_q), template)
        t_agg = time.perf_counter() - t1

        if (rnd + 1) % cfg.eval_every == 0 or rnd + 1 == cfg.rounds:
            net.load_state_dict(global_state)
            ev = evaluate(net, test_set, device)
            accuracy, loss = ev.accuracy, ev.loss
        else:
            accuracy = loss = math.nan
        reasons: dict[str, int] = {}
        for v in result.verdicts:
            if not v.accepted:
                reasons[v.reason] = reasons.get(v.reason, 0) + 1
        rejected = [not v.accepted for v in result.verdicts]
        m = RoundMetrics(
            round=rnd + 1,
            accuracy=accuracy,
            loss=loss,
            submitted=len(updates),
            accepted=rejected.count(False),
            rejected=rejected.count(True),
            poisoned=sum(is_bad),
            poisoned_rejected=sum(r and b for r, b in zip(rejected, is_bad, strict=True)),
            honest=is_bad.count(False),
            honest_rejected=sum(r and not b for r, b in zip(rejected, is_bad, strict=True)),
            seconds=time.perf_counter() - t0,
            train_seconds=t_train,
            aggregate_seconds=t_agg - t_pol,
            pol_seconds=t_pol,
            reasons=reasons,
        )
        if priv is not None:
            stats = priv.end_round()
            m.epsilon, m.privacy = stats.epsilon, stats.to_plain()
        history.append(m)
        if on_round is not None:
            on_round(m)
    return SimResult(cfg, history, initial, time.perf_counter() - started)
