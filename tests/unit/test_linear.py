"""The linear leaf: the oneDNN inference path equals F.linear; training keeps autograd."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from openwan.ops.linear import GeluFFN, Linear, linear


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


@pytest.mark.parametrize("gelu", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_inference_path_matches_f_linear_fp32(gelu, bias):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 37, 96, generator=g).transpose(0, 1)  # non-contiguous [37, 2, 96]
    w = torch.randn(80, 96, generator=g) * 0.1
    b = torch.randn(80, generator=g) if bias else None
    ref = F.linear(x, w, b)
    if gelu:
        ref = F.gelu(ref, approximate="tanh")
    with torch.no_grad():
        out = linear(x, w, b, gelu_tanh=gelu)
    assert out.shape == ref.shape and out.dtype == torch.float32
    assert _rel(out, ref) < 1e-6


def test_inference_path_bf16_matches_a_bf16_gemm():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 128, generator=g).bfloat16()
    w = (torch.randn(32, 128, generator=g) * 0.1).bfloat16()
    b = torch.randn(32, generator=g).bfloat16()
    with torch.no_grad():
        out = linear(x, w, b)
    exact = F.linear(x.float(), w.float(), b.float())
    assert out.dtype == torch.bfloat16
    assert _rel(out, exact) < 8e-3  # bf16 output rounding only


def test_training_path_has_the_same_gradients():
    g = torch.Generator().manual_seed(2)
    layer = Linear(16, 8)
    x = torch.randn(5, 16, generator=g, requires_grad=True)
    linear(x, layer.weight, layer.bias, gelu_tanh=True).square().sum().backward()
    gx, gw = x.grad.clone(), layer.weight.grad.clone()
    x.grad = None
    layer.weight.grad = None
    F.gelu(F.linear(x, layer.weight, layer.bias), approximate="tanh").square().sum().backward()
    assert torch.allclose(gx, x.grad) and torch.allclose(gw, layer.weight.grad)


def test_gelu_ffn_keeps_the_official_keys_and_equals_the_plain_sequential():
    ffn = GeluFFN(12, 20)
    assert sorted(ffn.state_dict()) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    plain = torch.nn.Sequential(
        torch.nn.Linear(12, 20), torch.nn.GELU(approximate="tanh"), torch.nn.Linear(20, 12)
    )
    plain.load_state_dict(ffn.state_dict(), strict=True)
    x = torch.randn(3, 9, 12)
    with torch.no_grad():
        assert _rel(ffn(x), plain(x)) < 1e-6
