"""deploy/: the compose testnet agrees with what `fedledger testnet` generates.

No container runtime runs on the build machines, so this checks the files instead:
every service's command, home, ports and the bootstrap peers of its home.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from node.home import make_testnet

ROOT = Path(__file__).resolve().parent.parent


def test_compose_matches_generated_testnet(tmp_path: Path) -> None:
    compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())
    services = compose["services"]
    # The command the compose file's header tells the operator to run.
    nodes = make_testnet(tmp_path / "testnet", 4, base_port=26656)
    assert sorted(services) == [n.name for n in nodes]
    by_port = {n.p2p_port: n for n in nodes}
    for n in nodes:
        svc = services[n.name]
        assert svc["network_mode"] == "host"  # the homes advertise 127.0.0.1 multiaddrs
        assert svc["command"][:4] == ["node", "run", "--home", f"/homes/{n.name}"]
        assert svc["volumes"] == [f"./testnet/{n.name}:/homes/{n.name}"]
        cfg = n.home.load_config()
        meta = svc["x-fedledger"]
        assert cfg.p2p.listen == [f"/ip4/127.0.0.1/tcp/{meta['p2p_port']}"]
        assert cfg.rpc.laddr == f"127.0.0.1:{meta['rpc_port']}"
        assert f"127.0.0.1:{meta['rpc_port']}/health" in " ".join(svc["healthcheck"]["test"])
        # Bootstrap peers are exactly the other (validator) services, by port and peer id.
        peers = set()
        for addr in cfg.p2p.bootstrap:
            parts = addr.split("/")
            port, peer_id = int(parts[4]), parts[6]
            assert by_port[port].peer_id == peer_id
            peers.add(by_port[port].name)
        assert peers == {o.name for o in nodes if o is not n}


def test_dockerfile_and_units_run_the_cli() -> None:
    docker = (ROOT / "deploy" / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["fedledger"]' in docker and "EXPOSE 26656 26657" in docker
    unit = (ROOT / "deploy" / "systemd" / "fedledger.service").read_text()
    assert "fedledger node run --home" in unit and "KillSignal=SIGTERM" in unit
    k8s = list(yaml.safe_load_all((ROOT / "deploy" / "k8s" / "statefulset.yaml").read_text()))
    assert {d["kind"] for d in k8s} == {"Service", "StatefulSet"}
