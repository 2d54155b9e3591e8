"""3-axis rotary position embedding of the Wan DiT (WAN_SPEC §3.6).

Each head's channels form complex pairs of ADJACENT channels (2j, 2j+1). The pairs are split
between frame, height and width axes as ``d - 4*(d//6) : 2*(d//6) : 2*(d//6)`` real channels
(44:42:42 for head_dim 128); each axis has its own frequency table ``theta^(-2j/d_axis)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def axis_dims(head_dim: int) -> tuple[int, int, int]:
    hw = 2 * (head_dim // 6)
    return head_dim - 2 * hw, hw, hw


def rope_angles(
    grid: tuple[int, int, int],
    head_dim: int,
    *,
    theta: float = 10000.0,
    device: torch.device | None = None,
    offsets: tuple[int, int, int] = (0, 0, 0),
) -> torch.Tensor:
    """Angles ``[f*h*w, head_dim/2]`` (float64) for tokens laid out row-major over (f, h, w)."""
    positions = tuple(
        torch.arange(o, o + n, dtype=torch.float64, device=device) for o, n in zip(offsets, grid)
    )
    return rope_angles_at(positions, head_dim, theta=theta)


def rope_angles_at(
    positions: Sequence[torch.Tensor],
    head_dim: int,
    *,
    theta: float = 10000.0,
) -> torch.Tensor:
    """Angles ``[F*H*W, head_dim/2]`` (float64) for the row-major product of explicit per-axis
    positions (any integers, negative allowed: a negative position is the conjugate rotation)."""
    sizes = [len(p) for p in positions]
    parts = []
    for axis, (pos, d) in enumerate(zip(positions, axis_dims(head_dim))):
        pos = pos.to(torch.float64)
        inv = theta ** (-torch.arange(0, d, 2, dtype=torch.float64, device=pos.device) / d)
        ang = torch.outer(pos, inv)  # [n, d/2]
        shape = [1, 1, 1, d // 2]
        shape[axis] = sizes[axis]
        parts.append(ang.view(shape).expand(*sizes, d // 2))
    return torch.cat(parts, dim=-1).reshape(-1, head_dim // 2)


def rope_cos_sin(angles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 cos/sin tables ``[L, 1, D/2]`` (angles kept in float64 until here)."""
    return torch.cos(angles).float()[:, None], torch.sin(angles).float()[:, None]


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` ``[B, L, H, D]``: the first ``cos.shape[0]`` tokens; the rest (padding) unchanged.

    Computed in fp32; returns fp32 (as the official rope, which returns ``.float()``).
    """
    n = cos.shape[0]
    xf = x.float()
    pairs = torch.view_as_complex(xf[:, :n].unflatten(-1, (-1, 2)))  # [B, n, H, D/2] complex64
    # (re + i im)(cos + i sin): the rotation of each adjacent pair, as one complex multiply
    rotated = torch.view_as_real(pairs * torch.complex(cos, sin)).flatten(-2)  # [B, n, H, D]
    if n == x.shape[1]:
        return rotated
    return torch.cat([rotated, xf[:, n:]], dim=1)
