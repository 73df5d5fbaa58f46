"""Crash-test fail points: kill the process at a named point when FEDLEDGER_FAILPOINT says so.

``FEDLEDGER_FAILPOINT=content.put.after_chunks`` makes the process SIGKILL
itself when it reaches that point, which is how the crash tests prove the
write ordering of the store. Unset (production), :func:`failpoint` is a
dictionary lookup and nothing else. Several points may be given, comma separated.
"""

from __future__ import annotations

import os
import signal

__all__ = ["ENV_VAR", "POINTS", "failpoint"]

ENV_VAR = "FEDLEDGER_FAILPOINT"

# Every point the storage package defines (tests iterate over this).
POINTS = (
    "content.put.mid_chunks",  # some chunk batches written, manifest not yet
    "content.put.after_chunks",  # all chunks written, manifest batch not yet
    "content.put.after_manifest",  # manifest + pins committed
    "content.pin.before_batch",
    "content.gc.after_manifests",  # unreachable manifests deleted, their chunks not yet
    "content.evict.before_batch",
    "content.quarantine.before_batch",
)


def failpoint(name: str) -> None:
    """SIGKILL this process if ``name`` is listed in ``$FEDLEDGER_FAILPOINT``."""
    armed = os.environ.get(ENV_VAR)
    if armed and name in armed.split(","):
        os.kill(os.getpid(), signal.SIGKILL)
