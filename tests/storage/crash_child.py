"""Child process for the crash tests: set a store up, arm a fail point, run the operation it guards.

Run as ``python crash_child.py STORE_DIR POINT``; POINT ``random-ops`` instead
runs an endless random workload, printing one line per operation, until the
parent kills it. Exit code 0 means the fail point was never reached.
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import plyvel  # noqa: E402

from storage.cid import Cid  # noqa: E402
from storage.failpoints import ENV_VAR  # noqa: E402
from storage.store import ContentStore  # noqa: E402

CS = 64 * 1024
QUOTA = 12 * 1024 * 1024


def blob(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def setup(path: Path) -> None:
    with ContentStore(path, chunk_size=CS, quota_bytes=QUOTA) as s:
        s.put_bytes(blob(3 * CS, 1), pin="keep")  # A
        s.put_bytes(blob(4 * CS, 2))  # B, unpinned


def run_point(path: Path, point: str) -> None:
    b_cid = None
    with ContentStore(path, chunk_size=CS, quota_bytes=QUOTA) as s:
        b_cid = s.put_bytes(blob(4 * CS, 2))  # already there: returns B's CID
        b_chunk = s.get_manifest(b_cid).chunk_cids()[0]
    if point == "content.quarantine.before_batch":
        db = plyvel.DB(str(path))
        key = b"B" + b_chunk.multihash
        db.put(key, b"\x00" + db.get(key)[1:])
        db.close()
    with ContentStore(path, chunk_size=CS, quota_bytes=QUOTA) as s:
        os.environ[ENV_VAR] = point
        if point.startswith("content.put."):
            # 10 MiB so that several chunk batches are written; shares A's bytes
            s.put_bytes(blob(3 * CS, 1) + blob(10 * 1024 * 1024, 3), pin="new")
        elif point == "content.pin.before_batch":
            s.pin(b_cid, "late pin")
        elif point == "content.gc.after_manifests":
            s.gc()
        elif point == "content.evict.before_batch":
            s.put_bytes(blob(QUOTA - 4 * CS, 4))
        elif point == "content.quarantine.before_batch":
            s.get_bytes(b_cid)
        else:
            raise SystemExit(f"unknown point {point}")


def random_ops(path: Path, seed: int) -> None:
    rng = random.Random(seed)
    with ContentStore(path, chunk_size=CS, quota_bytes=QUOTA) as s:
        cids: list[Cid] = []
        for i in range(10_000):
            op = rng.random()
            if op < 0.5 or not cids:
                data = blob(rng.randrange(0, 40) * CS // 4, rng.randrange(20))
                pin = rng.choice([None, "r1", "r2"])
                try:
                    cids.append(s.put_bytes(data, pin=pin))
                except Exception as e:  # quota: expected under pressure
                    print(f"err {type(e).__name__}", flush=True)
            elif op < 0.65:
                s.gc()
            elif op < 0.8:
                try:
                    s.pin(rng.choice(cids), "r3")
                except Exception:
                    pass
            else:
                try:
                    s.unpin(rng.choice(cids))
                except Exception:
                    pass
            print(f"op {i}", flush=True)


if __name__ == "__main__":
    store_dir, what = Path(sys.argv[1]), sys.argv[2]
    if what == "setup":
        setup(store_dir)
    elif what == "random-ops":
        random_ops(store_dir, int(sys.argv[3]))
    else:
        run_point(store_dir, what)
