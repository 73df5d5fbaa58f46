"""A trainer's local data: the configured data set, split and partitioned reproducibly.

Every node of a local testnet loads the same data set and takes its own part of the
training split (``trainer.partition_index`` of ``partition_count``, Dirichlet(alpha) label
skew, seed 0), so the parts are disjoint and non-IID. A real deployment points
``trainer.data_dir`` at the member's own data and sets ``partition_count = 1``.
"""

from __future__ import annotations

from fl.attacks import flip_labels
from fl.data import Dataset, dirichlet, iid, load_dataset, split
from node.config import TrainerConfig

TEST_FRACTION = "0.2"
SPLIT_SEED = 0


def train_test(name: str, data_dir: str | None) -> tuple[Dataset, Dataset]:
    """The seeded train/test split every node and client agrees on."""
    return split(load_dataset(name, data_dir or None), TEST_FRACTION, SPLIT_SEED)


def local_dataset(cfg: TrainerConfig) -> Dataset:
    """This trainer's part; with ``trainer.attack = "label_flip"`` (evaluation only) its labels
    are flipped, so it trains on poisoned data for real and its PoL transcript is genuine."""
    train, _ = train_test(cfg.dataset, cfg.data_dir)
    n = cfg.partition_count
    part = train
    if n > 1:
        if not 0 <= cfg.partition_index < n:
            raise ValueError(f"trainer.partition_index must be in 0..{n - 1}")
        if cfg.partition_alpha_milli <= 0:
            parts = iid(len(train), n, seed=SPLIT_SEED)
        else:
            parts = dirichlet(train.y, n, alpha=cfg.partition_alpha_milli / 1000, seed=SPLIT_SEED)
        part = train.subset(parts[cfg.partition_index])
    return flip_labels(part) if cfg.attack == "label_flip" else part
