"""CKKS encryption of updates: exact decrypted sums, key separation, and strict handling of bad bytes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fl.aggregate import Update, aggregate
from fl.privacy import (
    EXACT,
    LAYOUTS,
    PARAMS,
    HeDecryptError,
    HeError,
    HeFormatError,
    HeKeyError,
    HeMismatchError,
    HeParams,
    Layout,
    PackingError,
    PublicContext,
    SecretContext,
    ZeroPool,
    add,
    audit,
    decrypt,
    encrypt,
    fedavg_delta,
    inspect,
)
from fl.privacy import he as he_mod
from ledger.codec import decode_record, encode

N_VALUES = 10_000  # two ciphertexts at N = 8192 (8,192 values each), the second partly filled


@pytest.fixture(scope="module")
def sk() -> SecretContext:
    return SecretContext.generate(PARAMS["n8192"])


@pytest.fixture(scope="module")
def pub(sk: SecretContext) -> PublicContext:
    return PublicContext.from_bytes(sk.public().to_bytes(), PARAMS["n8192"])


@pytest.fixture(scope="module")
def other_sk() -> SecretContext:
    return SecretContext.generate(PARAMS["n8192"])


def _updates(n: int, seed: int, size: int = N_VALUES) -> tuple[list[np.ndarray], list[int]]:
    rng = np.random.default_rng(seed)
    # Deltas up to |x| < 1 at 2^-24 (the exact layout's range), sample weights summing <= 2048.
    deltas = [rng.integers(-(1 << 24) + 1, 1 << 24, size, dtype=np.int64) for _ in range(n)]
    weights = [int(w) for w in rng.integers(1, 2048 // n + 1, n)]
    return deltas, weights


# ---------------------------------------------------------------- parameters and contexts


@pytest.mark.parametrize(
    ("name", "security", "slots", "max_summands"),
    [("n4096", 128, 2048, 4096), ("n8192", 192, 4096, 1024), ("n16384", 256, 8192, 256)],
)
def test_parameter_sets_state_security_and_noise_budget(
    name: str, security: int, slots: int, max_summands: int
) -> None:
    p = PARAMS[name]
    assert p.security_bits == security and p.security_bits >= 128
    assert p.slots == slots and p.max_summands == max_summands and p.slot_bits == 36
    assert p.capacity == 2 * slots  # a real and an imaginary part per slot
    assert p.error_bound(p.max_summands) <= 0.5 < p.error_bound(2 * p.max_summands)
    assert decode_record(encode(p), HeParams) == p and len(p.fingerprint) == 32


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(HeError, match="poly_modulus_degree"):
        HeParams(1000, (60, 60), 22)
    with pytest.raises(HeError, match="coeff_mod_bit_sizes"):
        HeParams(8192, (60, 40, 60), 22)
    with pytest.raises(HeError, match="scale_bits"):
        HeParams(8192, (40, 40), 30)
    with pytest.raises(HeError, match="SEAL rejects"):  # 2 x 60 bits exceed the 109-bit bound
        SecretContext.generate(HeParams(4096, (60, 60), 22))


def test_public_context_has_no_secret_key_and_a_stable_key_id(
    sk: SecretContext, pub: PublicContext
) -> None:
    data = pub.to_bytes()
    assert not pub.holds_secret_key and sk.holds_secret_key
    assert pub.key_id == sk.key_id and len(data) < 300_000  # public key only, no relin keys
    again = PublicContext.from_bytes(data)  # parameters identified among PARAMS
    assert again.key_id == pub.key_id and again.params == PARAMS["n8192"]
    assert again._ctx.serialize(save_galois_keys=False, save_relin_keys=False) == data
    with pytest.raises(HeKeyError, match="secret key"):
        PublicContext.from_bytes(sk.secret_bytes())
    with pytest.raises(HeKeyError, match="no secret key"):
        SecretContext.from_secret_bytes(data)
    with pytest.raises(HeMismatchError, match="parameters are not"):
        PublicContext.from_bytes(data, PARAMS["n4096"])


@pytest.mark.parametrize("blob", [b"", b"\x00" * 100, b"not a context", b"\xff" * 5000])
def test_garbage_context_bytes_are_a_format_error(blob: bytes) -> None:
    with pytest.raises(HeFormatError):
        PublicContext.from_bytes(blob)


def test_key_holder_restores_its_secret_context(sk: SecretContext, pub: PublicContext) -> None:
    restored = SecretContext.from_secret_bytes(sk.secret_bytes())
    assert restored.key_id == sk.key_id
    v = np.arange(-50, 50, dtype=np.int64)
    assert np.array_equal(decrypt(encrypt(v, pub), restored).values, v)


# ---------------------------------------------------------------- exact sums


def test_decrypted_sum_of_100_updates_equals_the_plaintext_sum(
    sk: SecretContext, pub: PublicContext
) -> None:
    deltas, weights = _updates(100, seed=1)
    blobs = [encrypt(d, pub, EXACT, w) for d, w in zip(deltas, weights)]
    total = decrypt(add(blobs, pub), sk)
    want = sum(np.int64(w) * d for d, w in zip(deltas, weights))
    assert np.array_equal(total.values, want)  # exact after rounding
    # Before rounding, CKKS noise stayed inside the stated bound (10 sigma of the worst slot).
    assert total.max_residual <= PARAMS["n8192"].error_bound(100) < 0.5
    assert (total.weight, total.summands) == (sum(weights), 100)
    # Weighted FedAvg from the sum is the plaintext rule's result, bit for bit.
    plain = aggregate("fedavg", [Update.of(d, w) for d, w in zip(deltas, weights)])
    assert np.array_equal(fedavg_delta(total), plain.delta)


@pytest.mark.parametrize("name", ["packed2", "packed3"])
def test_packed_layouts_sum_exactly_at_their_extremes(
    name: str, sk: SecretContext, pub: PublicContext
) -> None:
    layout = LAYOUTS[name]
    rng = np.random.default_rng(2)
    shift = 24 - layout.frac_bits
    b = layout.value_bound
    vals = [
        rng.choice(np.array([-b, b], dtype=np.int64), 20_000) << shift
        for _ in range(layout.max_weight)
    ]
    blobs = [encrypt(v, pub, layout) for v in vals]
    total = decrypt(add(blobs, pub), sk)
    assert np.array_equal(total.values, sum(vals))
    # 20,000 values: 3 ciphertexts of 8,192 integers in the exact layout, 2 with two lanes,
    # 1 with three.
    assert inspect(blobs[0]).chunks == {2: 2, 3: 1}[layout.lanes]


def test_offline_online_encryption_sums_exactly_and_never_reuses_a_mask(
    sk: SecretContext, pub: PublicContext
) -> None:
    # Prepare: 6 updates; a pool with encryptions of zero for 4 of them
    deltas, weights = _updates(6, seed=11)
    pool = ZeroPool(pub, N_VALUES, EXACT)
    pool.fill(4)
    assert len(pool) == 4 and pool.sizes == [8192, N_VALUES - 8192]

    # Execute: the first 4 come from the pool (online: encode + add), the last 2 from
    # scratch because the pool is empty by then
    blobs = [encrypt(d, pub, EXACT, w, zeros=pool) for d, w in zip(deltas, weights)]

    # Assert: the same exact sum as fresh encryptions, the same ciphertext format and size
    assert len(pool) == 0 and pool.take() is None
    total = decrypt(add(blobs, pub), sk)
    assert np.array_equal(total.values, sum(np.int64(w) * d for d, w in zip(deltas, weights)))
    assert total.max_residual <= PARAMS["n8192"].error_bound(6)
    fresh = len(encrypt(deltas[0], pub, EXACT, weights[0]))  # SEAL compresses: +-a few bytes
    assert all(abs(len(b) - fresh) < 64 for b in blobs[:4])
    # each mask is fresh randomness used once: the same update encrypts differently
    pool.fill(2)
    a, b = (encrypt(deltas[0], pub, EXACT, 1, zeros=pool) for _ in range(2))
    assert a != b
    assert np.array_equal(decrypt(add([a], pub), sk).values, deltas[0])


def test_a_zero_pool_for_other_settings_is_refused(
    pub: PublicContext, other_sk: SecretContext
) -> None:
    d = _updates(1, seed=12)[0][0]
    for pool in (ZeroPool(pub, N_VALUES + 1, EXACT), ZeroPool(pub, N_VALUES, LAYOUTS["packed2"]),
                 ZeroPool(other_sk.public(), N_VALUES, EXACT)):
        pool.fill(1)
        with pytest.raises(HeError, match="zero pool"):
            encrypt(d, pub, EXACT, 1, zeros=pool)
        assert len(pool) == 1  # nothing was taken


def test_addition_is_order_independent_and_deterministic(pub: PublicContext) -> None:
    deltas, weights = _updates(5, seed=3, size=100)
    blobs = [encrypt(d, pub, EXACT, w) for d, w in zip(deltas, weights)]
    assert add(blobs, pub) == add(blobs[::-1], pub) == add(blobs, pub)


def test_two_processes_produce_byte_identical_sums(tmp_path: Path, pub: PublicContext) -> None:
    deltas, weights = _updates(6, seed=4, size=300)
    blobs = [encrypt(d, pub, EXACT, w) for d, w in zip(deltas, weights)]
    (tmp_path / "ctx").write_bytes(pub.to_bytes())
    for i, b in enumerate(blobs):
        (tmp_path / f"u{i}").write_bytes(b)
    script = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        from fl.privacy import PublicContext, add
        d = Path(sys.argv[1])
        ctx = PublicContext.from_bytes((d / "ctx").read_bytes())
        blobs = [(d / f"u{i}").read_bytes() for i in range(6)]
        if sys.argv[2] == "reversed":
            blobs.reverse()
        (d / ("sum-" + sys.argv[2])).write_bytes(add(blobs, ctx))
        """
    )
    root = Path(__file__).resolve().parents[2]
    for order in ("forward", "reversed"):
        subprocess.run(
            [sys.executable, "-c", script, str(tmp_path), order], check=True, cwd=root, timeout=120
        )
    here = add(blobs, pub)
    assert (tmp_path / "sum-forward").read_bytes() == here
    assert (tmp_path / "sum-reversed").read_bytes() == here


# ---------------------------------------------------------------- who can decrypt


def test_a_party_with_only_the_public_context_cannot_decrypt(
    sk: SecretContext, pub: PublicContext
) -> None:
    blob = encrypt(np.arange(10, dtype=np.int64), pub)
    with pytest.raises(HeKeyError, match="only the public context"):
        decrypt(blob, pub)  # type: ignore[arg-type]
    fake = SecretContext(pub._ctx, pub.params, pub.to_bytes())  # a "secret" context without a key
    with pytest.raises(HeKeyError):
        decrypt(blob, fake)
    # Not just our check: the public context has no key to decrypt with.
    with pytest.raises(ValueError, match="Secret key"):
        pub._ctx.secret_key()


def test_ciphertext_under_another_key_is_refused(
    sk: SecretContext, pub: PublicContext, other_sk: SecretContext
) -> None:
    foreign = encrypt(np.arange(10, dtype=np.int64), other_sk.public())
    mine = encrypt(np.arange(10, dtype=np.int64), pub)
    with pytest.raises(HeMismatchError, match="another public key"):
        add([mine, foreign], pub)
    with pytest.raises(HeMismatchError, match="another public key"):
        decrypt(foreign, sk)
    # A forged header that claims our key: decryption yields no integers and is refused.
    forged = _reheader(foreign, key_id=sk.key_id)
    with pytest.raises(HeDecryptError, match="away from integers"):
        decrypt(forged, sk)


def test_ciphertext_for_other_parameters_is_refused(sk: SecretContext, pub: PublicContext) -> None:
    small = SecretContext.generate(PARAMS["n4096"])
    blob = encrypt(np.arange(10, dtype=np.int64), small.public())
    with pytest.raises(HeMismatchError, match="other HE parameters"):
        add([blob], pub)
    forged = _reheader(blob, params_id=pub.params.fingerprint, key_id=pub.key_id)
    with pytest.raises(HeFormatError, match="not valid for this context"):
        decrypt(forged, sk)


def _reheader(blob: bytes, **changes: Any) -> bytes:
    import dataclasses

    parsed = he_mod._parse(blob)
    return he_mod._frame(dataclasses.replace(parsed.header, **changes), parsed.chunks)


# ---------------------------------------------------------------- bad bytes


def test_truncated_ciphertexts_are_format_errors(pub: PublicContext) -> None:
    blob = encrypt(np.arange(5000, dtype=np.int64), pub)
    cuts = [*range(0, 64), len(blob) // 3, len(blob) // 2, len(blob) - 100, len(blob) - 1]
    for cut in cuts:
        with pytest.raises(HeFormatError):
            add([blob[:cut]], pub)
    with pytest.raises(HeFormatError, match="trailing"):
        add([blob + b"\x00"], pub)
    with pytest.raises(HeFormatError, match="magic"):
        inspect(b"XXXX" + blob[4:])
    with pytest.raises(HeFormatError, match="version"):
        inspect(blob[:4] + b"\x09" + blob[5:])
    with pytest.raises(HeFormatError, match="expected ciphertext bytes"):
        inspect("text")  # type: ignore[arg-type]


def test_corrupted_ciphertexts_never_crash_nor_decrypt_to_a_wrong_sum(
    sk: SecretContext, pub: PublicContext
) -> None:
    v = np.random.default_rng(5).integers(-1000, 1000, 300, dtype=np.int64)
    blob = encrypt(v, pub)
    start = len(blob) - len(he_mod._parse(blob).chunks[0])  # corrupt inside the ciphertext
    rng = np.random.default_rng(6)
    outcomes = {"error": 0, "exact": 0}
    for _ in range(60):
        bad = bytearray(blob)
        for _ in range(int(rng.integers(1, 4))):
            bad[int(rng.integers(start, len(bad)))] ^= 1 << int(rng.integers(0, 8))
        try:
            got = decrypt(add([bytes(bad)], pub), sk).values
        except HeError:
            outcomes["error"] += 1
            continue
        assert np.array_equal(got, v)  # a flip in insignificant noise bits changes nothing
        outcomes["exact"] += 1
    assert outcomes["error"] > 0


def test_chunks_that_are_not_one_seal_ciphertext_are_format_errors(
    sk: SecretContext, pub: PublicContext
) -> None:
    blob = encrypt(np.arange(100, dtype=np.int64), pub)
    chunk = he_mod._parse(blob).chunks[0]
    header = he_mod._parse(blob).header

    def with_chunk(c: bytes) -> bytes:
        return he_mod._frame(header, [c])

    bad_magic = b"\x00\x00" + chunk[2:]
    longer = chunk + b"\x00" * 8  # SEAL would ignore the tail; the header's size does not match
    garbled = chunk[:16] + bytes(len(chunk) - 16)  # a valid header over a zeroed body
    for bad, msg in [(chunk[:10], "shorter than SEAL's header"), (bad_magic, "SEAL's header"),
                     (longer, "claims"), (garbled, "not valid for this context")]:
        with pytest.raises(HeFormatError, match=msg):
            add([with_chunk(bad)], pub)
        with pytest.raises(HeFormatError, match=msg):
            decrypt(with_chunk(bad), sk)
    # Bytes after the end of SEAL's compressed body, with a header that counts them, are
    # ignored by SEAL: the value is unchanged and a sum re-serializes to the canonical bytes.
    padded = chunk[:8] + (len(chunk) + 8).to_bytes(8, "little") + chunk[16:] + bytes(8)
    assert np.array_equal(decrypt(with_chunk(padded), sk).values, np.arange(100))
    assert add([with_chunk(padded)], pub) == add([blob], pub)
    # format version 1 (TenSEAL CKKSVector chunks, before ADR 0555) is refused by name
    with pytest.raises(HeFormatError, match="unsupported format version 1"):
        inspect(blob[:4] + b"\x01" + blob[5:])


def test_ciphertexts_pass_through_a_private_temporary_file_without_memfd(
    sk: SecretContext, pub: PublicContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    v = np.arange(-300, 301, dtype=np.int64)
    with_memfd = encrypt(v, pub)
    monkeypatch.delattr("os.memfd_create")  # as on macOS
    blob = encrypt(v, pub)
    assert np.array_equal(decrypt(add([blob, with_memfd], pub), sk).values, 2 * v)


def test_header_defects_are_format_errors(pub: PublicContext) -> None:
    blob = encrypt(np.arange(100, dtype=np.int64), pub)
    with pytest.raises(HeFormatError, match="ciphertexts for"):
        add([_reheader(blob, count=10_000)], pub)  # claims more values than it carries
    with pytest.raises(HeFormatError, match="inconsistent"):
        _reheader(blob, weight=0)
    with pytest.raises(HeMismatchError, match="noise budget"):
        add([_reheader(blob, summands=2000, weight=2000)], pub)


def test_add_enforces_headroom_layout_and_length(pub: PublicContext) -> None:
    a = encrypt(np.arange(10, dtype=np.int64), pub, EXACT, 2000)
    b = encrypt(np.arange(10, dtype=np.int64), pub, EXACT, 100)
    with pytest.raises(HeMismatchError, match="headroom"):
        add([a, b], pub)
    c = encrypt(np.arange(11, dtype=np.int64), pub)
    with pytest.raises(HeMismatchError, match="length"):
        add([b, c], pub)
    d = encrypt(np.arange(10, dtype=np.int64) << 13, pub, LAYOUTS["packed2"])
    with pytest.raises(HeMismatchError, match="layout"):
        add([b, d], pub)
    with pytest.raises(HeError, match="nothing to add"):
        add([], pub)


def test_encrypt_refuses_values_outside_the_layout(pub: PublicContext) -> None:
    with pytest.raises(PackingError, match="outside the layout's range"):
        encrypt(np.array([1 << 24], dtype=np.int64), pub)  # |x| = 1.0 is not < 1
    with pytest.raises(HeError, match="int64"):
        encrypt(np.zeros(3, dtype=np.float32), pub)  # type: ignore[arg-type]
    with pytest.raises(HeMismatchError, match="slots"):
        encrypt(np.zeros(3, dtype=np.int64), pub, Layout(24, 1, 40, 1))


def test_header_describes_the_submission(pub: PublicContext) -> None:
    blob = encrypt(np.arange(17_001, dtype=np.int64), pub, EXACT, 37)
    h = inspect(blob)
    assert (h.count, h.weight, h.summands, h.chunks) == (17_001, 37, 1, 3)
    assert h.key_id == pub.key_id and h.params_id == pub.params.fingerprint
    # 16 bytes per value: one 60-bit prime, two polynomials of N coefficients, N values.
    assert 3 * pub.params.ciphertext_bytes < len(blob) < 3 * (pub.params.ciphertext_bytes + 1024)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["n4096", "n8192"])
def test_noise_budget_holds_at_the_largest_sum(name: str) -> None:
    """The largest allowed sum (1024 or 4096 summands) still decrypts exactly, inside the bound."""
    params = PARAMS[name]
    key = SecretContext.generate(params)
    public = key.public()
    layout = Layout(24, 1, 36, params.max_summands)
    rng = np.random.default_rng(8)
    bound = layout.value_bound
    total = np.zeros(params.capacity, dtype=np.int64)
    blobs = []
    for _ in range(params.max_summands):
        v = rng.integers(-bound, bound + 1, params.capacity, dtype=np.int64)
        total += v
        blobs.append(encrypt(v, public, layout))
    got = decrypt(add(blobs, public), key)
    assert np.array_equal(got.values, total)
    assert got.max_residual <= params.error_bound(params.max_summands)


def _raw_submission(pub: PublicContext, slots: list[float], layout: Layout, count: int) -> bytes:
    """A ciphertext built around the encoder's range checks, as a malicious trainer could."""
    return he_mod._encrypt_slots(np.array(slots), pub, layout, count, 1)


def test_audit_finds_an_out_of_range_submission_that_corrupts_the_sum(
    sk: SecretContext, pub: PublicContext
) -> None:
    layout = LAYOUTS["packed2"]  # lanes of 18 bits
    honest = encrypt(np.array([5 << 13, 7 << 13], dtype=np.int64), pub, layout)
    # Lane 0 carries 2^17 + 3: beyond the lane, so it carries into lane 1 of the sum.
    evil = _raw_submission(pub, [float((1 << 17) + 3)], layout, 2)
    total = decrypt(add([honest, evil], pub), sk)  # decrypts "fine": integers in range
    assert not np.array_equal(total.values, np.array([5 << 13, 7 << 13]))
    assert audit(honest, sk).values.tolist() == [5 << 13, 7 << 13]
    with pytest.raises(PackingError, match="beyond its layout's range"):
        audit(evil, sk)
    with pytest.raises(HeError, match="single submission"):
        audit(add([honest, honest], pub), sk)
