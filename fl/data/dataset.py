"""The in-memory `Dataset` type shared by loaders, partitioners, training and commitments."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import numpy.typing as npt

__all__ = ["Dataset", "DatasetError", "split"]


class DatasetError(ValueError):
    """A data file is missing, truncated, corrupt or not in the expected format."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """Features ``x`` (float32, ``(n, *sample_shape)``) and labels ``y`` (int64, ``(n,)``).

    Images are channel-first (``(n, C, H, W)``) with pixel values scaled to [0, 1].
    """

    name: str
    x: npt.NDArray[np.float32]
    y: npt.NDArray[np.int64]
    num_classes: int

    def __post_init__(self) -> None:
        if self.x.dtype != np.float32:
            raise DatasetError(f"{self.name}: features must be float32, got {self.x.dtype}")
        if self.y.dtype != np.int64:
            raise DatasetError(f"{self.name}: labels must be int64, got {self.y.dtype}")
        if self.y.ndim != 1 or self.x.shape[:1] != self.y.shape:
            raise DatasetError(
                f"{self.name}: {self.x.shape[0] if self.x.ndim else 0} samples "
                f"but labels of shape {self.y.shape}"
            )
        if len(self.y) and (int(self.y.min()) < 0 or int(self.y.max()) >= self.num_classes):
            raise DatasetError(f"{self.name}: label outside 0..{self.num_classes - 1}")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x.shape[1:])

    def subset(self, indices: npt.ArrayLike, name: str | None = None) -> Dataset:
        """The samples at ``indices``, in that order (a copy)."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.ndim != 1:
            raise DatasetError("subset indices must be one-dimensional")
        if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= len(self)):
            raise DatasetError(f"subset index out of range for {len(self)} samples")
        return Dataset(name or self.name, self.x[idx], self.y[idx], self.num_classes)

    def label_counts(self) -> npt.NDArray[np.int64]:
        return np.bincount(self.y, minlength=self.num_classes).astype(np.int64)


def _fraction(value: float | str | Fraction) -> Fraction:
    # Going through str() makes 0.2 mean exactly 1/5, not the nearest binary float.
    return value if isinstance(value, Fraction) else Fraction(str(value))


def split(
    dataset: Dataset, test_fraction: float | str | Fraction, seed: int
) -> tuple[Dataset, Dataset]:
    """Seeded random train/test split; the test part has round(n * test_fraction) samples."""
    frac = _fraction(test_fraction)
    if not 0 <= frac < 1:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    n = len(dataset)
    n_test = int(frac * n + Fraction(1, 2))
    perm = np.random.Generator(np.random.PCG64(seed)).permutation(n)
    test_idx = np.sort(perm[:n_test])
    train_idx = np.sort(perm[n_test:])
    return (
        dataset.subset(train_idx, f"{dataset.name}-train"),
        dataset.subset(test_idx, f"{dataset.name}-test"),
    )
