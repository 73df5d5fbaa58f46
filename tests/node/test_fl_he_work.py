"""HE on the chain, node side: the key wrap of key shares and the HE work functions.

Fast (one CKKS key per module, the digits MLP of 4,810 values): trainers encrypt,
validators check and add with the public context only, the key holder decrypts the sum and
gets the same global model, byte for byte, as the plaintext FedAvg of the same updates.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from fl.models import build_model, state_dict_of, to_safetensors
from fl.privacy import DpParams, HeError, HeKeyError, PublicContext, noise_seed, privatize
from fl.privacy.he import PARAMS, ZeroPool, decrypt, inspect
from fl.privacy.packing import Layout
from node.fl.he_work import (
    HeTaskContext,
    KeyBundle,
    add_updates,
    check_submission,
    decrypt_round,
    encrypt_update,
    expected_weight,
    he_layout,
    make_task_context,
    model_size,
)
from node.fl.keyholder import SecretStore, create_context
from node.fl.keywrap import (
    WrapError,
    X25519KeyPair,
    load_or_create_keypair,
    share_context,
    unwrap,
    wrap,
)
from node.fl.work import Candidate, aggregate_round

A1, A2, HOLDER = b"\x01" * 20, b"\x02" * 20, b"\x0a" * 20


# ------------------------------------------------------------------ key wrap


def test_wrap_round_trip_and_binding() -> None:
    alice, bob = X25519KeyPair.generate(), X25519KeyPair.generate()
    ctx = share_context("chain", 1, A1, HOLDER)
    secret = os.urandom(1000)
    blob = wrap(secret, alice.public, ctx)
    assert unwrap(blob, alice, ctx) == secret
    assert secret not in blob and len(blob) == len(secret) + 4 + 1 + 32 + 16
    assert wrap(secret, alice.public, ctx) != blob  # fresh ephemeral key each time
    with pytest.raises(WrapError):
        unwrap(blob, bob, ctx)  # another recipient
    for other in (share_context("chain", 2, A1, HOLDER), share_context("chain", 1, A2, HOLDER),
                  share_context("chain", 1, A1, A2), share_context("other", 1, A1, HOLDER)):
        with pytest.raises(WrapError):
            unwrap(blob, alice, other)  # replayed to another task, trainer, holder or chain


def test_wrap_rejects_tampering_and_bad_framing() -> None:
    k = X25519KeyPair.generate()
    ctx = b"ctx"
    blob = wrap(b"key material", k.public, ctx)
    rng = np.random.default_rng(0)
    for pos in rng.choice(len(blob), 20, replace=False):
        bad = bytearray(blob)
        bad[pos] ^= 1 << int(rng.integers(8))
        with pytest.raises(WrapError):
            unwrap(bytes(bad), k, ctx)
    for cut in (0, 3, 5, 36, 37, len(blob) - 1):
        with pytest.raises(WrapError):
            unwrap(blob[:cut], k, ctx)
    with pytest.raises(WrapError, match="magic"):
        unwrap(b"XXXX" + blob[4:], k, ctx)
    with pytest.raises(WrapError, match="version"):
        unwrap(blob[:4] + b"\x02" + blob[5:], k, ctx)
    with pytest.raises(WrapError, match="low order"):
        wrap(b"x", bytes(32), ctx)  # the all-zero point gives an all-zero shared secret
    with pytest.raises(WrapError):
        wrap(b"x", b"\x01" * 31, ctx)


def test_keypair_file_is_private_and_stable(tmp_path: Path) -> None:
    path = tmp_path / "config" / "fl_x25519.key"
    a = load_or_create_keypair(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(path.read_bytes()) == 32
    b = load_or_create_keypair(path)
    assert a.public == b.public
    path.write_bytes(b"short")
    with pytest.raises(WrapError, match="corrupt"):
        load_or_create_keypair(path)


# ------------------------------------------------------------------ HE work functions


@pytest.fixture(scope="module")
def task() -> tuple[object, HeTaskContext, PublicContext, Layout]:
    layout = he_layout("he", PARAMS["n8192"], max_round_samples=1437, clients_per_round=3,
                       num_params=4810)
    secret, ctx = make_task_context("n8192", layout)
    obj = ctx.to_bytes()
    loaded = HeTaskContext.from_bytes(obj)
    public = loaded.public_context()
    return secret, loaded, public, layout


def _states(n: int, seed: int = 0) -> tuple[dict[str, torch.Tensor], list[dict[str,
                                                                                 torch.Tensor]]]:
    g = state_dict_of(build_model("mlp", {}, seed=1))
    rng = np.random.default_rng(seed)
    trained = []
    for _ in range(n):
        trained.append({k: (v + torch.from_numpy(rng.normal(0, 0.05, tuple(v.shape)).astype(
            np.float32))) for k, v in g.items()})
    return g, trained


def test_layouts() -> None:
    he = he_layout("he", PARAMS["n8192"], max_round_samples=1437, clients_per_round=3,
                   num_params=4810)
    assert (he.frac_bits, he.lanes, he.max_weight) == (24, 1, 1437) and he.max_abs >= 1.0
    big = he_layout("he", PARAMS["n8192"], max_round_samples=48_000, clients_per_round=10,
                    num_params=4810)
    assert big.frac_bits < 24 and big.max_abs >= 1.0  # coarser grid, still |x| <= 1
    dp = DpParams.of(1.0, 0.3, 1e-5, 3, 3)
    dph = he_layout("dp+he", PARAMS["n8192"], max_round_samples=0, clients_per_round=3,
                    num_params=4810, dp=dp)
    assert dph.max_weight == 4 and dph.max_abs >= 1.0
    assert model_size("mlp", {}) == 4810


def test_task_context_object_is_public(task: tuple) -> None:
    secret, ctx, public, _ = task
    assert not public.holds_secret_key and public.key_id == secret.key_id == ctx.key_id
    with pytest.raises(HeKeyError):
        decrypt(b"", public)  # type: ignore[arg-type]
    with pytest.raises(HeError):
        HeTaskContext.from_bytes(b"\x00garbage")
    bundle = KeyBundle(3, b"\x01" * 36, ctx.key_id, HOLDER)
    assert KeyBundle.from_bytes(bundle.to_bytes()) == bundle


def test_he_round_equals_plaintext_fedavg(task: tuple) -> None:
    """Trainers encrypt, validators check and add (public context), the key holder decrypts:
    the new global model is byte-identical to plaintext FedAvg of the same updates."""
    secret, ctx, public, layout = task
    g, trained = _states(3)
    samples = [400, 500, 537]
    blobs = []
    zeros = ZeroPool(public, 4810, layout)  # offline/online: 2 from the pool, 1 from scratch
    zeros.fill(2)
    for t, n in zip(trained, samples):
        out = encrypt_update(g, t, public, layout, n, zeros=zeros)
        assert out.clamped == 0 and out.count == 4810
        check_submission(out.blob, public, layout, 4810, n)
        blobs.append(out.blob)
    total = add_updates(blobs, public)
    assert add_updates(blobs[::-1], public) == total  # order-free, byte-identical
    h = inspect(total)
    assert (h.summands, h.weight) == (3, sum(samples))
    gbytes = to_safetensors(g)
    got = decrypt_round(total, secret, layout, 4810, gbytes)
    cands = [Candidate(bytes([i]) * 20, b"cid%d" % i, n, to_safetensors(t), i)
             for i, (t, n) in enumerate(zip(trained, samples))]
    plain = aggregate_round("fedavg", {}, gbytes, cands)
    assert got.new_model == plain.new_model and got.digest == plain.digest
    # 4,810 values fit one ciphertext of 8,192 (two per complex slot): 2 x 8192 x 8 bytes
    assert got.max_residual < 0.3 and 131_072 < len(blobs[0]) < 140_000


def test_validator_checks_catch_bad_submissions(task: tuple) -> None:
    secret, ctx, public, layout = task
    g, (t,) = _states(1, seed=5)
    good = encrypt_update(g, t, public, layout, 100).blob
    with pytest.raises(HeError, match="weight"):
        check_submission(good, public, layout, 4810, 99)  # header weight != declared samples
    with pytest.raises(HeError, match="values"):
        check_submission(good, public, layout, 4811, 100)
    other = Layout(20, 1, 36, 1437)
    with pytest.raises(HeError, match="layout"):
        check_submission(good, public, other, 4810, 100)
    with pytest.raises(HeError):
        check_submission(good[:-10], public, layout, 4810, 100)  # truncated
    with pytest.raises(HeError):
        check_submission(b"safetensors-ish plaintext", public, layout, 4810, 100)
    # another key (a trainer that made its own keys) is refused by the key id
    _, ctx2 = make_task_context("n8192", layout)
    foreign = encrypt_update(g, t, ctx2.public_context(), layout, 100).blob
    with pytest.raises(HeError, match="key"):
        check_submission(foreign, public, layout, 4810, 100)
    total = add_updates([good, good], public)
    with pytest.raises(HeError, match="sum"):
        check_submission(total, public, layout, 4810, 200)  # a sum is not a submission


def test_dp_he_round(task: tuple) -> None:
    """dp+he: clip and noise on the layout's grid, then encrypt; the key holder's model is
    FedAvg (unit weights) of exactly the noised updates."""
    dp = DpParams.of(0.5, 0.3, 1e-5, 3, 3)
    layout = he_layout("dp+he", PARAMS["n8192"], max_round_samples=0, clients_per_round=3,
                       num_params=4810, dp=dp)
    secret, ctx = make_task_context("n8192", layout)
    public = ctx.public_context()
    g, trained = _states(3, seed=2)
    blobs, cands = [], []
    for i, t in enumerate(trained):
        seed = noise_seed("test", i)
        out = encrypt_update(g, t, public, layout, expected_weight(_Spec, 123), dp,
                             noise_seed=seed)
        assert out.clipped and out.weight == 1
        check_submission(out.blob, public, layout, 4810, 1)
        blobs.append(out.blob)
        # the same noised update in plaintext, as a safetensors model
        from fl.aggregate import dequantize, quantize
        from fl.models import flatten, unflatten

        gv = flatten(g)
        d = privatize(flatten(t).astype(np.float64) - gv.astype(np.float64), dp, seed=seed,
                      frac_bits=layout.frac_bits).values
        cands.append(Candidate(bytes([i]) * 20, b"c%d" % i, 1,
                               to_safetensors(unflatten(dequantize(quantize(gv) + d), g)), i))
    gbytes = to_safetensors(g)
    got = decrypt_round(add_updates(blobs, public), secret, layout, 4810, gbytes)
    plain = aggregate_round("fedavg", {}, gbytes, cands)
    assert got.new_model == plain.new_model and got.weight == 3


class _Spec:
    privacy = "dp+he"


def test_secret_store(tmp_path: Path, task: tuple) -> None:
    store = SecretStore(tmp_path / "keyholder")
    layout = task[3]
    ctx, path = create_context(store, "n8192", layout)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.root.stat().st_mode) == 0o700
    fresh = SecretStore(tmp_path / "keyholder")
    secret = fresh.load(ctx.key_id, ctx.params)
    assert secret is not None and secret.holds_secret_key and secret.key_id == ctx.key_id
    assert fresh.load(b"\x00" * 32) is None
    # the public object holds no secret key
    assert not PublicContext.from_bytes(ctx.public, ctx.params).holds_secret_key
