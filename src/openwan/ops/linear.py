"""The linear leaf: every matrix multiply of the DiT goes through :func:`linear`.

On CPUs, inference runs the GEMM through oneDNN (``torch.ops.mkldnn._linear_pointwise``) rather
than aten's BLAS path. The result is the same fp32 product (different summation order, ~1e-7
relative), but oneDNN's AVX-512 kernels run at close to the core's FMA peak on every x86 CPU,
where MKL's sgemm falls back to a generic path on AMD CPUs (measured 2.1-2.3x slower here on an
AMD EPYC; see ``benchmarks/bench_dit.py``). oneDNN can also apply the tanh-GELU of the FFN inside
the GEMM, saving a full pass over the [L, ffn_dim] activations.

Training on the CPU runs the same kernels through :class:`_TrainLinear`, an autograd Function
whose backward is two more oneDNN GEMMs (``dx = dy W``, ``dW = dy^T x``). Non-CPU tensors,
autocast, tensor subclasses (FSDP2's DTensors, torchao) and code being traced by
``torch.compile`` (inductor then picks its own GEMM) take the plain ``F.linear`` path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from openwan.ops.onednn import eligible, has_linear_kernel, linear_op, trainable


def linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    gelu_tanh: bool = False,
) -> torch.Tensor:
    """``x @ weight.T + bias`` (optionally followed by tanh-approximated GELU) on ``[..., in]``."""
    if torch.compiler.is_compiling():
        # traced code: inductor picks its own GEMM (it cannot lower the oneDNN op on weights it
        # did not prepack, nor trace the Function); checked first, so dynamo never traces the
        # cached kernel probes either
        out = F.linear(x, weight, bias)
        return F.gelu(out, approximate="tanh") if gelu_tanh else out
    if eligible(x, weight) and has_linear_kernel():
        if bias is not None and bias.dtype != x.dtype:
            bias = bias.to(x.dtype)
        return linear_op(x, weight, bias, gelu_tanh)
    if has_linear_kernel() and trainable(x, weight, *([] if bias is None else [bias])):
        out = _TrainLinear.apply(x, weight, bias)
    else:
        out = F.linear(x, weight, bias)
    return F.gelu(out, approximate="tanh") if gelu_tanh else out


class _TrainLinear(torch.autograd.Function):
    """``x @ W^T + b`` with oneDNN GEMMs forward and backward (first-order gradients)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
    ) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None  # type: ignore[attr-defined]
        return linear_op(x, weight, bias)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors  # type: ignore[attr-defined]
        g = grad.reshape(-1, grad.shape[-1]).contiguous()  # [M, out]
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:  # type: ignore[attr-defined]
            gx = linear_op(g, weight.t().contiguous()).reshape(x.shape)  # dy W: [M, in]
        if ctx.needs_input_grad[1]:  # type: ignore[attr-defined]
            rows = x.reshape(-1, x.shape[-1])  # [M, in]
            gw = linear_op(g.t().contiguous(), rows.t().contiguous())  # dy^T x: [out, in]
        if ctx.has_bias and ctx.needs_input_grad[2]:  # type: ignore[attr-defined]
            gb = g.sum(0)
        return gx, gw, gb


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, same state-dict keys) computed by :func:`linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)


class GeluFFN(nn.Sequential):
    """``Linear -> GELU(tanh) -> Linear`` with the official ``nn.Sequential`` indices 0 and 2;
    the GELU runs fused into the first GEMM where :func:`linear` can."""

    def __init__(self, dim: int, hidden: int, out_dim: int | None = None) -> None:
        super().__init__(
            Linear(dim, hidden), nn.GELU(approximate="tanh"), Linear(hidden, out_dim or dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first, act, last = self[0], self[1], self[2]
        if isinstance(first, nn.Linear):
            return last(linear(x, first.weight, first.bias, gelu_tanh=True))
        return last(act(first(x)))  # a converted layer (e.g. int8) runs its own GEMM
