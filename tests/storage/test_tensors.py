"""State dicts in the store: exact round trips without pickle, tensor-aligned chunk sharing."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from storage import api
from storage.errors import InvalidManifest
from storage.manifest import SAFETENSORS_MEDIA_TYPE
from storage.store import ContentStore
from storage.tensors import (
    MIN_ALIGNED_TENSOR,
    get_state_dict,
    parse_safetensors_header,
    put_state_dict,
    shared_bytes,
    state_dict_cid,
    state_dict_to_safetensors,
)

CS = 64 * 1024


def mlp(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    m = torch.nn.Sequential(
        torch.nn.Linear(784, 200),
        torch.nn.ReLU(),
        torch.nn.Linear(200, 100),
        torch.nn.Linear(100, 10),
    )
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


@pytest.fixture
def tstore(tmp_path: Path) -> Iterator[ContentStore]:
    s = ContentStore(tmp_path / "s", chunk_size=CS)
    yield s
    s.close()


def test_torch_round_trip_is_exact(tstore: ContentStore) -> None:
    sd = mlp()
    sd["step"] = torch.tensor(7, dtype=torch.int64)
    sd["half"] = torch.ones(3, 5, dtype=torch.bfloat16)
    cid = put_state_dict(tstore, sd, pin="global model t1 r0")
    out = get_state_dict(tstore, cid)
    assert out.keys() == sd.keys()
    for k, v in sd.items():
        assert out[k].dtype == v.dtype and torch.equal(out[k], v)
    manifest = tstore.get_manifest(cid)
    assert manifest.media_type == SAFETENSORS_MEDIA_TYPE
    assert {t.name for t in manifest.tensors} == set(sd)
    w = next(t for t in manifest.tensors if t.name == "0.weight")
    assert (w.dtype, w.shape) == ("F32", (200, 784))


def test_numpy_round_trip(tstore: ContentStore) -> None:
    sd: dict[str, np.ndarray] = {
        "a": np.arange(12, dtype=np.float32).reshape(3, 4),
        "b": np.array([1, 2], dtype=np.int64),
    }
    cid = put_state_dict(tstore, sd)
    out = get_state_dict(tstore, cid, framework="numpy")
    for k, v in sd.items():
        assert np.array_equal(out[k], v) and out[k].dtype == v.dtype


def test_cid_is_deterministic_and_computable_without_store(tstore: ContentStore) -> None:
    sd = mlp()
    cid = put_state_dict(tstore, sd)
    assert state_dict_cid(sd, chunk_size=CS) == cid
    assert put_state_dict(tstore, mlp()) == cid  # same tensors, same CID everywhere


def test_tied_and_strided_tensors_are_saved(tstore: ContentStore) -> None:
    w = torch.randn(8, 8)
    sd = {"enc": w, "dec": w, "t": w.t()}  # shared storage and a non-contiguous view
    out = get_state_dict(tstore, put_state_dict(tstore, sd))
    assert torch.equal(out["dec"], w) and torch.equal(out["t"], w.t())


def test_new_version_shares_unchanged_tensor_chunks(tstore: ContentStore) -> None:
    v1 = mlp(0)
    v2 = {k: v.clone() for k, v in v1.items()}
    v2["3.weight"] += 0.5  # fine-tune only the head
    v2["3.bias"] += 0.5
    c1 = put_state_dict(tstore, v1)
    before = tstore.used_bytes
    c2 = put_state_dict(tstore, v2)
    shared, total = shared_bytes(tstore, c1, c2)
    head = (10 * 100 + 10) * 4
    assert total - shared <= head + 4096  # only the head (and tiny packed tensors) is new
    assert tstore.used_bytes - before < total - shared + 8192


def test_changed_shape_in_front_does_not_break_sharing(tstore: ContentStore) -> None:
    big = torch.randn(256, 256)  # 256 KiB: its own aligned chunks
    v1 = {"a_small": torch.zeros(3), "z_big": big}
    v2 = {"a_small": torch.zeros(5), "z_big": big}  # header and offsets change
    c1, c2 = put_state_dict(tstore, v1), put_state_dict(tstore, v2)
    shared, _ = shared_bytes(tstore, c1, c2)
    assert shared >= big.numel() * 4


def test_aligned_layout_cuts_at_big_tensors_only() -> None:
    data = state_dict_to_safetensors(
        {"big": torch.zeros(MIN_ALIGNED_TENSOR // 4), "tiny": torch.zeros(2)}
    )
    layout = parse_safetensors_header(data, len(data))
    big = next(t for t in layout.tensors if t.name == "big")
    assert layout.cuts() == [layout.header_end, big.begin, big.end]


def test_safetensors_file_put_gives_same_cid(tstore: ContentStore, tmp_path: Path) -> None:
    sd = mlp()
    path = tmp_path / "model.safetensors"
    path.write_bytes(state_dict_to_safetensors(sd))
    st = api.content_put(tstore, path)
    assert st["cid"] == str(put_state_dict(tstore, sd)) and st["tensors"] == len(sd)


def _header(obj: object, data_len: int = 0) -> bytes:
    h = json.dumps(obj).encode()
    return struct.pack("<Q", len(h)) + h + b"\x00" * data_len


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x01\x02", "shorter"),
        (struct.pack("<Q", 1 << 40), "out of range"),
        (struct.pack("<Q", 4) + b"{}", "out of range"),
        (_header([1, 2]), "not an object"),
        (struct.pack("<Q", 3) + b"{x}", "not JSON"),
        (
            _header({"t": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, 8),
            "end of the object",
        ),
        (
            _header({"t": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, 8),
            "does not start",
        ),
        (_header({"t": {"dtype": "NOPE", "shape": [1], "data_offsets": [0, 4]}}, 4), "malformed"),
        (_header({"t": {"shape": [1], "data_offsets": [0, 4]}}, 4), "malformed"),
    ],
)
def test_malformed_safetensors_headers(data: bytes, reason: str) -> None:
    with pytest.raises(InvalidManifest, match=reason):
        parse_safetensors_header(data, len(data))


def test_loading_non_safetensors_object_is_refused(tstore: ContentStore) -> None:
    cid = tstore.put_bytes(b"not a model")
    with pytest.raises(InvalidManifest, match="not safetensors"):
        get_state_dict(tstore, cid)
    fake = tstore.put_bytes(b"garbage bytes", media_type=SAFETENSORS_MEDIA_TYPE)
    with pytest.raises(InvalidManifest, match="not valid safetensors"):
        get_state_dict(tstore, fake)
