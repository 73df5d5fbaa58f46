"""Task options as a person gives them (floats, names) and the on-chain ``TaskSpec`` they make.

Shared by `fedledger task create`, `fedledger demo`, the end-to-end tests and the benchmarks,
so every path builds specs the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ledger.fl import TaskSpec


@dataclass
class TaskOptions:
    name: str = "demo"
    model_id: str = "mlp"
    model_config: dict[str, Any] = field(default_factory=dict)
    optimizer: str = "sgd"
    lr: str = "0.1"
    momentum: str = "0.0"
    epochs: int = 2
    batch_size: int = 16
    rounds: int = 5
    clients_per_round: int = 0  # 0: every trainer
    min_participants: int = 0  # 0: clients_per_round
    round_blocks: int = 60
    reveal_blocks: int = 0
    rule: str = "robust"
    rule_params: dict[str, Any] = field(default_factory=dict)
    privacy: str = "none"
    dp_clip: float = 0.0
    dp_noise: float = 0.0
    dp_delta: float = 1e-5
    pol_policy: str = "attest"
    pol_k: int = 8
    pool: int = 100_000
    trainer_reward_cap: int = 10_000
    validator_share_ppm: int = 100_000
    join_bond: int = 100
    slash_ppm: int = 200_000
    jail_after: int = 2
    seed: int = 0
    # HE (privacy he / dp+he): CKKS parameters (fl.privacy.he.PARAMS) and, for `he`, the most
    # samples one round can bring (the packing headroom; 0: the caller's default)
    he_params: str = "n8192"
    he_max_round_samples: int = 0


def he_layout(opts: TaskOptions, *, trainers: int, max_round_samples: int) -> Any:
    """The packing layout of an HE task's submissions (goes into its task context object):
    `he` weights by samples up to ``opts.he_max_round_samples`` (or ``max_round_samples``),
    `dp+he` fits the grid to the DP noise and the model (node.fl.he_work.he_layout)."""
    from fl.privacy.he import PARAMS
    from node.fl.he_work import he_layout as layout_for
    from node.fl.he_work import model_size

    cpr = opts.clients_per_round or trainers
    dp = None
    if opts.privacy == "dp+he":
        from fl.privacy import DpParams

        dp = DpParams.of(int(opts.dp_clip * (1 << 24)) / (1 << 24),
                         int(opts.dp_noise * 1000) / 1000, opts.dp_delta, cpr, cpr)
    return layout_for(opts.privacy, PARAMS[opts.he_params],
                      max_round_samples=opts.he_max_round_samples or max_round_samples,
                      clients_per_round=cpr,
                      num_params=model_size(opts.model_id, dict(opts.model_config)), dp=dp)


def build_spec(opts: TaskOptions, *, dataset: str, trainers: int, initial_model_cid: bytes,
               key_holders: tuple[bytes, ...] = (), he_context_cid: bytes = b"",
               validation_cid: bytes = b"") -> TaskSpec:
    """The TaskSpec of ``opts``; ``trainers`` is the clients-per-round default."""
    from fl.train import TrainConfig

    train = TrainConfig(optimizer=opts.optimizer, lr=float(opts.lr),
                        momentum=float(opts.momentum), epochs=opts.epochs,
                        batch_size=opts.batch_size, seed=opts.seed + 1).to_plain()
    cpr = opts.clients_per_round or trainers
    he = opts.privacy in ("he", "dp+he")
    return TaskSpec(
        name=opts.name, model_id=opts.model_id, model_config=dict(opts.model_config),
        train=train, data_schema=dataset, rounds=opts.rounds,
        clients_per_round=cpr, min_participants=opts.min_participants or cpr,
        round_blocks=opts.round_blocks, reveal_blocks=opts.reveal_blocks,
        rule=opts.rule, rule_params=dict(opts.rule_params), privacy=opts.privacy,
        dp_clip_q=int(opts.dp_clip * (1 << 24)), dp_noise_milli=int(opts.dp_noise * 1000),
        dp_delta_ppb=int(opts.dp_delta * 1e9) if opts.privacy in ("dp", "dp+he") else 0,
        pol_policy="off" if he else opts.pol_policy,
        pol_k=opts.pol_k if opts.pol_policy != "off" and not he else 0,
        pool=opts.pool, trainer_reward_cap=opts.trainer_reward_cap,
        validator_share_ppm=opts.validator_share_ppm, join_bond=opts.join_bond,
        slash_ppm=opts.slash_ppm, jail_after=opts.jail_after, validation_cid=validation_cid,
        initial_model_cid=initial_model_cid, key_holders=tuple(key_holders),
        he_context_cid=he_context_cid)


def initial_model_bytes(opts: TaskOptions) -> bytes:
    """The round-0 global model of ``opts``: the registry's ``model_id`` with ``model_config``,
    initial weights drawn from ``opts.seed``, as safetensors."""
    from fl.models import build_model, state_dict_of, to_safetensors

    return to_safetensors(state_dict_of(build_model(opts.model_id, opts.model_config,
                                                    seed=opts.seed)))


def check_initial_model(opts: TaskOptions, data: bytes) -> None:
    """Raise ``ValueError`` unless ``data`` is safetensors holding exactly the tensors (names and
    shapes) of ``opts``'s model: every round would fail on another model."""
    from fl.models import build_model, check_compatible, from_safetensors, state_dict_of

    template = state_dict_of(build_model(opts.model_id, opts.model_config))
    check_compatible(from_safetensors(data), template)


def check_validation_set(opts: TaskOptions, data: bytes) -> int:
    """Raise ``ValueError`` unless ``data`` is a validation set (fl.data.validation) for
    ``opts``'s model; returns its sample count."""
    from fl.data.validation import validation_for_model

    _, y = validation_for_model(data, opts.model_id, opts.model_config)
    return len(y)
