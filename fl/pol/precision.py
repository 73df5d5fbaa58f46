"""Full float32 on CUDA while recording or replaying: no TF32, convolutions as exact GEMMs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from fl.models.layers import gemm_convolutions

__all__ = ["cuda_math", "full_fp32"]


@contextmanager
def cuda_math(tf32: bool, cudnn: bool, gemm_conv: bool = False) -> Iterator[None]:
    """TF32 (cuBLAS and cuDNN), cuDNN itself and the registry's GEMM convolutions on or off
    in the scope; the previous settings are restored after. On CPU nothing changes."""
    b = torch.backends
    prev = (b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32, b.cudnn.enabled)
    b.cuda.matmul.allow_tf32 = b.cudnn.allow_tf32 = tf32
    b.cudnn.enabled = cudnn
    try:
        with gemm_convolutions(gemm_conv):
            yield
    finally:
        b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32, b.cudnn.enabled = prev


@contextmanager
def full_fp32() -> Iterator[None]:
    """TF32 off, convolutions as unfold + GEMM, cuDNN off: how PoL records and replays.

    A replay must land within 1 % of the recorded step also when the validator's device
    differs from the trainer's, and validators on different devices must reach the same
    verdict. Measured on H100/H200 (torch 2.11, cuDNN 9; docs/BENCHMARKS.md): a CUDA-trained
    MNIST CNN replayed on CPU was 12 % off after 32 steps with TF32 on and still 1.3 % off
    with TF32 off, because cuDNN's fp32 convolution algorithms round differently; the MLP
    (cuBLAS only) and the CNN with its convolutions as GEMMs were 5e-7 off. cuDNN stays off
    in the scope so that a layer without a GEMM path falls back to torch's exact (slower)
    kernels rather than to cuDNN. On CPU nothing changes.
    """
    with cuda_math(tf32=False, cudnn=False, gemm_conv=True):
        yield
