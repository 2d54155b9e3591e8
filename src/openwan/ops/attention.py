"""The attention leaf function. Every attention in the models goes through :func:`attention`,
so backends (and later context parallelism or caches) replace one function.

On CPUs, inference runs attention as oneDNN GEMMs, one head and one block of query rows at a
time: scores ``q k^T`` in fp32, softmax in fp32, then ``p v``. For bf16 inputs the scores still
come out in fp32 (q and k are widened first, so no score is rounded to bf16) and only the
probabilities are rounded to bf16 for the ``p v`` GEMM, as the fused SDPA kernels do. At the
1.3B model's 1950 tokens x 12 heads this measured ~2x (bf16) and ~1.4x (fp32) faster than
``F.scaled_dot_product_attention`` on this AMD CPU, whose CPU flash kernel reaches a fraction
of the GEMM peak; ``benchmarks/bench_dit.py`` shows the effect on the whole forward.
Training (autograd), GPUs and other dtypes take SDPA (or flash-attn on GPU when installed).
"""

from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F

from openwan.ops.onednn import eligible, has_linear_kernel, linear_op

_HAS_FLASH = importlib.util.find_spec("flash_attn") is not None
# Query rows per block: a block's fp32 score matrix holds about this many elements (4 MiB), so
# it stays in cache between the two GEMMs and the softmax; long sequences never materialise an
# [Lq, Lk] matrix per head.
_SCORE_BLOCK = 1 << 20
_MIN_ROWS = 128


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_lens: torch.Tensor | None = None
) -> torch.Tensor:
    """Softmax attention, scale 1/sqrt(head_dim).

    q ``[B, Lq, H, D]``, k/v ``[B, Lk, H, D]``; ``k_lens`` ``[B]`` excludes keys at positions >=
    k_lens[b] (padding). Returns ``[B, Lq, H, D]`` in q's dtype.
    """
    if _HAS_FLASH and q.is_cuda and k_lens is None and q.dtype in (torch.float16, torch.bfloat16):
        from flash_attn import flash_attn_func

        return flash_attn_func(q, k, v)
    if _gemm_eligible(q, k, v):
        return _gemm_attention(q, k, v, k_lens)
    mask = None
    if k_lens is not None:
        pos = torch.arange(k.shape[1], device=k.device)
        mask = (pos[None, :] < k_lens[:, None].to(k.device))[:, None, None, :]  # [B, 1, 1, Lk]
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask
    )  # [B, H, Lq, D]
    return out.transpose(1, 2)


def _gemm_eligible(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
    return eligible(q, k) and eligible(q, v) and has_linear_kernel() and k.shape[1] > 0


def _gemm_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_lens: torch.Tensor | None
) -> torch.Tensor:
    b, lq, h, d = q.shape
    lk = k.shape[1]
    out = q.new_empty(b, lq, h, d)
    lens = [lk] * b if k_lens is None else [min(int(n), lk) for n in k_lens.tolist()]
    for i in range(b):
        n = lens[i]
        if n <= 0:
            raise ValueError(f"attention over zero keys (k_lens[{i}] = {n})")
        rows = max(_MIN_ROWS, _SCORE_BLOCK // n)
        for j in range(h):
            # one head at a time: fp32 q (scaled out of place: q itself is never written) and k,
            # v transposed so that p @ v is x @ w.T; only one head's copies are alive at once
            qj = q[i, :, j].float().mul(d**-0.5)  # [Lq, D]
            kj = k[i, :n, j].float().contiguous()  # [n, D]
            vj = v[i, :n, j].t().contiguous()  # [D, n]
            for r in range(0, lq, rows):
                scores = linear_op(qj[r : r + rows], kj)  # q k^T: [rows, n] fp32
                p = torch.softmax(scores, dim=-1).to(q.dtype)
                out[i, r : r + rows, j] = linear_op(p, vj)  # p v: [rows, D]
    return out
