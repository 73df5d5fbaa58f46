"""`make_testnet`'s gossip topology: validators direct among themselves, full nodes on the mesh."""

from __future__ import annotations

from pathlib import Path

from node.home import make_testnet


def test_validators_are_direct_peers_and_full_nodes_join_them_through_the_mesh(
        tmp_path: Path) -> None:
    # Prepare / Execute
    nodes = make_testnet(tmp_path / "tn", 3, 2, base_port=30000)
    validators = {n.multiaddr for n in nodes if n.validator}
    # Assert
    assert [n.validator for n in nodes] == [True, True, True, False, False]
    for n in nodes:
        p2p = n.home.load_config().p2p
        assert set(p2p.bootstrap) == validators - {n.multiaddr}, n.name
        # a full node as a direct peer would be sent every message by every validator,
        # and every message would cross n(n-1) links (ADR 0005)
        assert p2p.direct_bootstrap is n.validator, n.name
