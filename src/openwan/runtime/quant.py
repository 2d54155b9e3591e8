"""Quantization of the DiT blocks' linears, applied from outside: ``apply_quant(model, mode)``.

- ``int8``: weights int8 per output channel, activations int8 per token, computed at run time
  (dynamic), the GEMM in ``torch._int_mm`` (VNNI/AMX on CPU, tensor cores on CUDA) and the
  int32 result rescaled in fp32. torchao 0.18's ``Int8DynamicActivationInt8WeightConfig`` is
  also usable (``backend="torchao"``), but in eager mode on CPU it is slower than bf16 (its
  quantize / rescale steps are separate unfused kernels, built to be fused by torch.compile;
  ``benchmarks/bench_quant.py`` measures both), so the native path is the default.
- ``fp8``: torchao float8 (dynamic activation + weight) on CUDA GPUs of compute capability
  8.9 or higher; refused elsewhere.

Only the linears inside ``model.blocks`` change: the embeddings, the time MLP and the head
stay in their fp32 islands. The quantized module declares its ``compute_dtype`` (what the DiT
casts its input to) and keeps a ``weight`` property (the dequantized weight) so code that reads
a weight's value stays correct; the forward never materialises it.
"""

from __future__ import annotations

import importlib.util

import torch
from torch import nn

from openwan.models.dit import WanModel

MODES = ("none", "int8", "fp8")


class Int8Linear(nn.Module):
    """``y = x W^T + b`` with int8 W (per-row scale) and int8 dynamic per-token activations."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        w = linear.weight.detach().float()
        scale = w.abs().amax(dim=1).clamp_min(1e-12) / 127.0  # [out]
        self.register_buffer("qweight", torch.round(w / scale[:, None]).to(torch.int8))
        self.register_buffer("weight_scale", scale)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().float())
        self.compute_dtype = linear.weight.dtype
        self.in_features, self.out_features = linear.in_features, linear.out_features

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized weight (what the int8 GEMM multiplies by)."""
        return (self.qweight.float() * self.weight_scale[:, None]).to(self.compute_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)  # [M, K]
        scale = rows.abs().amax(dim=1, keepdim=True).float().clamp_min(1e-12) / 127.0  # [M, 1]
        q = torch.round(rows / scale.to(rows.dtype)).to(torch.int8)
        acc = torch._int_mm(q, self.qweight.t())  # [M, N] int32
        out = acc.float().mul_(scale).mul_(self.weight_scale)
        if self.bias is not None:
            out.add_(self.bias)
        return out.to(x.dtype).reshape(*x.shape[:-1], self.out_features)


def _block_linears(model: WanModel) -> list[tuple[nn.Module, str, nn.Linear]]:
    found = []
    for block in model.blocks:
        for parent in block.modules():
            for name, child in parent.named_children():
                if isinstance(child, nn.Linear):
                    found.append((parent, name, child))
    return found


def apply_quant(
    model: WanModel,
    mode: str,
    *,
    backend: str = "native",
    device: str | torch.device | None = None,
) -> WanModel:
    """Quantize ``model``'s block linears in place (``mode`` none|int8|fp8); returns the model.

    ``device`` is where the model will run (default: where its weights are now).
    """
    if mode not in MODES:
        raise ValueError(f"unknown quantization {mode!r}; use one of {', '.join(MODES)}")
    if backend not in ("native", "torchao"):
        raise ValueError(f"unknown quantization backend {backend!r}; use native or torchao")
    if mode == "none":
        return model
    if mode == "fp8":
        _check_fp8(torch.device(device) if device is not None else next(model.parameters()).device)
        return _torchao(model, "fp8")
    if backend == "torchao":
        return _torchao(model, "int8")
    for parent, name, linear in _block_linears(model):
        setattr(parent, name, Int8Linear(linear))  # module conversion, as torchao's quantize_
    return model


def _check_fp8(device: torch.device) -> None:
    if device.type != "cuda":
        raise ValueError(
            "--quant fp8 needs a CUDA GPU with FP8 tensor cores (compute capability >= 8.9, "
            f"e.g. L4/L40/H100); the model is on {device}. Use --quant int8 instead"
        )
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) < (8, 9):
        raise ValueError(
            f"--quant fp8 needs compute capability >= 8.9; this GPU has {major}.{minor}. "
            "Use --quant int8 instead"
        )


def _torchao(model: WanModel, mode: str) -> WanModel:
    if importlib.util.find_spec("torchao") is None:
        raise ValueError(f"--quant {mode} with torchao needs `pip install torchao`")
    from torchao.quantization import (
        Float8DynamicActivationFloat8WeightConfig,
        Int8DynamicActivationInt8WeightConfig,
        quantize_,
    )

    config = (
        Float8DynamicActivationFloat8WeightConfig()
        if mode == "fp8"
        else Int8DynamicActivationInt8WeightConfig()
    )
    for block in model.blocks:
        quantize_(block, config)
    return model
