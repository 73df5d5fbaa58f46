"""Full float32 on CUDA while recording or replaying: no TF32, convolutions as exact GEMMs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from fl.models.layers import gemm_convolutions

__all__ = ["full_fp32"]


@contextmanager
def full_fp32() -> Iterator[None]:
    """TF32 off (cuBLAS, cuDNN), convolutions as unfold + GEMM, cuDNN off; restored after.

    A replay must land within 1 % of the recorded step also when the validator's device
    differs from the trainer's, and validators on different devices must reach the same
    verdict. Measured on H100/H200 (torch 2.11, cuDNN 9; docs/BENCHMARKS.md): a CUDA-trained
    MNIST CNN replayed on CPU was 12 % off after 32 steps with TF32 on and still 1.3 % off
    with TF32 off, because cuDNN's fp32 convolution algorithms round differently; the MLP
    (cuBLAS only) and the CNN with its convolutions as GEMMs were 5e-7 off. cuDNN stays off
    in the scope so that a layer without a GEMM path falls back to torch's exact (slower)
    kernels rather than to cuDNN. On CPU nothing changes.
    """
    prev = (
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.backends.cudnn.enabled,
    )
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.enabled = False
    try:
        with gemm_convolutions():
            yield
    finally:
        (
            torch.backends.cuda.matmul.allow_tf32,
            torch.backends.cudnn.allow_tf32,
            torch.backends.cudnn.enabled,
        ) = prev
