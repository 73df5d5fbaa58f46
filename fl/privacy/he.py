"""CKKS encryption of updates with TenSEAL: key holders, public contexts, encrypt / add / decrypt.

Roles (docs/privacy.md): the task's **key holders** create a :class:`SecretContext` and
publish its public part; **trainers** encrypt their (weighted, quantized) update with the
:class:`PublicContext`; **validators** add ciphertexts with the public context only; key
holders decrypt the *sum* and round it back to exact integers.

Exactness: CKKS is approximate, so every slot carries an exact integer (see
:mod:`fl.privacy.packing`) and decryption rounds. Per slot the decryption error of one
fresh encryption is close to Gaussian with a key-dependent standard deviation; measured
over keys it averages ``0.146 N 2^-scale_bits`` and is at most 4.2x that in the worst slot.
We budget ``sigma = NOISE_PER_N N 2^-scale_bits`` (0.15), a worst slot of 5 sigma, and
errors adding up as ``sqrt(n)`` over n summands, and allow at most ``max_summands`` so that
the worst slot's error stays 10 standard deviations below 0.5 (:meth:`HeParams.error_bound`).
Decryption refuses (:class:`HeDecryptError`) when any slot is further than
``RESIDUAL_LIMIT`` from an integer, which also catches a wrong key or corrupted ciphertext.

Ciphertext bytes (content-store objects)::

    b"FLHE" | u8 version (2) | u32be header length | header | chunks x (u32be length | bytes)

The header is the canonical msgpack of :class:`CiphertextHeader`; each chunk is one SEAL
ciphertext serialization (SEAL's own header and compressed body) holding up to N slot
integers: **two per CKKS slot**, the real and the imaginary part (:mod:`fl.privacy.sealio`).
TenSEAL's ``CKKSVector`` encodes real vectors only, which leaves half of every ciphertext
unused; its SEAL binding (``tenseal.sealapi``) encodes complex vectors, so this module uses
TenSEAL for the contexts and keys and the binding for the ciphertexts (ADR 0555).
Parsing checks lengths, counts, limits and SEAL's header before SEAL sees a byte, and every
TenSEAL or SEAL exception becomes an :class:`HeError`.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, cached_property
from typing import Any

import numpy as np
import numpy.typing as npt

from fl.aggregate.rules import div_round
from fl.privacy.errors import (
    HeDecryptError,
    HeError,
    HeFormatError,
    HeKeyError,
    HeMismatchError,
)
from fl.privacy.packing import EXACT, Layout, PackingError, from_grid, pack, to_grid, unpack
from fl.privacy.sealio import SealFile, check_seal_header, decode_pairs, encode_pairs
from ledger.codec import CodecError, decode_record, encode, record

__all__ = [
    "DEFAULT_PARAMS",
    "PARAMS",
    "CiphertextHeader",
    "DecryptedSum",
    "HeParams",
    "PublicContext",
    "SecretContext",
    "ZeroPool",
    "add",
    "audit",
    "decrypt",
    "encrypt",
    "fedavg_delta",
    "inspect",
]

IntVec = npt.NDArray[np.int64]

MAGIC = b"FLHE"
VERSION = 2  # 1: TenSEAL CKKSVector chunks, one value per slot (before ADR 0555)
_PREFIX = struct.Struct(">4sBI")
_LEN = struct.Struct(">I")
MAX_HEADER_BYTES = 4096
MAX_CHUNK_OVERHEAD = 4096  # SEAL header and compression framing around 2 x N x 8 coefficient bytes
MAX_VALUES = 1 << 28
MAX_CONTEXT_BYTES = 16 << 20
NOISE_PER_N = 0.15  # measured per-slot noise std of one encryption is 0.146 N 2^-scale_bits
WORST_SLOT = 5.0  # worst slot's std over the mean (measured at most 4.2 over keys)
MARGIN_SIGMAS = 10.0
RESIDUAL_LIMIT = 0.3
_KEY_DOMAIN = b"fedledger/he/key/v1"


@record(551)
@dataclass(frozen=True)
class HeParams:
    """CKKS parameters: ring degree N, coefficient modulus [data prime, special prime], scale.

    One data prime keeps every ciphertext at 2 x N x 8 bytes (32 bytes per slot); the special
    prime only serves key generation (no multiplications happen, so no relinearization).
    """

    poly_modulus_degree: int
    coeff_mod_bit_sizes: tuple[int, ...]
    scale_bits: int

    def __post_init__(self) -> None:
        n = self.poly_modulus_degree
        if n not in (4096, 8192, 16384, 32768):
            raise HeError(f"poly_modulus_degree must be 4096..32768 (power of two), got {n}")
        bits = list(self.coeff_mod_bit_sizes)
        if len(bits) != 2 or not all(type(b) is int and 20 <= b <= 60 for b in bits):
            raise HeError(
                "coeff_mod_bit_sizes must be [data prime bits, special prime bits], 20..60"
            )
        if not 16 <= self.scale_bits <= bits[0] - 20:
            raise HeError(f"scale_bits {self.scale_bits} leaves no room in a {bits[0]}-bit prime")

    @property
    def slots(self) -> int:
        """CKKS slots per ciphertext (complex numbers)."""
        return self.poly_modulus_degree // 2

    @property
    def capacity(self) -> int:
        """Slot integers per ciphertext: two per CKKS slot, its real and imaginary part."""
        return self.poly_modulus_degree

    @property
    def slot_bits(self) -> int:
        """Signed slot integers up to 2^(slot_bits-1) keep |V| 2^scale below q/4."""
        return self.coeff_mod_bit_sizes[0] - self.scale_bits - 2

    @property
    def noise_std(self) -> float:
        """Budgeted per-slot decryption error std of one fresh encryption (mean over slots)."""
        return NOISE_PER_N * self.poly_modulus_degree / float(1 << self.scale_bits)

    def error_bound(self, summands: int) -> float:
        """Error budget of a sum of ``summands`` encryptions: 10 sigma of the worst slot."""
        return MARGIN_SIGMAS * WORST_SLOT * self.noise_std * float(np.sqrt(summands))

    @property
    def max_summands(self) -> int:
        """The largest power of two n with error_bound(n) <= 0.5."""
        n = 1
        while self.error_bound(2 * n) <= 0.5:
            n *= 2
        return n

    @property
    def ciphertext_bytes(self) -> int:
        return 2 * self.poly_modulus_degree * 8

    @cached_property
    def fingerprint(self) -> bytes:
        return hashlib.sha256(encode(self)).digest()

    @property
    def security_bits(self) -> int:
        """Classical security level of the HE standard (ternary secret) that these bounds meet."""
        return _security_bits(self.poly_modulus_degree, sum(self.coeff_mod_bit_sizes))

    def describe(self) -> str:
        return (
            f"N={self.poly_modulus_degree}, q={'+'.join(map(str, self.coeff_mod_bit_sizes))} bits, "
            f"scale 2^{self.scale_bits}, {self.capacity} integers of {self.slot_bits} bits "
            f"({self.slots} complex slots), "
            f"{self.security_bits}-bit security, up to {self.max_summands} summands"
        )


PARAMS = {
    "n4096": HeParams(4096, (60, 40), 22),
    "n8192": HeParams(8192, (60, 60), 22),
    "n16384": HeParams(16384, (60, 60), 22),
}
DEFAULT_PARAMS = PARAMS["n8192"]


@cache
def _security_bits(n: int, total_bits: int) -> int:
    import tenseal.sealapi as sealapi

    levels = (
        (256, sealapi.SEC_LEVEL_TYPE.TC256),
        (192, sealapi.SEC_LEVEL_TYPE.TC192),
        (128, sealapi.SEC_LEVEL_TYPE.TC128),
    )
    for bits, level in levels:
        if total_bits <= sealapi.CoeffModulus.MaxBitCount(n, level):
            return bits
    return 0


@cache
def _parms_id(params: HeParams) -> tuple[int, ...]:
    """SEAL's parms_id of the data level: a hash over N, the primes and the scheme."""
    import tenseal.sealapi as sealapi

    p = sealapi.EncryptionParameters(sealapi.SCHEME_TYPE.CKKS)
    p.set_poly_modulus_degree(params.poly_modulus_degree)
    p.set_coeff_modulus(
        sealapi.CoeffModulus.Create(params.poly_modulus_degree, list(params.coeff_mod_bit_sizes))
    )
    ctx = sealapi.SEALContext(p, True, sealapi.SEC_LEVEL_TYPE.TC128)
    if not ctx.parameters_set():
        raise HeError(f"SEAL rejects {params.describe()}: {ctx.parameters_error_message()}")
    return tuple(ctx.first_parms_id())


@record(553)
@dataclass(frozen=True)
class CiphertextHeader:
    """Public metadata of an encrypted vector (a submission or a sum of submissions)."""

    params_id: bytes  # HeParams.fingerprint
    key_id: bytes  # PublicContext.key_id
    layout: Layout
    count: int  # plaintext values
    weight: int  # total aggregation weight folded in (sum of sample counts, or of 1s)
    summands: int  # encryptions added together
    chunks: int  # ciphertexts that follow

    def __post_init__(self) -> None:
        if len(self.params_id) != 32 or len(self.key_id) != 32:
            raise HeFormatError("params_id and key_id are 32-byte hashes")
        if not 1 <= self.count <= MAX_VALUES:
            raise HeFormatError(f"count {self.count} outside 1..{MAX_VALUES}")
        if not 1 <= self.summands <= self.weight <= self.layout.max_weight * self.summands:
            raise HeFormatError("weight and summands are inconsistent")
        if self.chunks < 1:
            raise HeFormatError("no ciphertexts")


# ------------------------------------------------------------------ contexts


class PublicContext:
    """Parameters and the public encryption key, no secret key: what trainers and validators hold."""

    def __init__(self, ctx: Any, params: HeParams, public_bytes: bytes) -> None:
        self._ctx = ctx
        self.params = params
        self._public = public_bytes
        self.key_id = hashlib.sha256(_KEY_DOMAIN + public_bytes).digest()

    @property
    def holds_secret_key(self) -> bool:
        return bool(self._ctx.has_secret_key())

    @cached_property
    def _seal(self) -> _Seal:
        return _Seal(self._ctx, self.params)

    def to_bytes(self) -> bytes:
        """The public context (no secret key, no relinearization or Galois keys)."""
        return self._public

    @classmethod
    def from_bytes(
        cls, data: bytes, params: HeParams | None = None, max_size: int = MAX_CONTEXT_BYTES
    ) -> PublicContext:
        """Load a public context; its parameters must be ``params`` (or one of :data:`PARAMS`)."""
        ctx = _load_context(data, max_size)
        if ctx.has_secret_key():
            raise HeKeyError(
                "these context bytes contain a secret key; publish only the public part"
            )
        return cls(ctx, _identify(ctx, params), bytes(data))


class SecretContext(PublicContext):
    """A key holder's context: can also decrypt. Never leaves the key holder's node."""

    @classmethod
    def generate(cls, params: HeParams = DEFAULT_PARAMS) -> SecretContext:
        import tenseal as ts

        _parms_id(params)  # SEAL's own check of the parameters (and the 128-bit bound)
        try:
            ctx = ts.context(
                ts.SCHEME_TYPE.CKKS,
                params.poly_modulus_degree,
                coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes),
                n_threads=1,
            )
        except (ValueError, RuntimeError) as e:
            raise HeError(f"cannot create a CKKS context for {params.describe()}: {e}") from e
        ctx.global_scale = float(1 << params.scale_bits)
        return cls(ctx, params, _public_bytes(ctx))

    def public(self) -> PublicContext:
        return PublicContext.from_bytes(self._public, self.params)

    @cached_property
    def _decryptor(self) -> Any:
        import tenseal.sealapi as sealapi

        return sealapi.Decryptor(self._seal.context, self._ctx.secret_key().data)

    def secret_bytes(self) -> bytes:
        """Serialization including the secret key, for the key holder's own storage only."""
        return bytes(self._ctx.serialize(save_secret_key=True, save_galois_keys=False))

    @classmethod
    def from_secret_bytes(
        cls, data: bytes, params: HeParams | None = None, max_size: int = MAX_CONTEXT_BYTES
    ) -> SecretContext:
        ctx = _load_context(data, max_size)
        if not ctx.has_secret_key():
            raise HeKeyError("these context bytes hold no secret key (a public context)")
        return cls(ctx, _identify(ctx, params), _public_bytes(ctx))


class _Seal:
    """A context's SEAL objects: encoder, evaluator, public-key encryptor, data level and scale."""

    def __init__(self, ctx: Any, params: HeParams) -> None:
        import tenseal.sealapi as sealapi

        self.context = ctx.seal_context().data
        self.encoder = sealapi.CKKSEncoder(self.context)
        self.evaluator = sealapi.Evaluator(self.context)
        self.encryptor = sealapi.Encryptor(self.context, ctx.public_key().data)
        self.parms_id = list(_parms_id(params))
        self.scale = float(1 << params.scale_bits)
        self.zero = sealapi.Plaintext()
        self.encoder.encode([0j], self.parms_id, self.scale, self.zero)

    def encrypt_zero(self) -> Any:
        """A fresh public-key encryption of zero at the data level and scale."""
        import tenseal.sealapi as sealapi

        ct = sealapi.Ciphertext()
        self.encryptor.encrypt(self.zero, ct)
        return ct


def _public_bytes(ctx: Any) -> bytes:
    return bytes(
        ctx.serialize(
            save_public_key=True,
            save_secret_key=False,
            save_galois_keys=False,
            save_relin_keys=False,
        )
    )


def _load_context(data: bytes, max_size: int) -> Any:
    import tenseal as ts

    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise HeFormatError(f"expected context bytes, got {type(data).__name__}")
    if not 0 < len(data) <= max_size:
        raise HeFormatError(f"context of {len(data)} bytes (limit {max_size})")
    try:
        ctx = ts.context_from(bytes(data), n_threads=1)
    except Exception as e:  # protobuf and SEAL raise ValueError, RuntimeError, TypeError
        raise HeFormatError(f"not a TenSEAL context: {e}") from e
    if not ctx.has_public_key():
        raise HeFormatError("the context holds no public key")
    return ctx


def _identify(ctx: Any, params: HeParams | None) -> HeParams:
    try:
        got = tuple(ctx.seal_context().data.first_parms_id())
    except Exception as e:
        raise HeFormatError(f"not a CKKS context: {e}") from e
    candidates = [params] if params is not None else list(PARAMS.values())
    for p in candidates:
        if _parms_id(p) == got:
            if ctx.global_scale != float(1 << p.scale_bits):
                raise HeMismatchError(
                    f"context scale {ctx.global_scale!r} is not 2^{p.scale_bits} of {p.describe()}"
                )
            return p
    want = params.describe() if params is not None else "any of " + ", ".join(PARAMS)
    raise HeMismatchError(f"context parameters are not {want}")


# ------------------------------------------------------------------ the byte format


@dataclass(frozen=True)
class _Parsed:
    header: CiphertextHeader
    chunks: list[bytes]


def _frame(header: CiphertextHeader, chunks: Sequence[bytes]) -> bytes:
    head = encode(header)
    parts = [_PREFIX.pack(MAGIC, VERSION, len(head)), head]
    for c in chunks:
        parts += [_LEN.pack(len(c)), c]
    return b"".join(parts)


def _parse(data: bytes) -> _Parsed:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise HeFormatError(f"expected ciphertext bytes, got {type(data).__name__}")
    view = memoryview(data)
    if len(view) < _PREFIX.size:
        raise HeFormatError(f"truncated: {len(view)} bytes is shorter than the prefix")
    magic, version, hlen = _PREFIX.unpack_from(view, 0)
    if magic != MAGIC:
        raise HeFormatError("not an encrypted update (bad magic)")
    if version != VERSION:
        raise HeFormatError(f"unsupported format version {version}")
    if hlen > MAX_HEADER_BYTES or _PREFIX.size + hlen > len(view):
        raise HeFormatError("truncated or oversize header")
    try:
        header = decode_record(bytes(view[_PREFIX.size : _PREFIX.size + hlen]), CiphertextHeader)
    except CodecError as e:
        raise HeFormatError(f"bad header: {e}") from e
    pos = _PREFIX.size + hlen
    chunks: list[bytes] = []
    limit = 2 * 32768 * 8 + MAX_CHUNK_OVERHEAD
    for i in range(header.chunks):
        if pos + _LEN.size > len(view):
            raise HeFormatError(f"truncated: ciphertext {i} of {header.chunks} is missing")
        (n,) = _LEN.unpack_from(view, pos)
        pos += _LEN.size
        if not 0 < n <= limit:
            raise HeFormatError(f"ciphertext {i} claims {n} bytes")
        if pos + n > len(view):
            raise HeFormatError(f"truncated: ciphertext {i} has {len(view) - pos} of {n} bytes")
        chunks.append(bytes(view[pos : pos + n]))
        pos += n
    if pos != len(view):
        raise HeFormatError(f"{len(view) - pos} trailing bytes after the last ciphertext")
    return _Parsed(header, chunks)


def inspect(data: bytes) -> CiphertextHeader:
    """The header of encrypted bytes after checking the framing (no context needed)."""
    return _parse(data).header


def _check_against(parsed: _Parsed, ctx: PublicContext) -> None:
    h = parsed.header
    if h.params_id != ctx.params.fingerprint:
        raise HeMismatchError("ciphertext was made for other HE parameters than this context")
    if h.key_id != ctx.key_id:
        raise HeMismatchError(
            "ciphertext was encrypted under another public key than this context's"
        )
    _check_layout(h.layout, ctx.params)
    want = -(-h.layout.slots_for(h.count) // ctx.params.capacity)
    if h.chunks != want:
        raise HeFormatError(f"{h.chunks} ciphertexts for {h.count} values, expected {want}")
    limit = ctx.params.ciphertext_bytes + MAX_CHUNK_OVERHEAD
    for i, c in enumerate(parsed.chunks):
        if len(c) > limit:
            raise HeFormatError(f"ciphertext {i} has {len(c)} bytes, more than {limit}")
    if h.summands > ctx.params.max_summands:
        raise HeMismatchError(
            f"{h.summands} summands exceed the noise budget of {ctx.params.max_summands}"
        )


def _check_layout(layout: Layout, params: HeParams) -> None:
    if layout.slot_bits > params.slot_bits:
        raise HeMismatchError(
            f"layout needs {layout.slot_bits}-bit slots, parameters give {params.slot_bits}"
        )


def _chunk_sizes(layout: Layout, count: int, capacity: int) -> list[int]:
    total = layout.slots_for(count)
    return [min(capacity, total - s) for s in range(0, total, capacity)]


def _load_ciphertext(f: SealFile, data: bytes, ctx: PublicContext, index: int) -> Any:
    import tenseal.sealapi as sealapi

    check_seal_header(data, index)
    seal = ctx._seal
    try:
        ct = f.load(sealapi.Ciphertext(), seal.context, data)
    except Exception as e:  # SEAL's validation (ValueError, RuntimeError)
        raise HeFormatError(f"ciphertext {index} is not valid for this context: {e}") from e
    if (
        ct.size() != 2
        or list(ct.parms_id()) != seal.parms_id
        or ct.scale != seal.scale
        or not ct.is_ntt_form()
    ):
        raise HeMismatchError(
            f"ciphertext {index} is not a fresh-level, 2-polynomial ciphertext at scale "
            f"2^{ctx.params.scale_bits} for these parameters"
        )
    return ct


# ------------------------------------------------------------------ operations


class ZeroPool:
    """Encryptions of zero made ahead of time, for offline/online encryption of updates.

    A CKKS public-key encryption of ``m`` is an encryption of zero (the part that costs:
    fresh randomness ``u, e0, e1`` and products with the public key) plus the encoding of
    ``m``. A trainer that makes the encryptions of zero while it waits (for the round to
    open, for its training, for the others) encrypts its update at submission time by
    encoding and one addition per ciphertext (ADR 0554). The result is distributed exactly
    as a fresh encryption (same noise, same bytes per ciphertext) as long as each encryption
    of zero is used **once**: two updates masked by the same one differ by ``m1 - m2`` in
    the clear. :meth:`take` therefore hands each set out once and forgets it; nothing is
    ever written to disk.

    One set covers one update of ``count`` values under ``layout`` (one encryption of zero
    per ciphertext chunk, of the chunk's size).
    """

    def __init__(self, ctx: PublicContext, count: int, layout: Layout = EXACT) -> None:
        _check_layout(layout, ctx.params)
        if not 1 <= count <= MAX_VALUES:
            raise HeError(f"cannot encrypt {count} values (1..{MAX_VALUES})")
        self.ctx = ctx
        self.layout = layout
        self.sizes = _chunk_sizes(layout, count, ctx.params.capacity)
        self._sets: list[list[Any]] = []

    def __len__(self) -> int:
        return len(self._sets)

    def fill(self, sets: int = 1) -> None:
        """Make ``sets`` more sets of encryptions of zero (the offline part)."""
        seal = self.ctx._seal
        for _ in range(sets):
            try:
                self._sets.append([seal.encrypt_zero() for _ in self.sizes])
            except Exception as e:  # pragma: no cover - SEAL rejects only impossible inputs
                raise HeError(f"SEAL could not encrypt: {e}") from e

    def take(self) -> list[Any] | None:
        """One set, never handed out again (None when the pool is empty)."""
        return self._sets.pop() if self._sets else None


def encrypt(values: IntVec, ctx: PublicContext, layout: Layout = EXACT, weight: int = 1,
            zeros: ZeroPool | None = None) -> bytes:
    """Encrypt ``weight * values`` (int64, 2^-24 fixed point) under the public key.

    ``weight`` is the update's aggregation weight (its sample count for weighted FedAvg,
    1 under DP); the sum then holds ``sum(w_i u_i)`` and FedAvg divides by the total
    weight. Values outside the layout's range raise :class:`PackingError` (an HeError).
    ``zeros``: a :class:`ZeroPool` for this context, size and layout; one of its sets is
    used (and gone) if it has any, otherwise the encryption is done from scratch.
    """
    if not isinstance(values, np.ndarray) or values.dtype != np.int64 or values.ndim != 1:
        raise HeError("encrypt takes a 1-D int64 vector (fixed-point update)")
    if not 1 <= values.size <= MAX_VALUES:
        raise HeError(f"cannot encrypt {values.size} values (1..{MAX_VALUES})")
    _check_layout(layout, ctx.params)
    masks = None
    if zeros is not None:
        if zeros.ctx.key_id != ctx.key_id or zeros.layout != layout \
                or zeros.sizes != _chunk_sizes(layout, int(values.size), ctx.params.capacity):
            raise HeError("the zero pool was made for another key, layout or model size")
        masks = zeros.take()
    slots = pack(to_grid(values, layout), weight, layout)
    return _encrypt_slots(slots, ctx, layout, int(values.size), weight, masks)


def _encrypt_slots(slots: npt.NDArray[np.float64], ctx: PublicContext, layout: Layout,
                   count: int, weight: int, masks: list[Any] | None = None) -> bytes:
    """Encrypt packed slot integers as they are (no range checks: :func:`encrypt` made them)."""
    import tenseal.sealapi as sealapi

    seal = ctx._seal
    n = ctx.params.capacity
    chunks = []
    plain = sealapi.Plaintext()
    with SealFile() as f:
        for i, s in enumerate(range(0, slots.size, n)):
            try:
                encode_pairs(seal.encoder, slots[s : s + n], seal.parms_id, seal.scale, plain)
                if masks is not None:  # online half: add the encoding to an encryption of zero
                    ct = masks[i]
                    seal.evaluator.add_plain_inplace(ct, plain)
                else:
                    ct = sealapi.Ciphertext()
                    seal.encryptor.encrypt(plain, ct)
            except Exception as e:  # pragma: no cover - SEAL rejects only impossible inputs
                raise HeError(f"SEAL could not encrypt: {e}") from e
            chunks.append(f.dump(ct))
    header = CiphertextHeader(
        ctx.params.fingerprint, ctx.key_id, layout, count, weight, 1, len(chunks)
    )
    return _frame(header, chunks)


def add(ciphertexts: Sequence[bytes], ctx: PublicContext) -> bytes:
    """The encrypted sum of encrypted updates, computed with the public context only.

    Every input must be for this context's parameters and key, with one layout and one
    length; the total weight must fit the layout's headroom and the number of summands
    the noise budget. Ciphertext addition is exact modular arithmetic, so the result's
    bytes do not depend on the order of the inputs (callers still use the canonical order).
    """
    if not ciphertexts:
        raise HeError("nothing to add")
    parsed = [_parse(c) for c in ciphertexts]
    first = parsed[0].header
    for i, p in enumerate(parsed):
        _check_against(p, ctx)
        h = p.header
        if h.layout != first.layout or h.count != first.count:
            raise HeMismatchError(f"input {i} has another layout or length than input 0")
    weight = sum(p.header.weight for p in parsed)
    summands = sum(p.header.summands for p in parsed)
    if weight > first.layout.max_weight:
        raise HeMismatchError(
            f"total weight {weight} exceeds the layout's headroom ({first.layout.max_weight})"
        )
    if summands > ctx.params.max_summands:
        raise HeMismatchError(
            f"{summands} summands exceed the noise budget of {ctx.params.max_summands}"
        )
    evaluator = ctx._seal.evaluator
    out = []
    with SealFile() as f:
        for k in range(first.chunks):
            acc = _load_ciphertext(f, parsed[0].chunks[k], ctx, k)
            for p in parsed[1:]:
                evaluator.add_inplace(acc, _load_ciphertext(f, p.chunks[k], ctx, k))
            out.append(f.dump(acc))
    header = CiphertextHeader(
        first.params_id, first.key_id, first.layout, first.count, weight, summands, len(out)
    )
    return _frame(header, out)


@dataclass(frozen=True, eq=False)
class DecryptedSum:
    """The exact integer sum ``sum(w_i u_i)`` in 2^-24 units, with its total weight."""

    values: IntVec
    weight: int
    summands: int
    max_residual: float  # largest distance of a decrypted slot from its integer (noise seen)


def decrypt(data: bytes, ctx: SecretContext) -> DecryptedSum:
    """Decrypt an encrypted sum and round it to exact integers (key holders only)."""
    import tenseal.sealapi as sealapi

    if not isinstance(ctx, SecretContext) or not ctx.holds_secret_key:
        raise HeKeyError(
            "decryption needs the task's secret key; this party holds only the public context"
        )
    parsed = _parse(data)
    _check_against(parsed, ctx)
    h = parsed.header
    sizes = _chunk_sizes(h.layout, h.count, ctx.params.capacity)
    raw = np.empty(sum(sizes), dtype=np.float64)
    pos = 0
    plain = sealapi.Plaintext()
    with SealFile() as f:
        for k, size in enumerate(sizes):
            ct = _load_ciphertext(f, parsed.chunks[k], ctx, k)
            try:
                ctx._decryptor.decrypt(ct, plain)
                raw[pos : pos + size] = decode_pairs(ctx._seal.encoder, plain, size)
            except Exception as e:  # pragma: no cover - a loaded ciphertext always decrypts
                raise HeDecryptError(f"decryption of ciphertext {k} failed: {e}") from e
            pos += size
    rounded = np.rint(raw)
    residual = float(np.abs(raw - rounded).max()) if raw.size else 0.0
    if not residual <= RESIDUAL_LIMIT:  # also catches NaN
        raise HeDecryptError(
            f"decrypted slots are up to {residual:.3f} away from integers (limit "
            f"{RESIDUAL_LIMIT}): wrong key, corrupted ciphertext or an overflowed sum"
        )
    limit = float(1 << (h.layout.slot_bits - 1))
    if np.abs(rounded).max() >= limit:
        raise HeDecryptError("a decrypted slot is outside the layout's range (overflowed sum)")
    try:
        grid = unpack(rounded.astype(np.int64), h.layout, h.count)
    except PackingError as e:
        raise HeDecryptError(str(e)) from e
    return DecryptedSum(from_grid(grid, h.layout), h.weight, h.summands, residual)


def audit(data: bytes, ctx: SecretContext) -> DecryptedSum:
    """Decrypt one submission and check it against its layout's range (key holders only).

    Validators cannot see whether a ciphertext respects the layout: a trainer that encrypts
    values beyond ``value_bound`` can shift the sum by more than any honest update (and, with
    several lanes per slot, carry into neighbouring coordinates). Key holders find such a
    submission by auditing the submissions of a round one by one; the out-of-range values
    returned in the error are the evidence.
    """
    got = decrypt(data, ctx)
    h = inspect(data)
    if got.summands != 1:
        raise HeError("audit takes a single submission, not a sum")
    limit = h.weight * h.layout.value_bound << (24 - h.layout.frac_bits)
    worst = max(int(got.values.max()), -int(got.values.min())) if got.values.size else 0
    if worst > limit:
        raise PackingError(
            f"submission encrypts a value {worst / limit:.3g}x beyond its layout's range "
            f"(weight {h.weight}, {h.layout.describe()})"
        )
    return got


def fedavg_delta(total: DecryptedSum) -> IntVec:
    """Sample-weighted FedAvg from the decrypted sum: the same rounding as the plaintext rule."""
    return div_round(total.values, total.weight)
