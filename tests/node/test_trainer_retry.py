"""The trainer's retry rule: content not reachable yet is retried with a backoff while the
round is open; any other failure counts toward MAX_ATTEMPTS."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from node.fl.trainer import MAX_ATTEMPTS, RETRY_BACKOFF_S, TrainerService
from node.logs import get_logger
from storage.errors import ChunkUnavailable


def bare_trainer(error: Exception) -> TrainerService:
    t = TrainerService.__new__(TrainerService)
    t.log = get_logger("test.trainer")
    t.busy, t.failures, t.unreachable, t.retry_at = set(), {}, {}, {}

    async def failing_round(task_id: int, task: Any) -> None:
        raise error

    t._round = failing_round  # type: ignore[method-assign]
    return t


class Task:
    round = 1


@pytest.mark.trio
async def test_unreachable_content_backs_off_without_using_up_attempts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # the global model's only holder is restarting: "no connected peer has" it
    t = bare_trainer(ChunkUnavailable("no connected peer has bafy..."))
    waits = []
    for _ in range(7):
        t.busy.add((5, 1))
        await t._train_and_submit(5, Task())
        waits.append(t.retry_at[(5, 1)] - trio.current_time())
    first, cap = RETRY_BACKOFF_S
    assert waits == [first, 2 * first, 4 * first, 8 * first, cap, cap, cap]
    assert t.failures == {} and t.unreachable[(5, 1)] == 7 and not t.busy


@pytest.mark.trio
async def test_other_failures_count_toward_max_attempts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    t = bare_trainer(ValueError("model config does not match the data"))
    for _ in range(MAX_ATTEMPTS):
        await t._train_and_submit(5, Task())
    assert t.failures[(5, 1)] == MAX_ATTEMPTS and t.retry_at == {}
