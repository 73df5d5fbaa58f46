"""bytes_cid names an object exactly as ContentStore.put_bytes will."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from storage.store import ContentStore
from storage.tensors import bytes_cid


@pytest.mark.parametrize("size", [0, 1, 1024 * 1024, 1024 * 1024 + 1, 3 * 1024 * 1024 + 5])
def test_bytes_cid_matches_put_bytes(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    with ContentStore(tmp_path / "c.db") as store:
        assert bytes_cid(data) == store.put_bytes(data)
        assert bytes_cid(data, chunk_size=256 * 1024) == store.put_bytes(data, chunk_size=256 * 1024)
