"""The attention leaf function. Every attention in the models goes through :func:`attention`,
so backends (and later context parallelism or caches) replace one function."""

from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F

_HAS_FLASH = importlib.util.find_spec("flash_attn") is not None


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
    mask = None
    if k_lens is not None:
        pos = torch.arange(k.shape[1], device=k.device)
        mask = (pos[None, :] < k_lens[:, None].to(k.device))[:, None, None, :]  # [B, 1, 1, Lk]
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask
    )  # [B, H, Lq, D]
    return out.transpose(1, 2)
