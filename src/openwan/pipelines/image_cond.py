"""Image conditions: reading, sizing and the first-frame latent used by Wan2.2 TI2V-5B.

TI2V conditions on an image without any extra input channels: the image's VAE latent replaces
latent frame 0 before every model call and after every solver step, and the tokens of that frame
are given timestep 0 (they are clean) while all others get the current t.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

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
