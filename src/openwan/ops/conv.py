"""The convolution leaf of the VAE: CPU inference calls oneDNN directly, in channels-last layout.

``F.conv3d`` on CPU picks between oneDNN and a slow im2col path by heuristics (small frames land
on the slow path), and for ``[N, C, D, H, W]`` inputs oneDNN reorders every input and output to its
blocked layout. Calling ``torch.mkldnn_convolution`` on channels-last tensors avoids both: the
output stays channels-last, so a whole decode runs without layout reorders. The arithmetic is the
same convolution (summation order differs, ~1e-7 relative). Training and non-CPU tensors take
``F.conv2d`` / ``F.conv3d``.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from openwan.ops.onednn import eligible


@functools.cache
def _has_conv_kernel() -> bool:
    """oneDNN's convolution op is in this torch build (checked once, at first use)."""
    return hasattr(torch, "mkldnn_convolution")


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """The layout :func:`conv` is fastest in (a no-op when x already has it)."""
    fmt = torch.channels_last_3d if x.ndim == 5 else torch.channels_last
    return x.contiguous(memory_format=fmt)


def conv(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: tuple[int, ...],
    padding: tuple[int, ...],
) -> torch.Tensor:
    """2D or 3D convolution (by ``x.ndim``) with zero padding, dilation 1, one group."""
    if eligible(x, weight) and _has_conv_kernel():
        ones = (1,) * (x.ndim - 2)
        return torch.mkldnn_convolution(channels_last(x), weight, bias, padding, stride, ones, 1)
    op = F.conv3d if x.ndim == 5 else F.conv2d
    return op(x, weight, bias, stride, padding)


def channels_last_weights(module: nn.Module) -> nn.Module:
    """Store every conv weight channels-last, the layout oneDNN reads without a per-call copy.

    Only the memory layout changes: values, shapes and state-dict keys stay the same.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            m.weight.data = channels_last(m.weight.data)
    return module


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` (same parameters and keys) computed by :func:`conv`; zero padding only."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv(x, self.weight, self.bias, self.stride, self.padding)  # type: ignore[arg-type]
