"""Quantization of the DiT blocks' linears, applied from outside: ``apply_quant(model, mode)``.

- ``int8``: weights int8 per output channel, activations int8 per token, computed at run time
  (dynamic), the int32 result rescaled in fp32. The GEMM runs where the tensor lives:
  - on CPU, in PyTorch's x86 quantized engine (FBGEMM / oneDNN: ``quantized::linear_dynamic``
    on prepacked weights), which has int8 kernels for plain AVX2 as well as VNNI/AMX. Each row
    is first divided by its own absolute maximum, so the engine's per-tensor activation
    quantization acts per token; the row scale is multiplied back into the output. The engine
    uses 7 bits of activation range (``reduce_range``), which keeps AVX2's 16-bit pairwise
    accumulation from saturating;
  - on CUDA, in ``torch._int_mm`` (int8 tensor cores) with symmetric per-token activations.
  ``torch._int_mm`` is also the CPU fallback where no quantized engine is built in; it is fast
  only on CPUs with VNNI/AMX (on plain AVX2 it is a reference loop, ~100x slower than fp32).
  torchao 0.18's ``Int8DynamicActivationInt8WeightConfig`` is also usable
  (``backend="torchao"``), but in eager mode on CPU it is slower than fp32 (its quantize /
  rescale steps are separate unfused kernels, built to be fused by torch.compile;
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
import warnings

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
        self.cpu_kernel = True  # False: always torch._int_mm (tests compare the two kernels)
        self._packed: tuple[str, object] | None = None

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized weight (what the int8 GEMM multiplies by)."""
        return (self.qweight.float() * self.weight_scale[:, None]).to(self.compute_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)  # [M, K]
        packed = self._cpu_packed() if rows.device.type == "cpu" else None
        if packed is not None:
            # per-token scaling around the engine's per-tensor dynamic quantization
            rows = rows.float()
            row_max = rows.abs().amax(dim=1, keepdim=True).clamp_min(1e-12)  # [M, 1]
            unit = rows / row_max
            out = torch.ops.quantized.linear_dynamic(unit, packed, True).mul_(row_max)
        else:
            scale = rows.abs().amax(dim=1, keepdim=True).float().clamp_min(1e-12) / 127.0
            q = torch.round(rows / scale.to(rows.dtype)).to(torch.int8)
            acc = torch._int_mm(q, self.qweight.t())  # [M, N] int32
            out = acc.float().mul_(scale).mul_(self.weight_scale)
        if self.bias is not None:
            out.add_(self.bias)
        return out.to(x.dtype).reshape(*x.shape[:-1], self.out_features)

    def _cpu_packed(self) -> object | None:
        """The weights prepacked for the CPU quantized engine (built once), or None if absent."""
        engine = torch.backends.quantized.engine
        if not self.cpu_kernel or self.qweight.device.type != "cpu" or engine == "none":
            return None
        if self._packed is None or self._packed[0] != engine:
            zero = torch.zeros(self.out_features, dtype=torch.long)
            try:
                with warnings.catch_warnings():  # quantized tensors are deprecated in PyTorch
                    warnings.simplefilter("ignore")
                    qw = torch._make_per_channel_quantized_tensor(
                        self.qweight, self.weight_scale.double(), zero, 0
                    )
                    self._packed = (engine, torch.ops.quantized.linear_prepack(qw, None))
            except (RuntimeError, AttributeError):  # a build without the engine's kernels
                self.cpu_kernel = False
                return None
        return self._packed[1]


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
        model = _torchao(model, "fp8")
    elif backend == "torchao":
        model = _torchao(model, "int8")
    else:
        for parent, name, linear in _block_linears(model):
            setattr(parent, name, Int8Linear(linear))  # module conversion, as torchao's quantize_
    # what the model now computes with (S2V's resume fingerprint reads it)
    setattr(model, "quant_mode", mode)  # noqa: B010 (not a WanModel field)
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
