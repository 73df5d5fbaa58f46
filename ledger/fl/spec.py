"""``TaskSpec`` (record 120): what a federated task is, validated strictly when built or decoded.

The spec names things the FL engine defines (model ids and configs, training
configs, aggregation rules). Those checks import ``fl`` lazily, on the first
spec validated, so importing the contract stays light; ``fl.models`` brings torch
with it (pure config validation, no I/O). Results are cached by the canonical
encoding of the checked value, because every read of a task record revalidates
its spec.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from ledger.codec import encode, record
from ledger.crypto import ADDRESS_LEN
from ledger.params import PPM
from ledger.tx import MAX_AMOUNT

# ---------------------------------------------------------------- limits and names

MAX_NAME_LEN = 64
MAX_CID_LEN = 64  # binary CIDv1 of the content store: 36 (raw) or 39 (manifest) bytes
HASH_LEN = 32
X25519_KEY_LEN = 32
MAX_ID = 2**63 - 1
MAX_ROUNDS = 10_000
MAX_CLIENTS_PER_ROUND = 512
MAX_ROUND_BLOCKS = 1_000_000
MAX_POL_K = 1 << 20
MAX_JAIL_AFTER = 1000
MAX_KEY_HOLDERS = 16
MAX_RULE_PARAMS = 16
MAX_PARAM_KEY_LEN = 32
MAX_PARAM_STR_LEN = 64
MAX_MODEL_CONFIG_KEYS = 16
MAX_DP_CLIP_Q = 1 << 40  # the fixed-point model range (|x| <= 65536 at 2^-24)
MAX_DP_NOISE_MILLI = 1_000_000
PPB = 1_000_000_000
# fl.aggregate.W_MAX: the total weight one aggregation accepts (tested equal)
MAX_ROUND_SAMPLES = 1 << 22

PRIVACY_MODES = ("none", "dp", "he", "dp+he")  # fl.privacy.pipeline.MODES (tested equal)
POL_POLICIES = ("replay", "attest", "off")  # fl.pol.POLICIES (tested equal)
# data schema -> (sample shape, classes): what trainers' samples look like
DATA_SCHEMAS: dict[str, tuple[tuple[int, ...], int]] = {
    "digits": ((1, 8, 8), 10),
    "mnist": ((1, 28, 28), 10),
    "cifar10": ((3, 32, 32), 10),
}


def uses_dp(privacy: str) -> bool:
    return privacy in ("dp", "dp+he")


def uses_he(privacy: str) -> bool:
    return privacy in ("he", "dp+he")


# ---------------------------------------------------------------- field checks


def check_int(name: str, value: object, lo: int, hi: int) -> None:
    if type(value) is not int or not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer in {lo}..{hi}, got {value!r}")


def check_bytes(name: str, value: object, lengths: tuple[int, ...]) -> None:
    if type(value) is not bytes or len(value) not in lengths:
        want = " or ".join(str(n) for n in lengths)
        got = len(value) if isinstance(value, bytes) else type(value).__name__
        raise ValueError(f"{name} must be {want} bytes, got {got}")


def check_address(name: str, value: object) -> None:
    check_bytes(name, value, (ADDRESS_LEN,))


def check_cid(name: str, value: object, *, optional: bool = False) -> None:
    """A binary content id (the content store parses it; the contract checks only its size)."""
    if type(value) is not bytes or len(value) > MAX_CID_LEN or (not value and not optional):
        extra = " (or empty)" if optional else ""
        raise ValueError(f"{name} must be a content id of 1..{MAX_CID_LEN} bytes{extra}")


def check_text(name: str, value: object, max_len: int, *, empty_ok: bool = False) -> None:
    if type(value) is not str or len(value) > max_len or (not value and not empty_ok):
        raise ValueError(f"{name} must be a string of 1..{max_len} characters")
    if not value.isprintable():
        raise ValueError(f"{name} must be printable")


# ---------------------------------------------------------------- checks against the FL engine


class _Invalid(ValueError):
    pass


@functools.lru_cache(maxsize=256)
def _check_model(model_id: str, config_bytes: bytes, data_schema: str) -> str | None:
    """None if ``model_id`` with this config takes samples of ``data_schema``, else the error."""
    from fl.models.registry import input_shape, model_ids, resolve_config
    from ledger.codec import decode

    if model_id not in model_ids():
        return f"unknown model id {model_id!r} (known: {', '.join(model_ids())})"
    config = decode(config_bytes)
    try:
        full = resolve_config(model_id, config)
        shape = input_shape(model_id, config)
    except ValueError as e:
        return f"model_config: {e}"
    sample_shape, classes = DATA_SCHEMAS[data_schema]
    if math.prod(shape) != math.prod(sample_shape):
        return (
            f"model {model_id!r} takes inputs of shape {shape}, "
            f"data schema {data_schema!r} has samples of shape {sample_shape}"
        )
    if full.get("num_classes", classes) != classes:
        return f"model has {full['num_classes']} classes, data schema {data_schema!r} has {classes}"
    return None


@functools.lru_cache(maxsize=256)
def _check_train(train_bytes: bytes, needs_determinism: bool) -> str | None:
    from fl.train.config import TrainConfig
    from ledger.codec import decode

    plain = decode(train_bytes)
    try:
        cfg = TrainConfig.from_plain(plain)
    except (ValueError, TypeError) as e:
        return f"train: {e}"
    if cfg.to_plain() != plain:
        return "train must be exactly TrainConfig.to_plain() (every field, shortest decimals)"
    if cfg.epochs < 1:
        return "train: epochs must be >= 1"
    if cfg.batch_size > 1 << 16:
        return "train: batch_size must be <= 65536"
    if needs_determinism and not cfg.deterministic:
        return "train: PoL policies replay and attest need deterministic training"
    return None


def _fraction(name: str, value: int | str) -> Fraction:
    try:
        return Fraction(str(value))
    except (ValueError, ZeroDivisionError):
        raise _Invalid(f"rule_params.{name} must be an int or a decimal string") from None


def _param_int(params: dict[str, int | str], name: str, lo: int) -> None:
    if name in params:
        v = params[name]
        if type(v) is not int or v < lo:
            raise _Invalid(f"rule_params.{name} must be an integer >= {lo}")


@functools.lru_cache(maxsize=256)
def _check_rule(rule: str, params_bytes: bytes) -> str | None:
    from fl.aggregate import RULES
    from fl.aggregate.screen import ScreenConfig
    from ledger.codec import decode

    if rule not in RULES:
        return f"unknown aggregation rule {rule!r} (known: {', '.join(RULES)})"
    params: dict[str, int | str] = decode(params_bytes)
    allowed = {
        "fedavg": set(),
        "median": set(),
        "trimmed": {"beta"},
        "krum": {"f"},
        "multikrum": {"f", "m"},
        "normbound": {"max_norm"},
    }
    try:
        if rule == "robust":
            ScreenConfig.from_params(params)
            return None
        unknown = sorted(set(params) - allowed[rule])
        if unknown:
            return f"rule {rule!r} takes no parameters {unknown}"
        if "beta" in params and not 0 <= _fraction("beta", params["beta"]) < Fraction(1, 2):
            return "rule_params.beta must be in [0, 1/2)"
        _param_int(params, "f", 0)
        _param_int(params, "m", 1)
        if rule == "normbound":
            if "max_norm" not in params:
                return "rule normbound needs rule_params.max_norm"
            if _fraction("max_norm", params["max_norm"]) <= 0:
                return "rule_params.max_norm must be positive"
    except ValueError as e:  # _Invalid, and the engine's AggregationError
        return str(e)
    return None


# ---------------------------------------------------------------- the spec


@record(120)
@dataclass(frozen=True)
class TaskSpec:
    """A federated task as its creator states it (docs/fl-chain.md section 2)."""

    name: str
    model_id: str
    model_config: dict[str, int | list[int]]
    train: dict[str, int | str | bool | None]  # fl.train.TrainConfig.to_plain()
    data_schema: str
    rounds: int
    clients_per_round: int
    min_participants: int
    round_blocks: int
    reveal_blocks: int
    rule: str
    rule_params: dict[str, int | str]
    privacy: str
    dp_clip_q: int
    dp_noise_milli: int
    dp_delta_ppb: int
    pol_policy: str
    pol_k: int
    pool: int
    trainer_reward_cap: int
    validator_share_ppm: int
    join_bond: int
    slash_ppm: int
    jail_after: int
    validation_cid: bytes
    initial_model_cid: bytes
    key_holders: tuple[bytes, ...]
    he_context_cid: bytes

    def __post_init__(self) -> None:
        check_text("name", self.name, MAX_NAME_LEN)
        self._check_shape()
        self._check_schedule()
        self._check_privacy()
        self._check_economics()
        check_cid("validation_cid", self.validation_cid, optional=True)
        if self.validation_cid and self.rule != "robust":
            # only the robust screen scores updates on it (ADR 0404): refuse, not ignore
            raise ValueError("validation_cid needs the robust rule")
        check_cid("initial_model_cid", self.initial_model_cid)
        for err in (
            _check_model(self.model_id, encode(self.model_config), self.data_schema),
            _check_train(encode(self.train), self.pol_policy != "off"),
            _check_rule(self.rule, encode(self.rule_params)),
        ):
            if err is not None:
                raise ValueError(err)

    def _check_shape(self) -> None:
        check_text("model_id", self.model_id, MAX_NAME_LEN)
        if type(self.model_config) is not dict or len(self.model_config) > MAX_MODEL_CONFIG_KEYS:
            raise ValueError(f"model_config must be a map of at most {MAX_MODEL_CONFIG_KEYS} keys")
        if type(self.train) is not dict:
            raise ValueError("train must be a map")
        if self.data_schema not in DATA_SCHEMAS:
            raise ValueError(f"data_schema must be one of {', '.join(DATA_SCHEMAS)}")
        if type(self.rule_params) is not dict or len(self.rule_params) > MAX_RULE_PARAMS:
            raise ValueError(f"rule_params must be a map of at most {MAX_RULE_PARAMS} keys")
        for k, v in self.rule_params.items():
            check_text("rule_params key", k, MAX_PARAM_KEY_LEN)
            if type(v) is str:
                check_text(f"rule_params.{k}", v, MAX_PARAM_STR_LEN)
            elif type(v) is not int:
                raise ValueError(f"rule_params.{k} must be an int or a string")

    def _check_schedule(self) -> None:
        check_int("rounds", self.rounds, 1, MAX_ROUNDS)
        check_int("clients_per_round", self.clients_per_round, 1, MAX_CLIENTS_PER_ROUND)
        check_int("min_participants", self.min_participants, 1, self.clients_per_round)
        check_int("round_blocks", self.round_blocks, 1, MAX_ROUND_BLOCKS)
        if self.pol_policy not in POL_POLICIES:
            raise ValueError(f"pol_policy must be one of {', '.join(POL_POLICIES)}")
        if self.pol_policy == "replay":
            check_int("reveal_blocks", self.reveal_blocks, 1, MAX_ROUND_BLOCKS)
        else:
            check_int("reveal_blocks (only replay has reveals)", self.reveal_blocks, 0, 0)
        check_int("pol_k", self.pol_k, 0 if self.pol_policy == "off" else 1, MAX_POL_K)

    def _check_privacy(self) -> None:
        if self.privacy not in PRIVACY_MODES:
            raise ValueError(f"privacy must be one of {', '.join(PRIVACY_MODES)}")
        if self.privacy != "none" and self.rule != "fedavg":
            # robust rules need plaintext (HE) or break the DP sensitivity bound (fl.privacy)
            raise ValueError(f"privacy {self.privacy!r} allows only the fedavg rule")
        if uses_dp(self.privacy):
            check_int("dp_clip_q", self.dp_clip_q, 1, MAX_DP_CLIP_Q)
            check_int("dp_noise_milli", self.dp_noise_milli, 0, MAX_DP_NOISE_MILLI)
            check_int("dp_delta_ppb", self.dp_delta_ppb, 1, PPB - 1)
        else:
            for name in ("dp_clip_q", "dp_noise_milli", "dp_delta_ppb"):
                check_int(f"{name} (no DP)", getattr(self, name), 0, 0)
        if uses_he(self.privacy):
            if self.pol_policy != "off":
                raise ValueError("HE tasks need pol_policy 'off' (checkpoints are plaintext)")
            if not 1 <= len(self.key_holders) <= MAX_KEY_HOLDERS:
                raise ValueError(f"HE tasks need 1..{MAX_KEY_HOLDERS} key_holders")
            for i, a in enumerate(self.key_holders):
                check_address(f"key_holders[{i}]", a)
            if len(set(self.key_holders)) != len(self.key_holders):
                raise ValueError("key_holders must be distinct")
            check_cid("he_context_cid", self.he_context_cid)
        else:
            if self.key_holders:
                raise ValueError("key_holders are only for HE tasks")
            check_cid("he_context_cid (no HE)", self.he_context_cid, optional=True)
            if self.he_context_cid:
                raise ValueError("he_context_cid is only for HE tasks")

    def _check_economics(self) -> None:
        check_int("pool", self.pool, 0, MAX_AMOUNT)
        check_int("trainer_reward_cap", self.trainer_reward_cap, 0, MAX_AMOUNT)
        check_int("validator_share_ppm", self.validator_share_ppm, 0, PPM)
        check_int("join_bond", self.join_bond, 1, MAX_AMOUNT)
        check_int("slash_ppm", self.slash_ppm, 0, PPM)
        check_int("jail_after", self.jail_after, 1, MAX_JAIL_AFTER)

    @property
    def uses_he(self) -> bool:
        return uses_he(self.privacy)

    @property
    def uses_dp(self) -> bool:
        return uses_dp(self.privacy)

    def train_config(self) -> Any:
        """The task's ``fl.train.TrainConfig`` (imports the FL engine)."""
        from fl.train.config import TrainConfig

        return TrainConfig.from_plain(self.train)

    def resolved_model_config(self) -> dict[str, Any]:
        """The model config with the registry's defaults filled in (what PoL transcripts hold)."""
        from fl.models.registry import resolve_config

        return resolve_config(self.model_id, self.model_config)
