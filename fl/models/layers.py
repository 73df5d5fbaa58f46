"""A Conv2d that can convolve as unfold + GEMM on CUDA, for replays that must match other devices."""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["Conv2d", "gemm_conv2d", "gemm_convolutions"]

# Off by default: cuDNN is faster. fl.pol.precision.full_fp32 turns it on while a PoL
# transcript is recorded or replayed (docs/pol.md, "Precision across devices").
_GEMM = contextvars.ContextVar("fedledger_gemm_convolutions", default=False)


@contextmanager
def gemm_convolutions(enabled: bool = True) -> Iterator[None]:
    """In this scope the registry's conv layers convolve on CUDA as unfold + fp32 GEMM."""
    token = _GEMM.set(enabled)
    try:
        yield
    finally:
        _GEMM.reset(token)


def gemm_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> torch.Tensor:
    """``F.conv2d`` (groups=1, zero padding) as im2col and one batched matrix product.

    cuDNN's fp32 convolution algorithms round differently enough from a CPU convolution
    that a 32-step replay of the MNIST CNN drifted 1.3 % (H100/H200, cuDNN 9, TF32 off);
    a GEMM's rounding is that of the dense layers, 5e-7. torch's own non-cuDNN CUDA
    convolution is exact too but loops over the batch (6x slower than cuDNN here).
    """
    n, _, h, w = x.shape
    out_c, _, kh, kw = weight.shape
    cols = F.unfold(x, (kh, kw), dilation=dilation, padding=padding, stride=stride)
    out = weight.reshape(out_c, -1) @ cols  # (N, out_c, L)
    if bias is not None:
        out = out + bias.reshape(1, out_c, 1)
    oh = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    return out.reshape(n, out_c, oh, ow)


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` (same parameters, same state dict) with the GEMM path under the switch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            _GEMM.get()
            and x.is_cuda
            and self.groups == 1
            and self.padding_mode == "zeros"
            and isinstance(self.padding, tuple)
        ):
            return gemm_conv2d(
                x,
                self.weight,
                self.bias,
                self.stride,  # type: ignore[arg-type]
                self.padding,  # type: ignore[arg-type]
                self.dilation,  # type: ignore[arg-type]
            )
        return super().forward(x)
