"""Dataset loaders: embedded sklearn digits, MNIST IDX files, CIFAR-10 python batches.

Every loader turns a missing, truncated or corrupt file into a :class:`DatasetError`
with the file name and what was wrong; nothing else escapes.
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import zlib
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from fl.data.dataset import Dataset, DatasetError

__all__ = ["load_cifar10", "load_digits", "load_mnist", "read_idx"]

# An MNIST/CIFAR file is at most ~180 MB raw; refuse anything far bigger before reading it.
_MAX_FILE_BYTES = 512 * 1024 * 1024


def load_digits() -> Dataset:
    """scikit-learn's 1,797 8x8 handwritten digits, shipped inside the package (no download)."""
    from sklearn.datasets import load_digits as _sk_digits

    bunch = _sk_digits()
    x = (np.asarray(bunch.data, dtype=np.float32) / np.float32(16.0)).reshape(-1, 1, 8, 8)
    y = np.asarray(bunch.target, dtype=np.int64)
    return Dataset("digits", np.ascontiguousarray(x), y, 10)


# ------------------------------------------------------------------ MNIST (IDX)

_IDX_DTYPES: dict[int, np.dtype[Any]] = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
               0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}  # fmt: skip


def _read_maybe_gzip(path: Path) -> bytes:
    try:
        size = path.stat().st_size
        if size > _MAX_FILE_BYTES:
            raise DatasetError(f"{path.name}: {size} bytes is larger than any dataset file")
        raw = path.read_bytes()
    except OSError as e:
        raise DatasetError(f"{path}: cannot read: {e.strerror or e}") from e
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as f:
            data = f.read(_MAX_FILE_BYTES + 1)
    except (OSError, EOFError, zlib.error) as e:
        raise DatasetError(f"{path.name}: corrupt or truncated gzip data ({e})") from e
    if len(data) > _MAX_FILE_BYTES:
        raise DatasetError(f"{path.name}: decompresses to more than {_MAX_FILE_BYTES} bytes")
    return data


def read_idx(path: Path) -> npt.NDArray[Any]:
    """Parse one IDX file (optionally gzip-compressed) into a numpy array."""
    data = _read_maybe_gzip(path)
    if len(data) < 4:
        raise DatasetError(f"{path.name}: too short for an IDX header")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code not in _IDX_DTYPES or ndim == 0:
        raise DatasetError(f"{path.name}: bad IDX magic {data[:4].hex()}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"{path.name}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = _IDX_DTYPES[dtype_code]
    expected = int(np.prod(dims, dtype=object)) * dtype.itemsize
    body = len(data) - header
    if body != expected:
        raise DatasetError(
            f"{path.name}: IDX header promises {expected} data bytes for shape {dims}, "
            f"file has {body} ({'truncated' if body < expected else 'trailing bytes'})"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)


_MNIST_PARTS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _find(directory: Path, stem: str) -> Path | None:
    for name in (
        stem,
        stem + ".gz",
        stem.replace("-idx", ".idx"),
        stem.replace("-idx", ".idx") + ".gz",
    ):
        p = directory / name
        if p.is_file():
            return p
    return None


def _load_mnist_part(directory: Path, part: str) -> tuple[np.ndarray, np.ndarray] | None:
    img_stem, lbl_stem = _MNIST_PARTS[part]
    img_path, lbl_path = _find(directory, img_stem), _find(directory, lbl_stem)
    if img_path is None and lbl_path is None:
        return None
    if img_path is None or lbl_path is None:
        missing = img_stem if img_path is None else lbl_stem
        raise DatasetError(f"{directory}: MNIST {part} part is missing {missing}[.gz]")
    images, labels = read_idx(img_path), read_idx(lbl_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DatasetError(
            f"{img_path.name}: expected uint8 images of 28x28, got {images.dtype} {images.shape}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DatasetError(f"{lbl_path.name}: expected a uint8 label vector, got {labels.shape}")
    if images.shape[0] != labels.shape[0]:
        raise DatasetError(
            f"{directory}: {images.shape[0]} MNIST {part} images but {labels.shape[0]} labels"
        )
    if labels.size and int(labels.max()) > 9:
        raise DatasetError(f"{lbl_path.name}: label {int(labels.max())} is not a digit")
    return images, labels


def load_mnist(directory: str | Path, part: Literal["train", "test", "all"] = "all") -> Dataset:
    """MNIST from the IDX files in ``directory`` (``.gz`` or raw).

    ``part="all"`` concatenates whichever of the train and t10k parts are present
    (train first); at least one must be.
    """
    d = Path(directory)
    if not d.is_dir():
        raise DatasetError(f"{d}: not a directory")
    parts = ["train", "test"] if part == "all" else [part]
    xs, ys = [], []
    for p in parts:
        got = _load_mnist_part(d, p)
        if got is not None:
            xs.append(got[0])
            ys.append(got[1])
    if not xs:
        wanted = " or ".join(_MNIST_PARTS[p][0] for p in parts)
        raise DatasetError(f"{d}: no MNIST files found (looked for {wanted}[.gz])")
    images = np.concatenate(xs)
    x = (images.astype(np.float32) / np.float32(255.0)).reshape(-1, 1, 28, 28)
    y = np.concatenate(ys).astype(np.int64)
    return Dataset("mnist", np.ascontiguousarray(x), y, 10)


# ------------------------------------------------------------- CIFAR-10 (pickle)

# The only globals a CIFAR-10 python batch needs: numpy's array reconstruction (and,
# for protocol-2 pickles written by Python 3, str -> bytes encoding of the raw buffer).
_ALLOWED_GLOBALS = {
    ("_codecs", "encode"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Refuses every global except numpy array reconstruction, so no code can run."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise DatasetError(f"forbidden pickle global {module}.{name}")
        return super().find_class(module, name)


def _unpickle_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DatasetError(f"{path}: cannot read: {e.strerror or e}") from e
    try:
        obj = _RestrictedUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except DatasetError as e:
        raise DatasetError(f"{path.name}: {e}") from e
    except Exception as e:  # pickle raises many unrelated types on garbage input
        raise DatasetError(
            f"{path.name}: corrupt or truncated pickle ({type(e).__name__}: {e})"
        ) from e
    if not isinstance(obj, dict):
        raise DatasetError(f"{path.name}: expected a dict batch, got {type(obj).__name__}")
    data = obj.get(b"data", obj.get("data"))
    labels = obj.get(b"labels", obj.get("labels"))
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != 3072
    ):
        raise DatasetError(f"{path.name}: 'data' must be a uint8 array of shape (n, 3072)")
    if not isinstance(labels, list) or not all(type(v) is int and 0 <= v <= 9 for v in labels):
        raise DatasetError(f"{path.name}: 'labels' must be a list of ints in 0..9")
    if len(labels) != data.shape[0]:
        raise DatasetError(f"{path.name}: {data.shape[0]} images but {len(labels)} labels")
    return data, np.asarray(labels, dtype=np.int64)


def load_cifar10(directory: str | Path, part: Literal["train", "test", "all"] = "all") -> Dataset:
    """CIFAR-10 from its python batches (``data_batch_1..5``, ``test_batch``).

    ``directory`` may be the ``cifar-10-batches-py`` folder or its parent. The
    batches are pickles: they are read with an unpickler that allows numpy array
    reconstruction and nothing else, so a crafted file cannot execute code.
    """
    d = Path(directory)
    if (d / "cifar-10-batches-py").is_dir():
        d = d / "cifar-10-batches-py"
    if not d.is_dir():
        raise DatasetError(f"{d}: not a directory")
    names = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
    wanted = names["train"] + names["test"] if part == "all" else names[part]
    paths = [d / n for n in wanted if (d / n).is_file()]
    if not paths:
        raise DatasetError(f"{d}: no CIFAR-10 batches found (looked for {', '.join(wanted)})")
    xs, ys = zip(*(_unpickle_batch(p) for p in paths), strict=True)
    x = (np.concatenate(xs).astype(np.float32) / np.float32(255.0)).reshape(-1, 3, 32, 32)
    return Dataset("cifar10", np.ascontiguousarray(x), np.concatenate(ys), 10)
