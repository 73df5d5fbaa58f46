"""SEAL objects to and from bytes, and integers in complex CKKS slots, through TenSEAL's SEAL binding.

Two gaps in TenSEAL 0.3 this module closes (ADR 0555):

* ``tenseal.CKKSVector`` encodes real vectors only, so half of every ciphertext (the
  imaginary parts of its N/2 slots) carries nothing. ``tenseal.sealapi.CKKSEncoder`` encodes
  complex vectors: :func:`encode_pairs` puts value ``2j`` in the real and ``2j+1`` in the
  imaginary part of slot ``j``, so one ciphertext carries N values, not N/2.
* The binding saves and loads ciphertexts only through a file path. :class:`SealFile` is an
  anonymous in-memory file (``memfd_create``; a private temporary file where that does not
  exist) that the bytes pass through; nothing reaches a disk on Linux, and only public data
  (finished ciphertexts, never an encryption of zero) is written to it.
"""

from __future__ import annotations

import os
import struct
import tempfile
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt

from fl.privacy.errors import HeFormatError

__all__ = ["SEAL_HEADER", "SealFile", "check_seal_header", "decode_pairs", "encode_pairs"]

# SEAL's serialization header: magic 0xA15E, header size 16, version major/minor,
# compression mode, reserved, total size in bytes (header included); little-endian.
SEAL_HEADER = struct.Struct("<HBBBBHQ")
SEAL_MAGIC = 0xA15E
SEAL_COMPR_MODES = (0, 1, 2)  # none, zlib, zstd


def check_seal_header(data: bytes, index: int) -> None:
    """Refuse bytes that are not exactly one SEAL object before SEAL parses them."""
    if len(data) < SEAL_HEADER.size:
        raise HeFormatError(f"ciphertext {index} is shorter than SEAL's header")
    magic, hsize, major, _minor, compr, _reserved, size = SEAL_HEADER.unpack_from(data, 0)
    if magic != SEAL_MAGIC or hsize != SEAL_HEADER.size:
        raise HeFormatError(f"ciphertext {index} does not start with SEAL's header")
    if major not in (3, 4) or compr not in SEAL_COMPR_MODES:
        raise HeFormatError(f"ciphertext {index}: SEAL version {major} or compression {compr}")
    if size != len(data):
        raise HeFormatError(f"ciphertext {index} claims {size} bytes but has {len(data)}")


def encode_pairs(encoder: Any, values: npt.NDArray[np.float64], parms_id: Any, scale: float,
                 plain: Any) -> None:
    """Encode up to N real values into ``plain``: two per slot (real, imaginary)."""
    v = np.ascontiguousarray(values, dtype=np.float64)
    if v.size % 2:
        v = np.append(v, 0.0)
    encoder.encode(v.view(np.complex128).tolist(), parms_id, scale, plain)


def decode_pairs(encoder: Any, plain: Any, count: int) -> npt.NDArray[np.float64]:
    """The first ``count`` real values of a decrypted plaintext, in :func:`encode_pairs` order."""
    z = np.asarray(encoder.decode_complex(plain), dtype=np.complex128)
    return z.view(np.float64)[:count].copy()


class SealFile:
    """An anonymous in-memory file for SEAL's path-only save and load (one per call, one thread)."""

    def __init__(self) -> None:
        self._fd = -1
        self._path = ""
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> SealFile:
        try:
            self._fd = os.memfd_create("fedledger-he", os.MFD_CLOEXEC)
            self._path = f"/proc/self/fd/{self._fd}"
        except (AttributeError, OSError):  # not Linux: a private temporary file
            self._tmp = tempfile.TemporaryDirectory(prefix="fedledger-he-")
            self._path = os.path.join(self._tmp.name, "object")
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        os.close(self._fd)
        if self._tmp is not None:
            self._tmp.cleanup()

    def dump(self, obj: Any) -> bytes:
        """SEAL's serialization of ``obj`` (a ciphertext) as bytes."""
        obj.save(self._path)  # SEAL opens the path for writing and truncates it
        size = os.fstat(self._fd).st_size
        parts = []
        pos = 0
        while pos < size:
            part = os.pread(self._fd, size - pos, pos)
            if not part:
                break
            parts.append(part)
            pos += len(part)
        return b"".join(parts)

    def load(self, obj: Any, context: Any, data: bytes) -> Any:
        """Load ``data`` into the SEAL object ``obj`` under ``context`` (SEAL validates it)."""
        os.ftruncate(self._fd, 0)
        view = memoryview(data)
        pos = 0
        while pos < len(view):
            pos += os.pwrite(self._fd, view[pos:], pos)
        obj.load(context, self._path)
        return obj
