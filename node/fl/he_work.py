"""The HE work of a node for `he` and `dp+he` tasks, as plain functions (docs/fl-chain.md §5).

Like :mod:`node.fl.work`, nothing here touches the content store, the chain or trio, so the
services run these in worker threads. Who runs what:

* task creator / key holder: :func:`make_task_context` (CKKS keys and the public **task
  context object** whose CID is ``TaskSpec.he_context_cid``), :func:`decrypt_round` (the
  new global model from the encrypted sum);
* trainer: :func:`encrypt_update` (DP noise first under ``dp+he``, then CKKS);
* validator (public context only): :func:`check_submission` and :func:`add_updates`.
  Nothing on this path can decrypt: the validators' objects are ciphertexts, their sum and
  the public context.

The task context object is the canonical msgpack of :class:`HeTaskContext`: the CKKS
parameters, the packing layout every submission must use, and the public TenSEAL context
(public key only). The layout is fixed at task creation, so validators can check every
ciphertext's header against it and the key holders decode the sum the same way.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from fl.aggregate import apply_delta, dequantize, quantize
from fl.aggregate.fixed import SCALE_BITS, vector_digest
from fl.models import build_model, flatten, from_safetensors, to_safetensors, unflatten
from fl.privacy.errors import HeError, HeFormatError, HeMismatchError
from fl.privacy.he import (
    PARAMS,
    HeParams,
    PublicContext,
    SecretContext,
    add,
    decrypt,
    encrypt,
    fedavg_delta,
    inspect,
)
from fl.privacy.packing import Layout, PackingError, from_grid, to_grid
from ledger.codec import CodecError, decode_record, encode, record

__all__ = [
    "HE_REACH",
    "DecryptedRound",
    "EncryptedUpdate",
    "HeTaskContext",
    "KeyBundle",
    "add_updates",
    "check_submission",
    "decrypt_round",
    "encrypt_update",
    "expected_weight",
    "he_layout",
    "make_task_context",
    "model_size",
    "spec_dp",
]

# `he`: coordinates of an update must fit |x| <= HE_REACH (model units); the grid is the
# finest (at most 2^-24, bit-exact with plaintext FedAvg) that allows it at the task's
# largest round weight.
HE_REACH = 1.0
MAX_CONTEXT_OBJECT = 16 << 20


@record(560)
@dataclass(frozen=True)
class HeTaskContext:
    """The public HE context of a task (the object ``TaskSpec.he_context_cid`` names)."""

    params: HeParams
    layout: Layout
    public: bytes  # TenSEAL context with the public key only

    def __post_init__(self) -> None:
        if not isinstance(self.params, HeParams) or not isinstance(self.layout, Layout):
            raise HeFormatError("params and layout must be HeParams and Layout records")
        if self.layout.slot_bits > self.params.slot_bits:
            raise HeMismatchError(
                f"layout needs {self.layout.slot_bits}-bit slots, parameters give "
                f"{self.params.slot_bits}"
            )
        if type(self.public) is not bytes or not self.public:
            raise HeFormatError("public must be the public context's bytes")

    def to_bytes(self) -> bytes:
        return encode(self)

    @classmethod
    def from_bytes(cls, data: bytes) -> HeTaskContext:
        try:
            return decode_record(bytes(data), cls, max_size=MAX_CONTEXT_OBJECT)
        except (CodecError, ValueError) as e:
            raise HeFormatError(f"not an HE task context object: {e}") from e

    def public_context(self) -> PublicContext:
        """Load (and check) the public TenSEAL context under this object's parameters."""
        return PublicContext.from_bytes(self.public, self.params)

    @property
    def key_id(self) -> bytes:
        return public_key_id(self.public)


def public_key_id(public: bytes) -> bytes:
    """PublicContext.key_id without loading TenSEAL (same domain and hash)."""
    from fl.privacy.he import _KEY_DOMAIN

    return hashlib.sha256(_KEY_DOMAIN + public).digest()


@record(561)
@dataclass(frozen=True)
class KeyBundle:
    """What a key holder's ``KeyShare`` delivers to a trainer (wrapped to its X25519 key).

    The trainer learns which public key its updates must be encrypted under, confirmed by a
    key holder of the task (the KeyShare tx is signed by one). The CKKS secret key is **not**
    in it: encryption needs only the public key, and a trainer holding the secret key could
    decrypt every other trainer's update (docs/fl-chain.md "HE tasks", ADR 0154).
    """

    task_id: int
    he_context_cid: bytes
    key_id: bytes  # PublicContext.key_id of the task's public context
    holder: bytes  # the key holder's account address

    def __post_init__(self) -> None:
        if type(self.task_id) is not int or self.task_id < 1:
            raise ValueError("task_id must be a positive int")
        if type(self.key_id) is not bytes or len(self.key_id) != 32:
            raise ValueError("key_id must be 32 bytes")
        if type(self.he_context_cid) is not bytes or not self.he_context_cid:
            raise ValueError("he_context_cid must be a content id")
        if type(self.holder) is not bytes or len(self.holder) != 20:
            raise ValueError("holder must be an address")

    def to_bytes(self) -> bytes:
        return encode(self)

    @classmethod
    def from_bytes(cls, data: bytes) -> KeyBundle:
        try:
            return decode_record(bytes(data), cls, max_size=4096)
        except (CodecError, ValueError) as e:
            raise HeFormatError(f"not a key bundle: {e}") from e


# ------------------------------------------------------------------ task setup


@functools.lru_cache(maxsize=64)
def _model_size(model_id: str, config_bytes: bytes) -> int:
    from fl.models import state_dict_of
    from ledger.codec import decode

    return int(flatten(state_dict_of(build_model(model_id, decode(config_bytes), seed=0))).size)


def model_size(model_id: str, model_config: dict[str, Any]) -> int:
    """Number of values of the model's flattened state (what an update encrypts)."""
    return _model_size(model_id, encode(dict(model_config)))


def spec_dp(spec: Any) -> Any:
    """The task's ``DpParams`` (``dp`` and ``dp+he``), else None. ``clients`` (the
    population) does not change a client's noise share, so clients_per_round stands in."""
    if spec.privacy not in ("dp", "dp+he"):
        return None
    from fl.privacy import DpParams

    return DpParams.of(spec.dp_clip_q / (1 << SCALE_BITS), spec.dp_noise_milli / 1000,
                       max(spec.dp_delta_ppb, 1) / 1e9, spec.clients_per_round,
                       spec.clients_per_round)


def he_layout(privacy: str, params: HeParams, *, max_round_samples: int,
              clients_per_round: int, num_params: int, dp: Any = None) -> Layout:
    """The packing layout of a task's submissions.

    ``he``: sample-weighted FedAvg, one lane, weights up to ``max_round_samples`` (the most
    samples a round can bring); the grid is 2^-24 (bit-exact with the plaintext rule) when
    that leaves |x| <= HE_REACH, else the finest coarser grid that does.
    ``dp+he``: unit weights and the grid fitted to the noise and the model size
    (:func:`fl.privacy.pipeline.fit_dp_layout`, as the simulation harness does).
    """
    if privacy == "he":
        if max_round_samples < 1:
            raise PackingError("max_round_samples must be >= 1")
        return Layout.fitted(HE_REACH, max_round_samples, 1, params.slot_bits,
                             resolution=HE_REACH)
    if privacy == "dp+he":
        if dp is None:
            raise PackingError("dp+he needs the task's DP parameters")
        from fl.privacy.pipeline import fit_dp_layout

        return fit_dp_layout(dp, params.slot_bits, clients_per_round, num_params)
    raise PackingError(f"privacy {privacy!r} does not use HE")


def make_task_context(params_name: str, layout: Layout) -> tuple[SecretContext, HeTaskContext]:
    """New CKKS keys for a task: the secret context (key holders keep it) and the public
    task context object (goes into the content store; its CID is ``he_context_cid``)."""
    if params_name not in PARAMS:
        raise HeError(f"unknown HE parameters {params_name!r} (known: {', '.join(PARAMS)})")
    params = PARAMS[params_name]
    secret = SecretContext.generate(params)
    return secret, HeTaskContext(params, layout, secret.to_bytes())


def expected_weight(spec: Any, samples: int) -> int:
    """The aggregation weight a submission's ciphertext must carry: its sample count under
    `he` (weighted FedAvg), 1 under `dp+he` (the DP-FedAvg analysis assumes unit weights)."""
    return 1 if spec.privacy == "dp+he" else int(samples)


# ------------------------------------------------------------------ trainer


@dataclass(frozen=True)
class EncryptedUpdate:
    blob: bytes
    count: int  # values encrypted
    weight: int
    clamped: int  # coordinates fitted into the layout's range before encryption
    clipped: bool  # DP clipping shortened the update


def encrypt_update(gstate: dict[str, Any], trained: dict[str, Any], ctx: PublicContext,
                   layout: Layout, weight: int, dp: Any = None,
                   noise_seed: bytes | None = None, zeros: Any = None) -> EncryptedUpdate:
    """Encrypt ``weight x (trained - global)`` under the task's public key.

    The delta is taken exactly as the plaintext rule does (``quantize(trained) -
    quantize(global)`` at 2^-24). Under ``dp+he`` it is first clipped and noised on the
    layout's grid (``noise_seed=None``: fresh OS randomness, the only safe choice outside
    tests). Coordinates beyond the layout's range are clamped and counted. ``zeros``: the
    trainer's :class:`fl.privacy.ZeroPool` (encryptions of zero made while it waited).
    """
    from fl.privacy import privatize

    g = flatten(gstate)
    t = flatten(trained)
    clipped = False
    if dp is None:
        q = quantize(t) - quantize(g)
    else:
        p = privatize(t.astype(np.float64) - g.astype(np.float64), dp, seed=noise_seed,
                      frac_bits=layout.frac_bits)
        q, clipped = p.values, p.clipped
    grid = to_grid(q, layout)
    bound = layout.value_bound
    clamped = int(np.count_nonzero(np.abs(grid) > bound))
    values = from_grid(np.clip(grid, -bound, bound), layout)
    blob = encrypt(values, ctx, layout, weight, zeros=zeros)
    return EncryptedUpdate(blob, int(values.size), weight, clamped, clipped)


# ------------------------------------------------------------------ validator


def check_submission(blob: bytes, ctx: PublicContext, layout: Layout, count: int,
                     weight: int) -> None:
    """Raise an :class:`HeError` unless ``blob`` is one well-formed encryption of ``count``
    values with ``weight`` under the task's key and layout (public context only).

    The framing and header are checked first, then every ciphertext is loaded under the
    context (SEAL validates it against the modulus; size, level and scale are checked).
    """
    h = inspect(blob)
    if h.layout != layout:
        raise HeMismatchError(f"layout {h.layout.describe()} is not the task's "
                              f"({layout.describe()})")
    if h.count != count:
        raise HeMismatchError(f"{h.count} values, the model has {count}")
    if h.summands != 1:
        raise HeMismatchError(f"a submission is one encryption, not a sum of {h.summands}")
    if h.weight != weight:
        raise HeMismatchError(f"weight {h.weight}, the submission declares {weight}")
    add([blob], ctx)  # loads and checks every ciphertext against the context


def add_updates(blobs: list[bytes], ctx: PublicContext) -> bytes:
    """The encrypted sum (byte-identical on every validator; inputs in canonical order)."""
    return add(blobs, ctx)


# ------------------------------------------------------------------ key holder


@dataclass(frozen=True)
class DecryptedRound:
    new_model: bytes  # canonical safetensors of the new global model
    digest: bytes  # fl.aggregate digest of the FedAvg delta
    weight: int
    summands: int
    max_residual: float


def decrypt_round(total: bytes, secret: SecretContext, layout: Layout, count: int,
                  global_bytes: bytes) -> DecryptedRound:
    """Decrypt a round's encrypted sum and apply FedAvg to the global model.

    ``delta = div_round(sum_i w_i u_i, sum_i w_i)`` (:func:`fl.privacy.he.fedavg_delta`,
    the plaintext rule's rounding) and ``new = dequantize(quantize(global) + delta)`` in the
    model's parameter order, written as canonical safetensors: under `he` with a 2^-24
    layout the same bytes the plaintext FedAvg rule gives for the same updates.
    """
    h = inspect(total)
    if h.layout != layout or h.count != count:
        raise HeMismatchError("the encrypted aggregate does not have the task's layout and size")
    s = decrypt(total, secret)
    delta = fedavg_delta(s)
    gstate = from_safetensors(global_bytes)
    gvec = flatten(gstate)
    if gvec.size != delta.size:
        raise HeMismatchError(f"aggregate has {delta.size} values, the model {gvec.size}")
    new_q = apply_delta(quantize(gvec), delta)
    new_state = unflatten(dequantize(new_q), gstate)
    return DecryptedRound(to_safetensors(new_state), vector_digest(delta), s.weight,
                          s.summands, s.max_residual)
