"""When an op may call a oneDNN kernel directly (the linear and convolution leaves share it)."""

from __future__ import annotations

import functools

import torch
from torch import nn

_PLAIN = (torch.Tensor, nn.Parameter)


def eligible(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """CPU inference on plain fp32/bf16 tensors of one dtype, and oneDNN in this torch build.

    Tensor subclasses (e.g. torchao quantized weights) dispatch through ``F.*`` instead, and
    anything autograd must differentiate too: the direct oneDNN ops have no autograd formulas.
    """
    if x.device.type != "cpu" or not _fast_dtype(x.dtype) or weight.dtype != x.dtype:
        return False
    if type(weight) not in _PLAIN or type(x) not in _PLAIN:
        return False
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return False
    if torch.compiler.is_compiling():  # inductor picks its own GEMM (it cannot lower this op
        return False  # on weights it did not prepack itself)
    return bool(torch.backends.mkldnn.is_available())


def trainable(*tensors: torch.Tensor) -> bool:
    """Plain CPU fp32/bf16 tensors of one dtype outside autocast: an op with a hand-written
    backward (the linear leaf's autograd Function) may run oneDNN on them."""
    dtype = tensors[0].dtype
    if not _fast_dtype(dtype) or torch.is_autocast_enabled("cpu"):
        return False
    for t in tensors:
        if t.device.type != "cpu" or t.dtype != dtype or type(t) not in _PLAIN:
            return False
    return bool(torch.backends.mkldnn.is_available())


def _fast_dtype(dtype: torch.dtype) -> bool:
    """fp32, or bf16 where this CPU has oneDNN's bf16 kernels."""
    return dtype == torch.float32 or (dtype == torch.bfloat16 and bf16_kernels())


@functools.cache
def bf16_kernels() -> bool:
    """oneDNN has bf16 kernels on this CPU (AVX512-BF16 / AMX / AVX2-VNNI-class hardware).

    Without them oneDNN refuses to build bf16 primitives ("could not create a primitive
    descriptor"), e.g. on AVX2-only AMD Zen 3; bf16 then takes aten's own kernels.
    """
    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(probe is not None and probe())


@functools.cache
def has_linear_kernel() -> bool:
    """oneDNN's linear op is in this torch build (checked once, at first use)."""
    return hasattr(torch.ops.mkldnn, "_linear_pointwise")


def linear_op(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, gelu_tanh: bool = False
) -> torch.Tensor:
    """oneDNN's ``x @ weight.T + bias`` on ``[..., K]`` x ``[N, K]`` (optionally with tanh-GELU)."""
    if gelu_tanh:
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "gelu", [], "tanh")
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
