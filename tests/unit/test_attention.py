"""The attention leaf: the CPU GEMM path against the softmax formula in float64."""

from __future__ import annotations

import pytest
import torch

from openwan.ops import attention as attn_mod
from openwan.ops.attention import attention


def reference(q, k, v, k_lens=None):
    """softmax(q k^T / sqrt(D)) v per batch and head, in float64, keys past k_lens dropped."""
    b = q.shape[0]
    outs = []
    for i in range(b):
        n = k.shape[1] if k_lens is None else int(k_lens[i])
        qi, ki, vi = (t[i].double().transpose(0, 1) for t in (q, k[:, :n], v[:, :n]))  # [H, L, D]
        p = torch.softmax(qi @ ki.transpose(1, 2) / q.shape[-1] ** 0.5, dim=-1)
        outs.append((p @ vi).transpose(0, 1))
    return torch.stack(outs)


def rel(a, b):
    return float((a.double() - b).norm() / b.norm())


@pytest.mark.parametrize("block", [1 << 20, 64])  # one block per head / many row blocks
def test_gemm_path_matches_the_formula_fp32(monkeypatch, block):
    monkeypatch.setattr(attn_mod, "_SCORE_BLOCK", block)
    monkeypatch.setattr(attn_mod, "_MIN_ROWS", 3)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, n, 3, 16, generator=g) for n in (37, 29, 29))
    k_lens = torch.tensor([29, 11])
    with torch.no_grad():
        assert attn_mod._gemm_eligible(q, k, v)
        assert rel(attention(q, k, v), reference(q, k, v)) < 1e-6
        assert rel(attention(q, k, v, k_lens), reference(q, k, v, k_lens)) < 1e-6


def test_gemm_path_does_not_modify_its_inputs():
    # B = H = 1: the head-major view of q is q itself; scaling it in place once corrupted q.
    q, k, v = (torch.randn(1, 8, 1, 4) for _ in range(3))
    before = [t.clone() for t in (q, k, v)]
    with torch.no_grad():
        attention(q, k, v)
    assert all(torch.equal(a, b) for a, b in zip(before, (q, k, v), strict=True))


def test_bf16_scores_are_not_rounded_to_bf16():
    # Scores near 200 differ by 0.25: bf16 spaces numbers near 200 by 1.0, so bf16 scores would
    # flatten or sharpen the softmax. q and k hold small integers (exact in bf16), so fp32
    # scores are exact and the only rounding left is p and the output (~1e-2 relative).
    g = torch.Generator().manual_seed(1)
    d = 16
    k = torch.randint(-3, 4, (1, 12, 2, d), generator=g).float()
    q = torch.zeros(1, 5, 2, d)
    q[..., 0] = 200.0 * d**0.5 / 3  # score = k[..., 0] * 200 / 3 on the scale 1/sqrt(d)
    q[..., 1] = 0.25 * d**0.5  # + k[..., 1] / 4
    q = q.bfloat16().float()  # what the model holds
    v = torch.randn(1, 12, 2, d, generator=g)
    ref = reference(q, k, v)
    with torch.no_grad():
        out = attention(q.bfloat16(), k.bfloat16(), v.bfloat16())
    assert out.dtype == torch.bfloat16
    assert rel(out, ref) < 1e-2


def test_training_takes_the_autograd_path():
    q, k, v = (torch.randn(1, 6, 2, 8, requires_grad=True) for _ in range(3))
    assert not attn_mod._gemm_eligible(q, k, v)
    out = attention(q, k, v)
    out.square().sum().backward()
    q2, k2, v2 = (t.detach().double().requires_grad_() for t in (q, k, v))
    reference(q2, k2, v2).square().sum().backward()
    assert rel(q.grad, q2.grad) < 1e-6 and rel(v.grad, v2.grad) < 1e-6
