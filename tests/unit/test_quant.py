"""int8 quantization of the DiT blocks: the int8 GEMM equals its dequantized formula, only block
linears change, the model stays close to fp32, and fp8 is refused without a suitable GPU."""

import importlib.util
import warnings

import pytest
import torch
from torch import nn

from helpers.random_weights import randomize_, rel_err
from openwan.configs.dit import DiTConfig
from openwan.models.dit import WanModel
from openwan.runtime.quant import Int8Linear, apply_quant

CFG = DiTConfig(dim=64, ffn_dim=128, num_heads=2, num_layers=2, text_dim=16, text_len=32)


def model_and_inputs():
    model = randomize_(WanModel(CFG).eval(), seed=1, scale=0.1)
    g = torch.Generator().manual_seed(2)
    x, ctx = torch.randn(1, 16, 2, 8, 8, generator=g), [torch.randn(6, 16, generator=g)]
    return model, (x, torch.tensor([700.0]), ctx)


@torch.no_grad()
def test_int8_linear_is_the_dequantized_product():
    """Both kernels equal their formula: ``torch._int_mm`` with symmetric per-token int8 rows,
    and the CPU engine on rows divided by their own maximum (per-tensor uint8, 7-bit range)."""
    torch.manual_seed(0)
    lin = nn.Linear(48, 40)
    x = torch.randn(3, 17, 48) * torch.rand(3, 17, 1) * 5  # rows of different magnitude
    q = Int8Linear(lin)
    rows = x.reshape(-1, 48)
    wq = q.qweight.double() * q.weight_scale.double()[:, None]
    m = rows.abs().amax(1, keepdim=True)
    unit = rows / m
    with warnings.catch_warnings():  # PyTorch's quantized tensors are deprecated
        warnings.simplefilter("ignore")
        unit_q = torch.quantize_per_tensor_dynamic(unit, torch.quint8, True).dequantize()
    expected_cpu = (unit_q.double() @ wq.T) * m.double() + lin.bias.double()
    assert torch.allclose(q(x).double().reshape(-1, 40), expected_cpu, rtol=1e-5, atol=1e-5)
    s = m / 127
    xq = torch.round(rows / s).clamp(-127, 127)
    expected = (xq.double() * s.double()) @ wq.T + lin.bias.double()
    q.cpu_kernel = False
    assert torch.allclose(q(x).double().reshape(-1, 40), expected, rtol=1e-5, atol=1e-5)
    q.cpu_kernel = True
    assert rel_err(q(x), lin(x)) < 0.02  # int8 rounding of both operands
    assert torch.allclose(q.weight, lin.weight, atol=float(q.weight_scale.max()) / 2 + 1e-7)
    assert q.qweight.dtype == torch.int8 and q.weight.dtype == torch.float32


@torch.no_grad()
def test_apply_quant_converts_only_the_block_linears():
    model, args = model_and_inputs()
    ref = model(*args)
    apply_quant(model, "int8")
    kinds = {name: type(m).__name__ for name, m in model.named_modules()}
    assert kinds["blocks.0.self_attn.q"] == "Int8Linear" and kinds["blocks.1.ffn.2"] == "Int8Linear"
    assert kinds["head.head"] == "Linear" and kinds["time_embedding.0"] == "Linear"
    assert sum(k == "Int8Linear" for k in kinds.values()) == 2 * 10  # 4 self + 4 cross + 2 ffn
    err = rel_err(model(*args), ref)
    assert 0 < err < 0.02


def test_bad_modes_and_fp8_without_a_gpu_are_refused():
    model, _ = model_and_inputs()
    with pytest.raises(ValueError, match="unknown quantization 'int4'"):
        apply_quant(model, "int4")
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        apply_quant(model, "fp8")
    assert apply_quant(model, "none") is model


@pytest.mark.skipif(importlib.util.find_spec("torchao") is None, reason="torchao not installed")
@torch.no_grad()
def test_torchao_backend_is_close_to_fp32():
    model, args = model_and_inputs()
    ref = model(*args)
    apply_quant(model, "int8", backend="torchao")
    assert type(model.blocks[0].ffn[0].weight).__name__ != "Parameter"
    assert 0 < rel_err(model(*args), ref) < 0.02
