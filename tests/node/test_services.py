"""The node's service guard: a crash is logged; a restartable service runs again."""

from __future__ import annotations

from pathlib import Path

import trio

from node.daemon import Node
from tests.node.node_helpers import make_home, running_inprocess_node


async def test_a_crashed_service_restarts_only_when_allowed(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    # Prepare: two services that crash; one may be restarted and settles on its third run
    home = make_home(tmp_path / "home")
    node = Node(home, home.load_config())
    runs = {"restartable": 0, "fragile": 0}
    settled = trio.Event()

    async def restartable() -> None:
        runs["restartable"] += 1
        if runs["restartable"] < 3:
            raise RuntimeError("bad answer from a peer")
        settled.set()

    async def fragile() -> None:
        runs["fragile"] += 1
        raise RuntimeError("bad answer from a peer")

    node.add_service("restartable", restartable, restart=True)
    node.add_service("fragile", fragile)
    # Execute: the node runs them (crash, 1 s pause, crash, 2 s pause, settle)
    async with running_inprocess_node(nursery, home, node=node):
        with trio.fail_after(30):
            await settled.wait()
    # Assert: restarted twice after its crashes; the other ran once and stayed down
    assert runs == {"restartable": 3, "fragile": 1}
