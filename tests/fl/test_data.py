"""Loaders (real and corrupt files), splits, partitioners and data commitments."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from fl.data import (
    Dataset,
    DatasetError,
    data_commitment,
    dirichlet,
    iid,
    load_cifar10,
    load_dataset,
    load_digits,
    load_mnist,
    sample_hash,
    sample_hashes,
    sample_proof,
    shards,
    split,
    verify_sample,
)

# ------------------------------------------------------------------ helpers


def _idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    header = struct.pack(">HBB", 0, code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(">u1").tobytes()


def _write_mnist(
    d: Path, n: int = 12, gz: bool = True, prefix: str = "t10k"
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    for stem, arr in (
        (f"{prefix}-images-idx3-ubyte", images),
        (f"{prefix}-labels-idx1-ubyte", labels),
    ):
        raw = _idx_bytes(arr)
        if gz:
            (d / (stem + ".gz")).write_bytes(gzip.compress(raw))
        else:
            (d / stem).write_bytes(raw)
    return images, labels


def _write_cifar_batch(
    path: Path, n: int = 5, labels: list[int] | None = None, protocol: int = 2
) -> None:
    data = np.random.default_rng(2).integers(0, 256, size=(n, 3072), dtype=np.uint8)
    batch = {b"batch_label": b"test", b"labels": labels if labels is not None else [i % 10 for i in range(n)],
             b"data": data, b"filenames": [b"x"] * n}  # fmt: skip
    path.write_bytes(pickle.dumps(batch, protocol=protocol))


# ------------------------------------------------------------------ loaders


def test_digits_is_embedded_and_scaled() -> None:
    ds = load_digits()
    assert (len(ds), ds.sample_shape, ds.num_classes) == (1797, (1, 8, 8), 10)
    assert ds.x.dtype == np.float32 and ds.y.dtype == np.int64
    assert 0.0 <= float(ds.x.min()) and float(ds.x.max()) == 1.0


def test_real_mnist_test_set(mnist_dir: Path) -> None:
    ds = load_mnist(mnist_dir)
    assert (len(ds), ds.sample_shape) == (10_000, (1, 28, 28))
    assert ds.label_counts().tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_roundtrip_gz_and_raw(tmp_path: Path, gz: bool) -> None:
    images, labels = _write_mnist(tmp_path, gz=gz)
    ds = load_mnist(tmp_path)
    np.testing.assert_array_equal(ds.y, labels.astype(np.int64))
    np.testing.assert_array_equal((ds.x[:, 0] * 255).round().astype(np.uint8), images)


def test_mnist_all_concatenates_train_then_test(tmp_path: Path) -> None:
    _write_mnist(tmp_path, n=4, prefix="train")
    _write_mnist(tmp_path, n=3, prefix="t10k")
    assert len(load_mnist(tmp_path)) == 7
    assert len(load_mnist(tmp_path, part="train")) == 4


def _corrupt(d: Path, how: str) -> None:
    img = d / "t10k-images-idx3-ubyte.gz"
    raw = gzip.decompress(img.read_bytes())
    if how == "truncated_gzip":
        img.write_bytes(img.read_bytes()[:-20])
    elif how == "truncated_body":
        img.write_bytes(gzip.compress(raw[:-100]))
    elif how == "trailing":
        img.write_bytes(gzip.compress(raw + b"\0"))
    elif how == "bad_magic":
        img.write_bytes(gzip.compress(b"\x12\x34" + raw[2:]))
    elif how == "short_header":
        img.write_bytes(gzip.compress(raw[:6]))
    elif how == "not_gzip_garbage":
        img.write_bytes(b"\x1f\x8bnot really gzip")
    elif how == "label_count":
        lbl = d / "t10k-labels-idx1-ubyte.gz"
        lbl.write_bytes(gzip.compress(_idx_bytes(np.zeros(5, dtype=np.uint8))))
    elif how == "label_range":
        lbl = d / "t10k-labels-idx1-ubyte.gz"
        lbl.write_bytes(gzip.compress(_idx_bytes(np.full(12, 11, dtype=np.uint8))))
    elif how == "missing_labels":
        (d / "t10k-labels-idx1-ubyte.gz").unlink()
    elif how == "wrong_shape":
        img.write_bytes(gzip.compress(_idx_bytes(np.zeros((12, 27, 28), dtype=np.uint8))))


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("truncated_gzip", "gzip"),
        ("truncated_body", "truncated"),
        ("trailing", "trailing"),
        ("bad_magic", "magic"),
        ("short_header", "header"),
        ("not_gzip_garbage", "gzip"),
        ("label_count", "labels"),
        ("label_range", "not a digit"),
        ("missing_labels", "missing"),
        ("wrong_shape", "28x28"),
    ],
)
def test_mnist_corrupt_files_give_clear_errors(tmp_path: Path, how: str, message: str) -> None:
    _write_mnist(tmp_path)
    _corrupt(tmp_path, how)
    with pytest.raises(DatasetError, match=message):
        load_mnist(tmp_path)


def test_mnist_empty_or_missing_dir(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no MNIST files"):
        load_mnist(tmp_path)
    with pytest.raises(DatasetError, match="not a directory"):
        load_mnist(tmp_path / "nope")


def test_cifar_batches_load(tmp_path: Path) -> None:
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    _write_cifar_batch(d / "data_batch_1", 4)
    _write_cifar_batch(d / "test_batch", 3, protocol=4)
    ds = load_cifar10(tmp_path)
    assert (len(ds), ds.sample_shape) == (7, (3, 32, 32))
    assert len(load_cifar10(d, part="test")) == 3


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return (os.system, ("echo pwned > /dev/null",))


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (pickle.dumps({b"data": _Evil(), b"labels": []}), "forbidden pickle global"),
        (b"\x80\x02}q\x00(X", "corrupt or truncated"),
        (pickle.dumps([1, 2, 3]), "dict batch"),
        (pickle.dumps({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}), "3072"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}), "labels"),
        (pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [12]}), "0..9"),
    ],
)
def test_cifar_rejects_malicious_and_corrupt_pickles(
    tmp_path: Path, payload: bytes, message: str
) -> None:
    (tmp_path / "data_batch_1").write_bytes(payload)
    with pytest.raises(DatasetError, match=message):
        load_cifar10(tmp_path)


def test_load_dataset_by_name(tmp_path: Path) -> None:
    assert load_dataset("digits").name == "digits"
    with pytest.raises(DatasetError, match="unknown dataset"):
        load_dataset("imagenet", str(tmp_path))
    with pytest.raises(DatasetError, match="needs a data directory"):
        load_dataset("mnist")


def test_dataset_validates_its_arrays() -> None:
    with pytest.raises(DatasetError, match="float32"):
        Dataset("x", np.zeros((2, 3)), np.zeros(2, np.int64), 2)  # type: ignore[arg-type]
    with pytest.raises(DatasetError, match="label outside"):
        Dataset("x", np.zeros((2, 3), np.float32), np.array([0, 5]), 2)
    with pytest.raises(DatasetError, match="samples"):
        Dataset("x", np.zeros((2, 3), np.float32), np.zeros(3, np.int64), 2)


# ------------------------------------------------------------------ split


def test_split_sizes_disjoint_and_seeded() -> None:
    ds = load_digits()
    tr, te = split(ds, 0.2, seed=0)
    assert (len(tr), len(te)) == (1438, 359)
    tr2, te2 = split(ds, "0.2", seed=0)
    np.testing.assert_array_equal(te.y, te2.y)
    _, te3 = split(ds, 0.2, seed=1)
    assert not np.array_equal(te.x, te3.x)


# ------------------------------------------------------------------ partitioners

LABELS = np.repeat(np.arange(10), 100)


def _assert_exact_cover(parts: list[np.ndarray], n: int) -> None:
    allidx = np.concatenate(parts)
    assert len(allidx) == n, "a sample was lost or duplicated"
    assert np.array_equal(np.sort(allidx), np.arange(n))


@pytest.mark.parametrize(
    "make",
    [
        lambda s: iid(len(LABELS), 10, s),
        lambda s: dirichlet(LABELS, 10, 0.5, s),
        lambda s: dirichlet(LABELS, 20, 100.0, s),
        lambda s: shards(LABELS, 10, 2, s),
    ],
    ids=["iid", "dirichlet0.5", "dirichlet100", "shards2"],
)
def test_partitions_cover_each_sample_once_and_are_seeded(make: object) -> None:
    parts = make(0)  # type: ignore[operator]
    _assert_exact_cover(parts, len(LABELS))
    again = make(0)  # type: ignore[operator]
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    other = make(1)  # type: ignore[operator]
    assert not all(np.array_equal(a, b) for a, b in zip(parts, other, strict=True))


def _mean_label_share_of_top_class(parts: list[np.ndarray]) -> float:
    return float(np.mean([np.bincount(LABELS[p], minlength=10).max() / len(p) for p in parts]))


def test_iid_sizes_and_label_proportions() -> None:
    parts = iid(len(LABELS), 10, 0)
    assert {len(p) for p in parts} == {100}
    assert (
        _mean_label_share_of_top_class(parts) < 0.25
    )  # every client sees all labels roughly evenly


def test_dirichlet_skew_follows_alpha() -> None:
    skewed = _mean_label_share_of_top_class(dirichlet(LABELS, 10, 0.1, 0))
    mild = _mean_label_share_of_top_class(dirichlet(LABELS, 10, 1000.0, 0))
    assert skewed > 0.5 > 0.2 > mild


def test_dirichlet_min_size_and_errors() -> None:
    parts = dirichlet(LABELS, 50, 0.3, 0, min_size=5)
    assert min(len(p) for p in parts) >= 5
    with pytest.raises(ValueError, match="alpha"):
        dirichlet(LABELS, 10, 0.0, 0)
    with pytest.raises(ValueError, match="exceeds"):
        dirichlet(LABELS, 10, 0.5, 0, min_size=200)


def test_shards_give_each_client_at_most_k_labels() -> None:
    parts = shards(LABELS, 10, 2, 0)
    assert {len(p) for p in parts} == {100}
    assert all(len(np.unique(LABELS[p])) <= 2 for p in parts)


# ------------------------------------------------------------------ commitments


def test_sample_hash_is_the_documented_encoding() -> None:
    import hashlib

    from ledger.codec import encode

    x = np.arange(4, dtype=np.float32).reshape(1, 2, 2)
    expected = hashlib.sha256(
        b"fedledger/sample/v1" + encode([[1, 2, 2], "<f4", x.astype("<f4").tobytes(), 3])
    ).digest()
    assert sample_hash(x, 3) == expected
    assert sample_hash(x, 4) != expected


def test_commitment_and_proofs_for_revealed_samples() -> None:
    ds = load_digits().subset(np.arange(37))
    root = data_commitment(ds)
    hashes = sample_hashes(ds)
    assert data_commitment(ds, np.arange(37)) == root
    for pos in (0, 17, 36):
        proof = sample_proof(hashes, pos)
        assert verify_sample(root, ds.x[pos], int(ds.y[pos]), proof)
        assert not verify_sample(root, ds.x[pos], (int(ds.y[pos]) + 1) % 10, proof)
        tampered = ds.x[pos].copy()
        tampered.flat[0] += 1.0
        assert not verify_sample(root, tampered, int(ds.y[pos]), proof)
    # A different order of the same samples is a different commitment.
    assert data_commitment(ds, np.arange(37)[::-1]) != root


# ------------------------------------------------------------------ validation sets


def _val_bytes(x: np.ndarray, y: np.ndarray) -> bytes:
    from safetensors.numpy import save

    return save({"x": x, "y": y})


def test_validation_set_round_trip_and_draw() -> None:
    from fl.data.validation import draw_validation, validation_from_bytes, validation_to_bytes

    digits = load_digits()
    a, b = draw_validation(digits, 50, seed=3), draw_validation(digits, 50, seed=3)
    x, y = validation_from_bytes(validation_to_bytes(a), (64,), 10)  # 1x8x8 -> 64 inputs
    assert np.array_equal(a.x, b.x) and x.shape == (50, 64) and np.array_equal(y, a.y)
    assert not np.array_equal(a.y, draw_validation(digits, 50, seed=4).y)
    with pytest.raises(DatasetError, match="cannot draw"):
        draw_validation(digits, len(digits) + 1)


@pytest.mark.parametrize(("x", "y", "match"), [
    (np.zeros((3, 64), np.float64), np.zeros(3, np.int64), "float32"),
    (np.zeros((3, 64), np.float32), np.zeros(3, np.int32), "int64"),
    (np.zeros((3, 63), np.float32), np.zeros(3, np.int64), "shape"),
    (np.zeros((2, 64), np.float32), np.zeros(3, np.int64), "shape"),
    (np.full((3, 64), np.nan, np.float32), np.zeros(3, np.int64), "NaN"),
    (np.zeros((3, 64), np.float32), np.array([0, 10, 1]), "label outside"),
    (np.zeros((0, 64), np.float32), np.zeros(0, np.int64), "1 to 4096"),
], ids=["x-dtype", "y-dtype", "sample-size", "count-mismatch", "nan", "label", "empty"])
def test_bad_validation_sets_are_refused(x: np.ndarray, y: np.ndarray, match: str) -> None:
    from fl.data.validation import validation_from_bytes

    with pytest.raises(DatasetError, match=match):
        validation_from_bytes(_val_bytes(x, y), (64,), 10)
