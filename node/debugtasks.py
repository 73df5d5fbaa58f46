"""Operator diagnostics: where every trio task of the node is waiting (like a goroutine dump)."""

from __future__ import annotations

from typing import Any

import trio


def _frames(coro: Any) -> list[str]:
    out = []
    depth = 0
    while coro is not None and depth < 64:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            out.append(f"{frame.f_code.co_filename.rsplit('/', 2)[-1]}:{frame.f_lineno} "
                       f"{frame.f_code.co_name}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
        depth += 1
    return out


def task_dump(limit: int = 400) -> list[dict[str, Any]]:
    """Every task under the root with the await chain it is suspended in."""
    out: list[dict[str, Any]] = []

    def walk(task: trio.lowlevel.Task, depth: int) -> None:
        if len(out) >= limit:
            return
        out.append({"task": task.name, "depth": depth, "stack": _frames(task.coro)})
        for nursery in task.child_nurseries:
            for child in nursery.child_tasks:
                walk(child, depth + 1)

    walk(trio.lowlevel.current_root_task(), 0)
    return out
