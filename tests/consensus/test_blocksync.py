"""Block sync's round-messages request: a stalled node gets a round's messages over a stream."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from consensus.blocksync import (
    BlockSyncer,
    BlockSyncServer,
    RoundMessages,
    RoundMessagesRequest,
)


class _Stream:
    """The libp2p stream surface block sync uses, over one side of a trio memory pair."""

    def __init__(self, s: trio.testing.MemorySendStream | Any) -> None:
        self.s = s

    async def write(self, data: bytes) -> None:
        await self.s.send_all(data)

    async def read(self, n: int) -> bytes:
        return bytes(await self.s.receive_some(n))

    async def close(self) -> None:
        await self.s.aclose()

    async def reset(self) -> None:
        await self.s.aclose()


class _Net:
    """Peers that each run a BlockSyncServer; streams are in-memory pairs."""

    def __init__(self, nursery: trio.Nursery, servers: dict[str, BlockSyncServer]) -> None:
        self.nursery, self.servers = nursery, servers
        self.penalties: list[str] = []

    def connected_peers(self) -> list[str]:
        return sorted(self.servers)

    async def new_stream(self, peer_id: str, protocol: str) -> Any:
        client, server = trio.testing.memory_stream_pair()
        self.nursery.start_soon(self.servers[peer_id].handle, _Stream(server))
        return _Stream(client)

    def penalize(self, peer: str, points: int, reason: str) -> None:
        self.penalties.append(peer)


def _server(held: dict[tuple[int, int], list[bytes]] | None) -> BlockSyncServer:
    cb = (
        (lambda h, r, p: held.get((h, r), []) + ([b"proposal"] if p else []))
        if held is not None
        else None
    )
    return BlockSyncServer(None, lambda: 5, cb)  # type: ignore[arg-type]


def test_server_answers_with_what_the_driver_holds() -> None:
    server = _server({(6, 2): [b"vote-a", b"vote-b"]})
    assert server.answer(RoundMessagesRequest(6, 2, False)) == RoundMessages(
        6, (b"vote-a", b"vote-b")
    )
    assert server.answer(RoundMessagesRequest(6, 2, True)) == RoundMessages(
        6, (b"vote-a", b"vote-b", b"proposal")
    )
    assert server.answer(RoundMessagesRequest(6, 3, False)) == RoundMessages(6, ())
    # a node without a driver (or an older one) answers with nothing, never an error
    assert _server(None).answer(RoundMessagesRequest(6, 2, True)) == RoundMessages(6, ())


async def test_fetch_asks_every_peer_and_stops_reading_a_liar(nursery: trio.Nursery) -> None:
    # Prepare: two honest peers and one whose first payload the taker rejects
    net = _Net(
        nursery,
        {
            "p1": _server({(6, 1): [b"v1", b"v2"]}),
            "p2": _server({(6, 1): [b"v2", b"v3"]}),
            "liar": _server({(6, 1): [b"forged", b"v4"]}),
        },
    )
    syncer = BlockSyncer(net, lambda: 5, None, None)  # type: ignore[arg-type]
    seen: list[tuple[str, bytes]] = []

    async def take(peer: str, payload: bytes) -> bool:
        seen.append((peer, payload))
        return payload != b"forged"

    # Execute
    with trio.fail_after(5):
        n = await syncer.fetch_round_messages(6, 1, False, take)
    # Assert: everything the honest peers hold, nothing after the liar's bad message
    assert sorted(seen) == [
        ("liar", b"forged"),
        ("p1", b"v1"),
        ("p1", b"v2"),
        ("p2", b"v2"),
        ("p2", b"v3"),
    ]
    assert n == 5


async def test_fetch_gives_up_on_a_silent_peer(nursery: trio.Nursery, autojump_clock: Any) -> None:
    class Silent(BlockSyncServer):
        async def handle(self, stream: Any) -> None:
            await trio.sleep_forever()

    net = _Net(nursery, {"quiet": Silent(None, lambda: 5), "p1": _server({(2, 0): [b"v"]})})  # type: ignore[arg-type]
    syncer = BlockSyncer(net, lambda: 1, None, None)  # type: ignore[arg-type]
    got: list[bytes] = []

    async def take(peer: str, payload: bytes) -> bool:
        got.append(payload)
        return True

    with trio.fail_after(30):  # virtual time: the autojump clock skips the 5 s wait
        await syncer.fetch_round_messages(2, 0, False, take, timeout_s=5)
    assert got == [b"v"]


def test_proposals_are_resent_by_gossip_only_where_peers_cannot_fetch_them() -> None:
    """A stalled driver's gossip re-sends (and catch-up answers) carry its votes; its
    proposal, block and all, goes only to peers that ask over a stream - unless there is
    no stream fetch (then gossip is the only way)."""
    from consensus.driver import ConsensusDriver
    from consensus.messages import ProposalMessage, VoteMessage

    d = ConsensusDriver.__new__(ConsensusDriver)
    prop, vote = ProposalMessage.__new__(ProposalMessage), VoteMessage.__new__(VoteMessage)

    async def fetch(height: int, round_: int, proposals: bool) -> None:
        return None

    d.fetch_round = fetch
    assert d._resend_by_gossip(vote) and not d._resend_by_gossip(prop)
    d.fetch_round = None
    assert d._resend_by_gossip(vote) and d._resend_by_gossip(prop)


def test_catchup_requests_are_answered_but_not_relayed() -> None:
    """The consensus topic's validator hands a catch-up request to the driver and returns
    ignore (so py-libp2p does not forward it); other accepted messages are relayed."""
    from types import SimpleNamespace

    from consensus.driver import Checked, Verdict
    from consensus.messages import CatchupRequest, VoteMessage
    from node.consensus_service import ConsensusService
    from node.p2p import Verdict as GossipVerdict

    handed: list[Any] = []
    msg: Any = CatchupRequest(5, 1)
    driver = SimpleNamespace(check=lambda data: Checked(Verdict.ACCEPT, message=msg),
                             deliver_nowait=handed.append)
    svc: Any = SimpleNamespace(driver=driver)
    v = ConsensusService.validate_consensus(svc, "peer", b"")
    assert v.verdict is GossipVerdict.IGNORE and [c.message for c in handed] == [msg]
    msg = VoteMessage.__new__(VoteMessage)
    assert ConsensusService.validate_consensus(svc, "peer", b"").verdict is GossipVerdict.ACCEPT
    assert len(handed) == 1
