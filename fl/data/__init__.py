"""Datasets, splits, client partitions and data commitments."""

from fl.data.commitment import (
    SAMPLE_DOMAIN,
    data_commitment,
    sample_hash,
    sample_hashes,
    sample_proof,
    verify_sample,
)
from fl.data.dataset import Dataset, DatasetError, split
from fl.data.loaders import load_cifar10, load_digits, load_mnist, read_idx
from fl.data.partition import dirichlet, iid, shards

__all__ = [
    "SAMPLE_DOMAIN",
    "Dataset",
    "DatasetError",
    "data_commitment",
    "dirichlet",
    "iid",
    "load_cifar10",
    "load_digits",
    "load_dataset",
    "load_mnist",
    "read_idx",
    "sample_hash",
    "sample_hashes",
    "sample_proof",
    "shards",
    "split",
    "verify_sample",
]


def load_dataset(name: str, data_dir: str | None = None) -> Dataset:
    """Load ``digits`` (embedded), ``mnist`` or ``cifar10`` (from ``data_dir``) by name."""
    if name == "digits":
        return load_digits()
    if data_dir is None:
        raise DatasetError(f"dataset {name!r} needs a data directory")
    if name == "mnist":
        return load_mnist(data_dir)
    if name == "cifar10":
        return load_cifar10(data_dir)
    raise DatasetError(f"unknown dataset {name!r} (digits, mnist, cifar10)")
