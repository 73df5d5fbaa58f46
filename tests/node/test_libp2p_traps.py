"""Each py-libp2p 0.8.1 trap from LIBP2P_NOTES.md that applies: the trap is real, the fix works.

Every test runs the scenario twice where it can, with the workaround switched
off and on, so a newer py-libp2p that fixes a trap makes the "off" half fail
and tells us the workaround can go.
"""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import structlog
import trio
from libp2p.peer.id import ID

from node.keys import NodeKey
from node.p2p import (
    PENALTY_MALFORMED_RPC,
    PENALTY_STREAM_ABUSE,
    LruValidationCache,
    P2PNode,
    Workarounds,
    _socket_open,
    cache_peer_records,
    enlarge_pubsub_queues,
    restore_peer_records,
    restore_pubsub_queues,
)
from tests.node.p2p_helpers import (
    CHAIN,
    Inbox,
    accept_all,
    p2p_config,
    running_node,
    wait_mesh,
    wait_until,
)


async def burst_delivery(nursery: trio.Nursery, wk: Workarounds, count: int,
                         payload: int = 100, timeout: float = 60) -> int:
    """Publish ``count`` messages back to back; return how many the peer received."""
    inbox = Inbox()
    async with running_node(nursery, {"t": (accept_all, Inbox().handler)}, workarounds=wk) as a:
        async with running_node(nursery, {"t": (accept_all, inbox.handler)},
                                bootstrap=a.listen_multiaddrs(), workarounds=wk) as b:
            await wait_mesh(a, b, "t")
            for i in range(count):
                await a.publish("t", i.to_bytes(4, "big") + b"x" * payload)
            await a.publish("t", b"END!")  # a marker behind the burst
            try:
                await inbox.wait_for(lambda it: any(v == b"END!" for _, v in it), timeout)
            except trio.TooSlowError:
                pass
            return sum(1 for _, v in inbox.items if v != b"END!")


async def test_trap1_spam_protection_drops_bursts(nursery: trio.Nursery) -> None:
    off = Workarounds(disable_spam_protection=False)
    assert await burst_delivery(nursery, off, 40, timeout=3) < 40  # the library drops > 10 msg/s
    assert await burst_delivery(nursery, Workarounds(), 40) == 40


async def test_trap3_small_queues_drop_bursts(nursery: trio.Nursery) -> None:
    # Spam protection off in both runs: only the queue size differs.
    restore_pubsub_queues()
    try:
        lost = 600 - await burst_delivery(nursery, Workarounds(large_queues=False), 600, 2000,
                                          timeout=3)
    finally:
        enlarge_pubsub_queues(4096)
    assert lost > 0
    assert await burst_delivery(nursery, Workarounds(), 600, 2000) == 600


async def test_trap4_restart_reuses_message_ids(nursery: trio.Nursery) -> None:
    """A node restarted within seconds: with int(time()) seqnos its messages look old."""

    async def restart_and_publish(wk: Workarounds) -> int:
        key = NodeKey.generate()
        inbox = Inbox()
        async with running_node(nursery, {"t": (accept_all, inbox.handler)}) as b:
            async with running_node(nursery, {"t": (accept_all, Inbox().handler)}, key=key,
                                    bootstrap=[b.listen_multiaddrs()[0]], workarounds=wk) as a:
                await wait_mesh(a, b, "t")
                for i in range(50):
                    await a.publish("t", b"first run %d" % i)
                await inbox.wait_for(lambda it: len(it) >= 50)
            # b must have dropped the old pubsub peer first: py-libp2p keeps stale peer state
            # (and never re-sends its subscriptions) for a peer that reconnects before that.
            await wait_until(lambda: ID.from_base58(key.peer_id) not in b.pubsub.peers)
            # Same key, same peer id, a moment later.
            async with running_node(nursery, {"t": (accept_all, Inbox().handler)}, key=key,
                                    bootstrap=[b.listen_multiaddrs()[0]], workarounds=wk) as a2:
                await wait_until(lambda: b.connect_count.get(a2.peer_id, 0) >= 2)
                # (the mesh itself may stay pruned for the 60 s backoff; publishing still
                # reaches subscribed peers, so wait for b's subscription instead)
                await a2.pubsub.wait_for_subscription(ID.from_base58(b.peer_id),
                                                      a2.topic_name("t"), timeout=10)
                for i in range(5):
                    await a2.publish("t", b"second run %d" % i)
                await a2.publish("t", b"second run END")
                try:
                    await inbox.wait_for(lambda it: any(v == b"second run END" for _, v in it),
                                         timeout=5)
                except trio.TooSlowError:
                    pass
            return sum(1 for _, v in inbox.items if v.startswith(b"second run"))

    assert await restart_and_publish(Workarounds(time_ns_seqno=False)) == 0
    assert await restart_and_publish(Workarounds()) == 6


async def test_trap5_leaving_run_without_close_keeps_sockets(nursery: trio.Nursery) -> None:
    """Without host.close() (and our sweep of connections py-libp2p forgets) sockets stay open."""

    async def sockets_left_open(wk: Workarounds) -> int:
        async with running_node(nursery) as b:
            stopped = trio.Event()
            a = P2PNode(NodeKey.generate(), p2p_config(b.listen_multiaddrs()), CHAIN,
                        structlog.get_logger("test"), workarounds=wk)
            cancel = trio.CancelScope()

            async def run(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
                with cancel:
                    await a.run(task_status=task_status)
                stopped.set()

            await nursery.start(run)
            await wait_until(lambda: b.peer_id in a.connected_peers())
            muxed = [m for ms in a._muxed.values() for m in ms]
            cancel.cancel()
            await stopped.wait()  # run() has returned, its cleanup done
            return sum(_socket_open(m) for m in muxed)

    assert await sockets_left_open(Workarounds(close_host=False)) > 0
    for _ in range(5):  # the forgotten-connection leak is intermittent; sweep every time
        assert await sockets_left_open(Workarounds()) == 0


async def test_trap7_one_mib_gossip_vanishes(nursery: trio.Nursery) -> None:
    inbox = Inbox()
    wk = Workarounds(refuse_oversize_gossip=False)
    async with running_node(nursery, {"t": (accept_all, Inbox().handler)}, workarounds=wk,
                            max_gossip_bytes=2 * 1024 * 1024) as a:
        async with running_node(nursery, {"t": (accept_all, inbox.handler)},
                                bootstrap=a.listen_multiaddrs(),
                                max_gossip_bytes=2 * 1024 * 1024) as b:
            await wait_mesh(a, b, "t")
            await a.publish("t", b"B" * (1024 * 1024 + 10))  # silently dropped by the library
            await a.publish("t", b"small")
            await inbox.wait_for(lambda it: any(v == b"small" for _, v in it))
            assert [len(v) for _, v in inbox.items] == [5]
    # The workaround (on by default) turns the silent loss into GossipTooLarge; see test_p2p.


async def test_trap8_libp2p_warnings_reach_the_node_log() -> None:
    from node.logs import setup_logging

    buf = io.StringIO()
    setup_logging("info", "json", stream=buf)
    logging.getLogger("libp2p.network.swarm").warning("dial failed for test")
    line = json.loads(buf.getvalue().strip().splitlines()[-1])
    assert line["event"] == "dial failed for test" and line["logger"] == "libp2p.network.swarm"
    logging.getLogger("libp2p.network.swarm").info("chatty internals")
    assert "chatty internals" not in buf.getvalue()  # below the libp2p threshold
    # the per-message warning of a full optimistic queue is dropped, other warnings pass
    gs = logging.getLogger("libp2p.pubsub.gossipsub")
    gs.warning("pending message queue for peer %s exceeded limit (%d > %d), dropping oldest "
               "messages", "12D3KooWX", 101, 100)
    gs.warning("GRAFT: ignoring request from direct peer %s", "12D3KooWX")
    lines = [json.loads(x)["event"] for x in buf.getvalue().strip().splitlines()]
    assert not any("pending message queue" in e for e in lines)
    assert lines[-1] == "GRAFT: ignoring request from direct peer 12D3KooWX"
    setup_logging("info", "console")


async def test_trap10_inbound_streams_are_limited_per_peer(nursery: trio.Nursery) -> None:
    release = trio.Event()
    served = 0

    async def handler(stream) -> None:  # type: ignore[no-untyped-def]
        nonlocal served
        served += 1
        await release.wait()
        await stream.close()

    async with running_node(nursery) as a:
        a.add_stream_protocol("/fedledger/test/1.0.0", handler, max_per_peer=3)
        async with running_node(nursery, bootstrap=a.listen_multiaddrs()) as b:
            await wait_until(lambda: a.peer_id in b.connected_peers())
            refused = 0
            for _ in range(5):
                try:
                    s = await b.new_stream(a.peer_id, "/fedledger/test/1.0.0")
                    await s.write(b"hi")
                except Exception:  # the 4th and 5th are reset by the limit
                    refused += 1
            await wait_until(lambda: a.scores.score(b.peer_id) <= -2 * PENALTY_STREAM_ABUSE)
            assert served == 3
            assert refused >= 1
            release.set()


async def test_trap11_malformed_pubsub_rpc_costs_the_sender_not_the_node(
    nursery: trio.Nursery,
) -> None:
    """A pubsub frame that is not a protobuf RPC used to escape the read loop and tear the host
    down (seen when py-libp2p's yamux interleaved two half-written messages under load)."""
    inbox = Inbox()
    async with running_node(nursery, {"t": (accept_all, inbox.handler)}) as a:
        async with running_node(nursery, {"t": (accept_all, Inbox().handler)},
                                bootstrap=a.listen_multiaddrs()) as b:
            await wait_mesh(a, b, "t")
            s = await b.new_stream(a.peer_id, "/meshsub/1.1.0")
            junk = b"\xff" * 40  # field 31, wire type 7: no protobuf parser accepts it
            await s.write(bytes([len(junk)]) + junk)
            await wait_until(lambda: a.scores.score(b.peer_id) <= -PENALTY_MALFORMED_RPC)
            async with running_node(nursery, {"t": (accept_all, Inbox().handler)},
                                    bootstrap=a.listen_multiaddrs()) as c:
                await wait_mesh(c, a, "t")
                await c.publish("t", b"still alive")
                await inbox.wait_for(lambda it: any(v == b"still alive" for _, v in it), 20)


async def test_trap14_peer_records_are_checked_once_per_peer(
        nursery: trio.Nursery, monkeypatch: Any) -> None:
    import libp2p.pubsub.utils as pubsub_utils

    checked: list[bytes] = []
    original = pubsub_utils.consume_envelope

    def counting(data: bytes, domain: str) -> Any:
        checked.append(data)
        return original(data, domain)

    monkeypatch.setattr(pubsub_utils, "consume_envelope", counting)
    restore_peer_records()
    try:
        assert await burst_delivery(nursery, Workarounds(cache_peer_records=False), 50) == 50
        # py-libp2p parses and signature-checks the sender's record on every RPC
        assert len(checked) > 50
    finally:
        cache_peer_records()
    checked.clear()
    assert await burst_delivery(nursery, Workarounds(), 50) == 50
    # once per (receiving host, sending peer): two hosts, a few RPCs before the first record
    assert 0 < len(checked) <= 4


def test_trap14_validation_cache_is_an_lru() -> None:
    from types import SimpleNamespace

    c = LruValidationCache(ttl=300, max_size=3)
    fresh = SimpleNamespace(timestamp=__import__("time").time())
    for k in (b"a", b"b", b"c"):
        c.put(k, fresh)
    assert c.get(b"a") is fresh  # a is now the most recently used
    c.put(b"d", fresh)
    assert c.get(b"b") is None and c.get(b"a") is fresh and len(c.cache) == 3
    c.put(b"e", SimpleNamespace(timestamp=0.0))
    assert c.get(b"e") is None  # expired
    c.put(b"f", SimpleNamespace(timestamp=0.0))
    c.clear_expired()
    assert b"f" not in c.cache


def test_consensus_gossip_overtakes_queued_tx_gossip() -> None:
    """A peer's outbound queue sends consensus and evidence RPCs before queued bulk gossip."""
    import libp2p.pubsub.pubsub as ps
    from libp2p.pubsub.pb import rpc_pb2

    def rpc(topic: str, data: bytes) -> rpc_pb2.RPC:
        return rpc_pb2.RPC(publish=[rpc_pb2.Message(data=data, topicIDs=[f"/fedledger/c/{topic}"])])

    async def main() -> list[bytes]:
        q = ps.RpcQueue()  # the enlarged queue the node installs (trap 3)
        for i in range(5):
            assert q.push(rpc("txs", b"tx%d" % i))
        q.push(rpc("consensus", b"vote"))
        q.push(rpc("blocks", b"block"))
        q.push(rpc("evidence", b"evidence"))
        return [(await q.pop()).publish[0].data for _ in range(8)]

    enlarge_pubsub_queues(4096)
    order = trio.run(main)
    assert order[:2] == [b"vote", b"evidence"]
    assert order[2:] == [b"tx0", b"tx1", b"tx2", b"tx3", b"tx4", b"block"]


def test_forwarded_tx_gossip_is_shed_behind_a_backlog() -> None:
    """Behind SHED_FORWARDED_TXS_AT queued RPCs, a relayed tx batch is refused; our own
    txs and consensus messages are not."""
    import libp2p.pubsub.pubsub as ps
    from libp2p.pubsub.pb import rpc_pb2

    import node.p2p as p2p_mod

    me, other = b"\x00\x24me", b"\x00\x24other"

    def rpc(topic: str, origin: bytes) -> rpc_pb2.RPC:
        return rpc_pb2.RPC(publish=[rpc_pb2.Message(data=b"x", from_id=origin,
                                                    topicIDs=[f"/fedledger/c/{topic}"])])

    async def main() -> None:
        q = ps.RpcQueue()
        shed0 = type(q).shed
        for _ in range(p2p_mod.SHED_FORWARDED_TXS_AT):
            assert q.push(rpc("txs", other))  # below the mark: relayed like anything else
        assert not q.push(rpc("txs", other))  # shed
        assert q.push(rpc("txs", me))  # our own
        assert q.push(rpc("consensus", other))  # another topic
        assert q.push(rpc("blocks", other))
        assert type(q).shed == shed0 + 1

    enlarge_pubsub_queues(4096)
    p2p_mod._LOCAL_PEER_IDS.add(me)
    try:
        trio.run(main)
    finally:
        p2p_mod._LOCAL_PEER_IDS.discard(me)


async def test_watchdog_closes_wedged_connections_but_not_for_its_own_starvation(
        mock_clock: Any) -> None:
    """A queue that stops moving while this process runs is a wedged connection; a queue
    that did not move because this process itself did not run (CPU-starved) is not."""
    from types import SimpleNamespace

    from trio.testing import MockClock, wait_all_tasks_blocked

    closed: list[str] = []

    async def close(peer: str | None = None) -> None:
        closed.append(str(peer))

    def node(q: Any) -> Any:
        return SimpleNamespace(cfg=SimpleNamespace(wedge_timeout_s=8),
                               pubsub=SimpleNamespace(peer_queues={"peerA": q}),
                               log=structlog.get_logger("test"), wedged_connections=0,
                               _close_leftover_connections=close)

    async def scenario(clock: MockClock, starve: bool) -> list[str]:
        closed.clear()
        q = SimpleNamespace(pending_since=None, _queue=[1])
        n = node(q)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(P2PNode._watchdog, n)
            await wait_all_tasks_blocked()
            q.pending_since = trio.current_time()  # an RPC waits from now on
            if starve:
                clock.jump(20)  # the whole process was descheduled for 20 s
                await wait_all_tasks_blocked()
                assert closed == []
            for _ in range(8):  # then 16 s in which this process runs and the queue does not
                clock.jump(2)
                await wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
        return list(closed)

    assert await scenario(mock_clock, starve=False) == ["peerA"]
    assert await scenario(mock_clock, starve=True) == ["peerA"]  # later, once really stalled

