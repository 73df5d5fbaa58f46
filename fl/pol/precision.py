"""Full float32 on CUDA while recording or replaying: TF32 rounding would break replay tolerance."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["full_fp32"]


@contextmanager
def full_fp32() -> Iterator[None]:
    """Disable TF32 for cuBLAS and cuDNN in the scope and restore the previous settings.

    cuDNN convolutions default to TF32 on Ampere and later GPUs: 10-bit mantissas whose
    rounding, amplified over k steps, moved a replayed segment by 2-6 % in the calibration
    (benchmarks/pol.py), beyond the 1 % tolerance. On CPU these flags change nothing.
    """
    prev = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = prev
