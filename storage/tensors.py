"""State dicts as safetensors objects in the store, cut at tensor boundaries so versions share chunks.

Never pickle: bytes go through ``safetensors`` only (torch or numpy flavour,
imported inside the functions so importing `storage` stays light). Chunk cuts
fall at the end of the safetensors header and at the start and end of every
tensor of at least ``MIN_ALIGNED_TENSOR`` bytes; a tensor that did not change
between two model versions therefore yields identical chunks in both, even if
the header or other tensors changed (ADR 0302). Smaller tensors are packed
together, so a model with hundreds of biases does not explode into tiny chunks.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

from storage.chunker import DEFAULT_CHUNK_SIZE, boundaries, check_chunk_size
from storage.cid import Cid, chunk_cid, parse_cid
from storage.errors import InvalidManifest
from storage.manifest import OCTET_STREAM, SAFETENSORS_MEDIA_TYPE, TensorInfo, build_manifest
from storage.store import ContentStore

__all__ = [
    "MAX_HEADER_BYTES",
    "MIN_ALIGNED_TENSOR",
    "SafetensorsLayout",
    "bytes_cid",
    "get_state_dict",
    "parse_safetensors_header",
    "put_safetensors_file",
    "put_state_dict",
    "shared_bytes",
    "state_dict_cid",
    "state_dict_to_safetensors",
]

MIN_ALIGNED_TENSOR = 64 * 1024
MAX_HEADER_BYTES = 16 * 1024 * 1024
_DTYPES = {
    "BOOL", "U8", "I8", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "F64", "I64", "U64",
    "F8_E4M3", "F8_E5M2", "C64",
}  # fmt: skip


@dataclass(frozen=True)
class SafetensorsLayout:
    header_end: int  # 8 + header length: where tensor data starts
    tensors: tuple[TensorInfo, ...]  # in data order, absolute offsets
    total_size: int

    def cuts(self) -> list[int]:
        out = [self.header_end]
        for t in self.tensors:
            if t.end - t.begin >= MIN_ALIGNED_TENSOR:
                out += [t.begin, t.end]
        return out


def parse_safetensors_header(prefix: bytes, total_size: int) -> SafetensorsLayout:
    """Validate a safetensors header (the first ``8 + n`` bytes) against the object size."""
    if len(prefix) < 8:
        raise InvalidManifest("safetensors data shorter than its 8-byte header length")
    (n,) = struct.unpack("<Q", prefix[:8])
    if n > MAX_HEADER_BYTES or 8 + n > total_size:
        raise InvalidManifest(f"safetensors header length {n} is out of range")
    if len(prefix) < 8 + n:
        raise InvalidManifest("safetensors header truncated")
    try:
        header = json.loads(prefix[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidManifest(f"safetensors header is not JSON: {e}") from e
    if not isinstance(header, dict):
        raise InvalidManifest("safetensors header is not an object")
    base = 8 + n
    tensors: list[TensorInfo] = []
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = spec["dtype"], spec["shape"], spec["data_offsets"]
            if dtype not in _DTYPES or not all(isinstance(d, int) for d in shape):
                raise ValueError("bad dtype or shape")
            tensors.append(
                TensorInfo(name, dtype, tuple(shape), base + int(begin), base + int(end))
            )
        except (KeyError, TypeError, ValueError) as err:
            raise InvalidManifest(f"safetensors entry {name!r} is malformed: {err}") from err
    tensors.sort(key=lambda t: (t.begin, t.end))
    pos = base
    for t in tensors:  # data must tile the buffer exactly, as safetensors itself requires
        if t.begin != pos:
            raise InvalidManifest(f"safetensors tensor {t.name!r} does not start at {pos}")
        pos = t.end
    if pos != total_size:
        raise InvalidManifest("safetensors data does not end at the end of the object")
    return SafetensorsLayout(base, tuple(tensors), total_size)


def _is_torch(state_dict: Mapping[str, Any]) -> bool:
    return any(type(v).__module__.startswith("torch") for v in state_dict.values())


def state_dict_to_safetensors(state_dict: Mapping[str, Any]) -> bytes:
    """Deterministic safetensors bytes of a torch or numpy state dict (no metadata)."""
    if _is_torch(state_dict):
        import torch
        from safetensors.torch import save as torch_save

        plain: dict[str, torch.Tensor] = {}
        for k, v in state_dict.items():
            # clone: safetensors refuses tensors that share storage (tied weights, views)
            plain[k] = v.detach().to("cpu").contiguous().clone()
        return torch_save(plain)
    import numpy as np
    from safetensors.numpy import save as np_save

    return np_save({k: np.ascontiguousarray(v) for k, v in state_dict.items()})


def _plan(data: bytes, chunk_size: int) -> tuple[SafetensorsLayout, list[tuple[int, int]]]:
    layout = parse_safetensors_header(data[: 8 + MAX_HEADER_BYTES], len(data))
    return layout, boundaries(len(data), chunk_size, layout.cuts())


def put_state_dict(
    store: ContentStore,
    state_dict: Mapping[str, Any],
    *,
    pin: str | None = None,
    chunk_size: int | None = None,
) -> Cid:
    """Store a state dict as safetensors; returns the manifest CID that names the whole model."""
    data = state_dict_to_safetensors(state_dict)
    size = check_chunk_size(chunk_size) if chunk_size is not None else store.chunk_size
    layout, _ = _plan(data, size)
    return store.put_stream(
        data,
        media_type=SAFETENSORS_MEDIA_TYPE,
        pin=pin,
        cuts=layout.cuts(),
        tensors=layout.tensors,
        chunk_size=size,
    )


def state_dict_cid(state_dict: Mapping[str, Any], *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Cid:
    """The CID :func:`put_state_dict` would return, computed without a store."""
    data = state_dict_to_safetensors(state_dict)
    layout, spans = _plan(data, check_chunk_size(chunk_size))
    chunks = [(chunk_cid(memoryview(data)[s:e]), e - s) for s, e in spans]
    _, _, cid = build_manifest(
        chunks, media_type=SAFETENSORS_MEDIA_TYPE, chunk_size=chunk_size, tensors=layout.tensors
    )
    return cid


def get_state_dict(
    store: ContentStore, cid: Cid | bytes | str, *, framework: str = "torch", device: str = "cpu"
) -> dict[str, Any]:
    """Load a stored safetensors object (every chunk hash-verified); never unpickles."""
    c = parse_cid(cid)
    manifest = store.get_manifest(c)
    if manifest.media_type != SAFETENSORS_MEDIA_TYPE:
        raise InvalidManifest(f"{c} holds {manifest.media_type}, not safetensors")
    data = store.get_bytes(c)
    try:
        if framework == "torch":
            from safetensors.torch import load as torch_load

            out: dict[str, Any] = torch_load(data)
            return {k: v.to(device) for k, v in out.items()} if device != "cpu" else out
        if framework == "numpy":
            from safetensors.numpy import load as np_load

            return dict(np_load(data))
    except Exception as e:  # safetensors raises its own SafetensorError on bad bytes
        raise InvalidManifest(f"{c} is not valid safetensors: {e}") from e
    raise ValueError(f"unknown framework {framework!r} (torch or numpy)")


def put_safetensors_file(
    store: ContentStore,
    path: str | os.PathLike[str],
    *,
    pin: str | None = None,
    chunk_size: int | None = None,
) -> Cid:
    """Store a ``.safetensors`` file with tensor-aligned chunks, streaming it from disk.

    Gives the same CID as :func:`put_state_dict` of the same tensors.
    """
    size = check_chunk_size(chunk_size) if chunk_size is not None else store.chunk_size
    total = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        n = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
        if n > MAX_HEADER_BYTES:
            raise InvalidManifest(f"safetensors header length {n} is out of range")
        head += f.read(n)
        layout = parse_safetensors_header(head, total)
        f.seek(0)
        return store.put_stream(
            _file_pieces(f),
            media_type=SAFETENSORS_MEDIA_TYPE,
            pin=pin,
            cuts=layout.cuts(),
            tensors=layout.tensors,
            chunk_size=size,
        )


def _file_pieces(f: BinaryIO) -> Iterable[bytes]:
    while piece := f.read(1024 * 1024):
        yield piece


def shared_bytes(store: ContentStore, old: Cid | str, new: Cid | str) -> tuple[int, int]:
    """``(bytes of new's chunks already in old, new's total bytes)``: the dedup of a version."""
    old_chunks = {c.cid for c in store.get_manifest(old).chunks}
    new_manifest = store.get_manifest(new)
    shared = sum(c.size for c in new_manifest.chunks if c.cid in old_chunks)
    return shared, new_manifest.total_size


def bytes_cid(data: bytes, *, chunk_size: int = DEFAULT_CHUNK_SIZE,
              media_type: str = OCTET_STREAM) -> Cid:
    """The CID ``ContentStore.put_bytes(data, chunk_size=..., media_type=...)`` returns,
    computed without a store (a trainer names its objects before it can write them)."""
    size = check_chunk_size(chunk_size)
    view = memoryview(data)
    refs = [(chunk_cid(view[i : i + size]), len(view[i : i + size]))
            for i in range(0, len(data), size)]
    _, _, cid = build_manifest(refs, media_type=media_type, chunk_size=size)
    return cid
