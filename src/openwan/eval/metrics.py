"""Fidelity metrics between two videos: PSNR and SSIM (Wang et al. 2004, 11x11 Gaussian, sigma 1.5)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

_C1, _C2 = 0.01**2, 0.03**2  # SSIM stabilisers for a data range of 1


def _check(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape or a.ndim != 4 or a.shape[0] != 3:
        raise ValueError(f"expected two videos [3, F, H, W] of one shape, got {a.shape}, {b.shape}")


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of videos ``[3, F, H, W]`` in [-1, 1] (data range 2); inf when equal."""
    _check(a, b)
    mse = float(((a.double() - b.double()) / 2).pow(2).mean())
    return float("inf") if mse == 0 else -10.0 * torch.log10(torch.tensor(mse)).item()


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5) -> float:
    """Mean SSIM over frames and channels of videos ``[3, F, H, W]`` in [-1, 1]."""
    _check(a, b)
    x = ((a.double() + 1) / 2).transpose(0, 1).flatten(0, 1)[:, None]  # [F*3, 1, H, W] in [0, 1]
    y = ((b.double() + 1) / 2).transpose(0, 1).flatten(0, 1)[:, None]
    size = min(window, x.shape[-1], x.shape[-2])
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    g = g / g.sum()
    kernel = (g[:, None] * g[None, :])[None, None]  # [1, 1, k, k]

    def blur(z: torch.Tensor) -> torch.Tensor:
        return F.conv2d(z, kernel)  # valid windows only, as the reference implementation

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    s = ((2 * mx * my + _C1) * (2 * cxy + _C2)) / ((mx**2 + my**2 + _C1) * (vx + vy + _C2))
    return float(s.mean())


def continuation_joints(clip: int, rounds: int, cond_frames: int = 1) -> list[int]:
    """Index of the first new frame after each joint of a video continued ``rounds`` times: the
    first clip has ``clip`` frames and each round appends ``clip - cond_frames`` (its leading
    ``cond_frames`` are the previous frames it was conditioned on)."""
    if not 1 <= cond_frames < clip:
        raise ValueError(f"cond_frames must lie in 1..{clip - 1}, got {cond_frames}")
    return [clip + r * (clip - cond_frames) for r in range(rounds)]


def seam_ratios(video: torch.Tensor, joints: list[int], window: int = 0) -> list[float]:
    """How visible each joint of a continued video ``[3, F, H, W]`` is: the mean absolute change
    from frame ``j - 1`` to the first new frame ``j``, over the median frame-to-frame change
    inside the clips (a joint within 2x of that median shows no seam). With ``window`` w, the
    largest of the changes within w frames of the joint's is taken (a blended joint spreads its
    jump over its neighbours, so it is judged with ``window=1``)."""
    if video.ndim != 4 or video.shape[0] != 3:
        raise ValueError(f"expected a video [3, F, H, W], got {tuple(video.shape)}")
    diffs = (video[:, 1:].double() - video[:, :-1].double()).abs().mean(dim=(0, 2, 3))  # [F-1]
    at_joint = {j - 1 for j in joints}  # diffs[i] is the change from frame i to i + 1
    if not joints or min(joints) < 1 or max(joints) >= video.shape[1]:
        raise ValueError(f"joints must lie in 1..{video.shape[1] - 1}, got {joints}")
    inside = torch.stack([d for i, d in enumerate(diffs) if i not in at_joint])
    median = float(inside.median().clamp_min(1e-6))
    # the changes j-1-window .. j-1+window (the slice stops at the last change by itself)
    return [float(diffs[max(0, j - 1 - window) : j + window].max()) / median for j in joints]
