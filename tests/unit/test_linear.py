"""The linear leaf: the oneDNN inference path equals F.linear; training keeps autograd."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from openwan.ops.linear import GeluFFN, linear


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).norm() / b.norm())


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


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("gelu", [False, True])
def test_training_path_runs_onednn_with_the_same_gradients(bias, gelu):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 7, 16, generator=g, requires_grad=True)  # leading dims folded into rows
    w = (torch.randn(24, 16, generator=g) * 0.3).requires_grad_()
    b = torch.randn(24, generator=g, requires_grad=True) if bias else None
    out = linear(x, w, b, gelu_tanh=gelu)
    node = out.grad_fn.next_functions[0][0] if gelu else out.grad_fn
    assert type(node).__name__ == "_TrainLinearBackward"  # the oneDNN autograd Function
    weights = torch.randn(out.shape, generator=g)
    grads = torch.autograd.grad((out * weights).sum(), [x, w] + ([b] if bias else []))
    x64, w64 = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    b64 = b.detach().double().requires_grad_() if bias else None
    ref = F.linear(x64, w64, b64)
    if gelu:
        ref = F.gelu(ref, approximate="tanh")
    assert _rel(out, ref) < 1e-6
    refs = torch.autograd.grad((ref * weights.double()).sum(), [x64, w64] + ([b64] if bias else []))
    for got, want in zip(grads, refs, strict=True):
        assert got.shape == want.shape and _rel(got, want) < 1e-6


def test_training_path_leaves_frozen_weights_without_gradients():
    x = torch.randn(4, 8, requires_grad=True)
    w = torch.randn(6, 8)  # frozen: only dx is computed
    (gx,) = torch.autograd.grad(linear(x, w).sum(), [x])
    assert torch.allclose(gx, w.sum(0).expand(4, 8), atol=1e-6)


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


def test_bf16_takes_aten_where_onednn_has_no_bf16_kernels(monkeypatch):
    """On AVX2-only CPUs oneDNN refuses bf16 primitives: the leaves must not call it there."""
    from openwan.ops import onednn

    x, w = torch.randn(4, 8), torch.randn(6, 8)
    monkeypatch.setattr(onednn, "bf16_kernels", lambda: False)
    with torch.no_grad():
        assert not onednn.eligible(x.bfloat16(), w.bfloat16())
        assert onednn.eligible(x, w) == torch.backends.mkldnn.is_available()
        out = linear(x.bfloat16(), w.bfloat16())
    assert _rel(out, x.bfloat16().float() @ w.bfloat16().float().T) < 8e-3
