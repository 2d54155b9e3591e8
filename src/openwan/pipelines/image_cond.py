"""Image conditions: reading, sizing and the first-frame latent used by Wan2.2 TI2V-5B.

TI2V conditions on an image without any extra input channels: the image's VAE latent replaces
latent frame 0 before every model call and after every solver step, and the tokens of that frame
are given timestep 0 (they are clean) while all others get the current t.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from openwan.io.video import MediaError


def best_output_size(w: int, h: int, dw: int, dh: int, area: int) -> tuple[int, int]:
    """The (width, height) with the image's aspect ratio, multiples of (dw, dh), area <= ``area``.

    Two candidates are formed (round the width down first, or the height first); the one whose
    aspect ratio is closer to the image's wins (the official rule, ties go to height-first).
    """
    ratio = w / h
    ow = (area * ratio) ** 0.5
    oh = area / ow
    w1, h2 = int(ow // dw * dw), int(oh // dh * dh)
    h1 = int(area / w1 // dh * dh) if w1 > 0 else 0
    w2 = int(area / h2 // dw * dw) if h2 > 0 else 0
    if min(w1, h1, w2, h2) <= 0:
        raise ValueError(
            f"an area of {area} px is too small for a {w}x{h} image in steps of {dw}x{dh} px"
        )

    def off(a: int, b: int) -> float:
        r = a / b
        return max(ratio / r, r / ratio)

    return (w1, h1) if off(w1, h1) < off(w2, h2) else (w2, h2)


def load_image(image: Any) -> Any:
    """A path or a PIL image -> an RGB PIL image (clear error for unreadable files)."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    path = Path(image)
    if not path.is_file():
        raise MediaError(f"image file not found: {path}")
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise MediaError(f"cannot read image {path}: {e}") from None


def fit_image(image: Any, size: tuple[int, int]) -> torch.Tensor:
    """Resize (Lanczos, covering) and centre-crop to ``size`` = (width, height) -> [3, 1, H, W]."""
    from PIL import Image

    ow, oh = size
    scale = max(ow / image.width, oh / image.height)
    image = image.resize(
        (round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS
    )
    left, top = (image.width - ow) // 2, (image.height - oh) // 2
    image = image.crop((left, top, left + ow, top + oh))
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32).copy())  # [H, W, 3] 0..255
    return pixels.permute(2, 0, 1).unsqueeze(1).div(255.0).sub(0.5).div(0.5)


@dataclass
class FirstFrame:
    """The clean latent of frame 0 and how to impose it on the sampler's state."""

    latent: torch.Tensor  # [C, 1, h, w]
    patch: tuple[int, int, int]

    def impose(self, x: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        out[:, :1] = self.latent.to(x.dtype)
        return out

    def token_timesteps(self, t: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        """Per-token t ``[1, L]``: 0 for the tokens of latent frame 0, ``t`` for the rest."""
        _, frames, h, w = shape
        pt, ph, pw = self.patch
        per_frame = (h // ph) * (w // pw)
        n = (frames // pt) * per_frame
        tt = t.reshape(()).expand(n).clone()
        tt[:per_frame] = 0
        return tt.unsqueeze(0)


# ----------------------------------------------------------------------------- Wan2.1/2.2 I2V
# I2V, FLF2V and video continuation condition through extra input channels instead: ``y`` = a
# 4-channel mask of the known pixel frames + the VAE latent of a video holding those frames (zeros
# elsewhere), concatenated after the 16 noisy channels (in_dim 36).


def i2v_output_size(
    width: int,
    height: int,
    max_area: int,
    stride: tuple[int, int] = (8, 8),
    patch: tuple[int, int] = (2, 2),
) -> tuple[int, int]:
    """The official I2V/FLF2V (width, height) for an image and a maximum area (WAN_SPEC §7.2).

    ``lat_h = floor(floor(sqrt(area * h/w) / s) / p) * p`` (likewise ``lat_w`` with ``w/h``), the
    pixel size is the latent size times the VAE stride; the aspect ratio is kept approximately.
    """
    aspect = height / width
    lat_h = int(math.sqrt(max_area * aspect) // stride[0] // patch[0] * patch[0])
    lat_w = int(math.sqrt(max_area / aspect) // stride[1] // patch[1] * patch[1])
    if lat_h <= 0 or lat_w <= 0:
        raise ValueError(
            f"an area of {max_area} px is too small for a {width}x{height} image; "
            "pick a larger --size"
        )
    return lat_w * stride[1], lat_h * stride[0]


def image_to_pixels(image: Any) -> torch.Tensor:
    """An RGB PIL image -> ``[3, H, W]`` in [-1, 1] at its own resolution."""
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32).copy())  # [H, W, 3] 0..255
    return pixels.permute(2, 0, 1).div(255.0).sub(0.5).div(0.5)


def resize_frame(pixels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``[3, H, W]`` -> ``[3, h, w]`` for size (w, h): the official bicubic resize of the whole frame
    (no crop, no antialias, no clamp)."""
    w, h = size
    if tuple(pixels.shape[1:]) == (h, w):
        return pixels
    return F.interpolate(pixels[None].float(), size=(h, w), mode="bicubic", align_corners=False)[0]


def match_frame(pixels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Cover ``size`` = (w, h) keeping the aspect ratio (bicubic), then centre-crop to it.

    FLF2V uses this for a last frame whose size differs from the first frame's.
    """
    w, h = size
    src_h, src_w = pixels.shape[1:]
    scale = max(w / src_w, h / src_h)
    cover = resize_frame(pixels, (max(w, round(src_w * scale)), max(h, round(src_h * scale))))
    top, left = (cover.shape[1] - h) // 2, (cover.shape[2] - w) // 2
    return cover[:, top : top + h, left : left + w]


def known_frame_mask(
    frame_num: int, known: Sequence[int], lat_hw: tuple[int, int], stride_t: int = 4
) -> torch.Tensor:
    """The 4-channel mask ``[stride_t, T, h, w]`` of the pixel frames whose content is given.

    A pixel-frame mask (1 on ``known``) with frame 0 repeated ``stride_t`` times is folded into
    groups of ``stride_t`` consecutive frames, one group per latent frame: channel j of latent frame
    tau is the mask of expanded frame ``stride_t * tau + j`` (WAN_SPEC §7.2).
    """
    m = torch.zeros(frame_num)
    m[list(known)] = 1.0
    expanded = torch.cat([m[:1].repeat(stride_t), m[1:]])  # [F + stride_t - 1]
    lat_t = expanded.numel() // stride_t
    folded = expanded.view(lat_t, stride_t).transpose(0, 1)  # [stride_t, T]
    return folded[:, :, None, None].expand(stride_t, lat_t, *lat_hw).contiguous()


@dataclass
class FrameCondition:
    """What an I2V-type DiT takes besides the noisy latent (same for both CFG branches)."""

    y: torch.Tensor  # [4 + z_dim, T, h, w]: mask, then the latent of the conditioning video
    clip_fea: torch.Tensor | None  # [1, 257 * n_images, 1280]; None for Wan2.2 I2V-A14B

    def model_kwargs(self, device: torch.device) -> dict[str, object]:
        kwargs: dict[str, object] = {"y": self.y.unsqueeze(0).to(device)}
        if self.clip_fea is not None:
            kwargs["clip_fea"] = self.clip_fea.to(device)
        return kwargs


def encode_frame_condition(
    vae: nn.Module,
    frames: dict[int, torch.Tensor],
    frame_num: int,
    size: tuple[int, int],
) -> torch.Tensor:
    """``y [4 + z_dim, T, h, w]`` for pixel frames ``{index: [3, h, w]}`` of a ``frame_num`` video.

    The conditioning video holds the given frames at their indices and zeros elsewhere; its VAE
    latent (normalised mean) follows the mask channels.
    """
    w, h = size
    video = torch.zeros(3, frame_num, h, w)
    for index, pixels in frames.items():
        if tuple(pixels.shape) != (3, h, w):
            raise ValueError(
                f"frame {index} has shape {tuple(pixels.shape)}, expected (3, {h}, {w})"
            )
        video[:, index] = pixels
    param = next(vae.parameters())
    with torch.no_grad():
        latent = vae.encode(video.unsqueeze(0).to(param.device, param.dtype))[0].float()
    stride = vae.config.stride
    mask = known_frame_mask(frame_num, sorted(frames), tuple(latent.shape[2:]), stride[0])
    return torch.cat([mask.to(latent.device), latent])
