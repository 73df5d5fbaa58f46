"""Prometheus metrics of one node (a registry per node, so in-process testnets don't mix)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class NodeMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        ns = "fedledger"
        self.height = Gauge("height", "Latest committed block height", namespace=ns,
                            subsystem="consensus", registry=r)
        self.round = Gauge("round", "Current consensus round", namespace=ns,
                           subsystem="consensus", registry=r)
        self.block_interval = Histogram(
            "block_interval_seconds", "Time between consecutive blocks", namespace=ns,
            subsystem="consensus", registry=r,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30))
        self.peers = Gauge("peers", "Connected libp2p peers", namespace=ns, subsystem="p2p",
                           registry=r)
        self.gossip_received = Counter("gossip_received", "Gossip messages delivered",
                                       ["topic"], namespace=ns, subsystem="p2p", registry=r)
        self.gossip_rejected = Counter("gossip_rejected", "Gossip messages rejected",
                                       ["topic"], namespace=ns, subsystem="p2p", registry=r)
        self.peer_penalties = Counter("peer_penalties", "Penalties given to peers",
                                      namespace=ns, subsystem="p2p", registry=r)
        self.mempool_size = Gauge("size", "Transactions in the mempool", namespace=ns,
                                  subsystem="mempool", registry=r)
        self.mempool_rejected = Counter("rejected", "CheckTx rejections", ["reason"],
                                        namespace=ns, subsystem="mempool", registry=r)
        self.bytes_exchanged = Counter("bytes", "Content bytes moved", ["direction"],
                                       namespace=ns, subsystem="exchange", registry=r)
        self.fl_round_seconds = Histogram(
            "round_seconds", "Wall time of FL rounds", namespace=ns, subsystem="fl", registry=r,
            buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600))
        self.pol_verify_seconds = Histogram(
            "pol_verify_seconds", "PoL verification time per update", namespace=ns,
            subsystem="fl", registry=r, buckets=(0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30))
        self.rpc_requests = Counter("requests", "RPC requests", namespace=ns, subsystem="rpc",
                                    registry=r)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
