"""Seeded client partitioners: IID, Dirichlet(alpha) over labels, and k label-sorted shards.

Each returns one sorted int64 index array per client; together they cover every
sample exactly once. Seeds drive numpy's PCG64 generator, so a partition is
reproducible for a given numpy version (partitions are simulation inputs, never
consensus data).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["dirichlet", "iid", "shards"]

Partition = list[npt.NDArray[np.int64]]


def _check(n: int, num_clients: int) -> None:
    if num_clients < 1:
        raise ValueError("num_clients must be at least 1")
    if n < num_clients:
        raise ValueError(f"{n} samples cannot give each of {num_clients} clients one")


def iid(n_samples: int, num_clients: int, seed: int) -> Partition:
    """A uniform random split into near-equal parts (sizes differ by at most one)."""
    _check(n_samples, num_clients)
    perm = np.random.Generator(np.random.PCG64(seed)).permutation(n_samples)
    return [np.sort(p).astype(np.int64) for p in np.array_split(perm, num_clients)]


def dirichlet(
    labels: npt.ArrayLike,
    num_clients: int,
    alpha: float,
    seed: int,
    min_size: int = 2,
    max_tries: int = 1000,
) -> Partition:
    """Label-skewed split (Hsu et al. 2019): each class is spread over clients by Dir(alpha).

    Small alpha gives each client few classes. Draws are repeated (same generator)
    until every client holds at least ``min_size`` samples, as in common FL benchmarks.
    """
    y = np.asarray(labels, dtype=np.int64)
    _check(len(y), num_clients)
    if alpha <= 0:
        raise ValueError("alpha must be positive")
    if min_size * num_clients > len(y):
        raise ValueError(f"min_size {min_size} x {num_clients} clients exceeds {len(y)} samples")
    rng = np.random.Generator(np.random.PCG64(seed))
    classes = np.unique(y)
    for _ in range(max_tries):
        buckets: list[list[npt.NDArray[np.int64]]] = [[] for _ in range(num_clients)]
        for c in classes:
            idx = np.flatnonzero(y == c)
            rng.shuffle(idx)
            props = rng.dirichlet(np.full(num_clients, alpha))
            cuts = (np.cumsum(props)[:-1] * len(idx)).astype(np.int64)
            for client, part in enumerate(np.split(idx, cuts)):
                buckets[client].append(part)
        parts = [np.sort(np.concatenate(b)).astype(np.int64) for b in buckets]
        if min(len(p) for p in parts) >= min_size:
            return parts
    raise ValueError(f"no Dirichlet({alpha}) draw gave every client {min_size} samples")


def shards(labels: npt.ArrayLike, num_clients: int, k: int, seed: int) -> Partition:
    """McMahan et al. (2017): sort by label, cut into ``num_clients * k`` shards, deal k to each."""
    y = np.asarray(labels, dtype=np.int64)
    _check(len(y), num_clients * k)
    if k < 1:
        raise ValueError("k must be at least 1")
    order = np.argsort(y, kind="stable")
    pieces = np.array_split(order, num_clients * k)
    deal = np.random.Generator(np.random.PCG64(seed)).permutation(num_clients * k)
    return [
        np.sort(np.concatenate([pieces[s] for s in deal[c * k : (c + 1) * k]])).astype(np.int64)
        for c in range(num_clients)
    ]
