"""Timestep sinusoid (WAN_SPEC §3.3)."""

from __future__ import annotations

import torch


def sinusoidal_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """``[cos(t w_i), sin(t w_i)]`` with ``w_i = 10000^(-i / (dim/2))``; cos first, as the official model.

    Computed in float64 (timesteps reach 1000, so fp32 angles would lose digits), returned as fp32.
    """
    half = dim // 2
    t64 = t.to(torch.float64)
    freqs = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=t.device) / half)
    angles = t64.unsqueeze(-1) * freqs  # [..., half]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1).float()
