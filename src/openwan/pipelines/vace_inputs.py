"""VACE conditions: source video, mask video and reference images -> the 96-channel context.

Follows the official preprocessing (Wan2.1 ``wan/vace.py`` and its video processor, WAN_SPEC §7.4):

- a source video keeps its full duration: the output length and shape are derived from the video
  and the token budget of the request (official ``keep_last`` frame selection), then frames are
  resized to cover (bicubic, antialiased, on uint8) and centre-cropped;
- a mask video selects what to regenerate: ``clamp((m + 1) / 2)`` of its first channel, white =
  regenerate; frames are binarised (> 0.5) into ``inactive = frames * (1 - m)`` and
  ``reactive = frames * m``, each VAE-encoded -> 32 channels;
- the mask itself is folded per 8x8 pixel cell into 64 channels and resampled in time
  (nearest-exact) to the latent frames -> 96 channels in all;
- reference images are fitted inside a white canvas of the frame size, encoded one latent frame
  each (plus 16 zero channels) and prepended in time, in the given order (one zero mask frame each).
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

from openwan.io.video import MediaError, read_video

ImageLike = Any  # a path or a PIL image
VideoLike = Any  # a path or uint8 frames [F, H, W, 3]


@dataclass(frozen=True)
class VaceSources:
    """What the user gave, read into memory (unreadable files fail here, before any model runs)."""

    video: np.ndarray | None = None  # uint8 [F, H, W, 3]
    mask: np.ndarray | None = None  # uint8 [F, H, W, 3] (or [F, H, W, 1])
    refs: tuple[Any, ...] = ()  # RGB PIL images


@dataclass
class VaceFrames:
    """Pixel-space conditions at the output geometry."""

    frames: torch.Tensor  # [3, F, H, W] in [-1, 1]
    mask: torch.Tensor  # [1, F, H, W] in [0, 1], 1 = regenerate
    refs: list[torch.Tensor]  # each [3, 1, H, W] in [-1, 1]

    @property
    def size(self) -> tuple[int, int]:
        return int(self.frames.shape[3]), int(self.frames.shape[2])  # (width, height)

    @property
    def frame_num(self) -> int:
        return int(self.frames.shape[1])


def _frames(video: VideoLike, what: str) -> np.ndarray:
    if isinstance(video, (str, Path)):
        frames, _ = read_video(video)
        return frames
    arr = np.asarray(video)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[3] not in (1, 3):
        raise ValueError(f"{what} must be a video file or uint8 frames [F, H, W, 3]")
    return arr


def to_rgb(image: Any) -> Any:
    """Any PIL mode -> RGB; transparency is composited on white (the VACE image processor's rule)."""
    from PIL import Image

    if image.mode == "RGB":
        return image
    if image.mode == "P" or image.mode == "LA" or "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        canvas = Image.new("RGB", image.size, (255, 255, 255))
        canvas.paste(image, (0, 0), mask=image)
        return canvas
    return image.convert("RGB")


def read_image(image: ImageLike) -> Any:
    from PIL import Image, UnidentifiedImageError

    if isinstance(image, Image.Image):
        return to_rgb(image)
    path = Path(image)
    if not path.is_file():
        raise MediaError(f"reference image not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            return to_rgb(im)
    except (UnidentifiedImageError, OSError) as e:
        raise MediaError(f"cannot read reference image {path}: {e}") from None


def read_sources(
    src_video: VideoLike | None = None,
    src_mask: VideoLike | None = None,
    src_ref_images: str | Sequence[ImageLike] | None = None,
) -> VaceSources:
    """Read and cross-check the inputs; ``src_ref_images`` may be comma-separated paths (official)."""
    if src_mask is not None and src_video is None:
        raise ValueError("a mask video (--src_mask) needs the source video it masks (--src_video)")
    video = _frames(src_video, "the source video") if src_video is not None else None
    if video is not None and video.shape[3] != 3:
        raise ValueError("the source video must have RGB frames [F, H, W, 3]")
    mask = _frames(src_mask, "the mask video") if src_mask is not None else None
    if video is not None and mask is not None and mask.shape[:3] != video.shape[:3]:
        raise ValueError(
            f"the mask video has {mask.shape[0]} frames of {mask.shape[2]}x{mask.shape[1]} but the "
            f"source video has {video.shape[0]} frames of {video.shape[2]}x{video.shape[1]}; "
            "give a mask with the same length and size"
        )
    if isinstance(src_ref_images, str):
        src_ref_images = [p.strip() for p in src_ref_images.split(",") if p.strip()]
    refs = tuple(read_image(r) for r in (src_ref_images or ()))
    return VaceSources(video=video, mask=mask, refs=refs)


def keep_last_geometry(
    n_frames: int, height: int, width: int, budget: int, area: int, stride: tuple[int, int, int]
) -> tuple[int, int, int]:
    """(frames, height, width) for a source video, official ``keep_last`` rule.

    ``stride`` = VAE stride x patch (4, 16, 16); ``budget`` = the token budget of the request,
    ``area`` its pixel area. The video keeps its aspect ratio; its length is cut only if the
    tokens would exceed the budget.
    """
    df, dh, dw = stride
    area_z = min(budget, area / (dh * dw), (height // dh) * (width // dw))
    of = min((n_frames - 1) // df + 1, int(budget / area_z))
    target_area_z = min(area_z, int(budget / of))
    oh = round(math.sqrt(target_area_z * height / width))
    ow = int(target_area_z / oh)
    return (of - 1) * df + 1, oh * dh, ow * dw


def keep_last_frame_ids(n_src: int, n_out: int) -> list[int]:
    """Frames spread over the whole duration: frame i spans [i, i+1] (in frame units), the duration
    is the middle of the last frame, and each sample time takes the first frame containing it."""
    if n_out == 1:
        return [0]
    ids = []
    for k in range(n_out):
        t = k * (n_src - 0.5) / (n_out - 1)
        ids.append(min(max(math.ceil(t) - 1, 0), n_src - 1))
    return ids


def resize_cover(frames: np.ndarray, height: int, width: int) -> torch.Tensor:
    """uint8 ``[F, H, W, C]`` -> uint8 ``[C, F, height, width]``: scale to cover, centre-crop."""
    video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)  # [F, C, H, W]
    ih, iw = video.shape[2:]
    if (ih, iw) != (height, width):
        scale = max(width / iw, height / ih)
        # bicubic + antialias on the uint8 frames, as the official processor does
        video = F.interpolate(
            video, size=(round(scale * ih), round(scale * iw)), mode="bicubic", antialias=True
        )
        y0, x0 = (video.shape[2] - height) // 2, (video.shape[3] - width) // 2
        video = video[:, :, y0 : y0 + height, x0 : x0 + width]
    return video.transpose(0, 1)  # [C, F, H, W]


def fit_reference(image: Any, height: int, width: int) -> torch.Tensor:
    """RGB PIL -> ``[3, 1, height, width]`` in [-1, 1]: fitted inside a white canvas if sizes differ."""
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32).copy())  # [h, w, 3] 0..255
    ref = pixels.permute(2, 0, 1).div(255.0).sub(0.5).div(0.5)  # [3, h, w]
    rh, rw = ref.shape[1:]
    if (rh, rw) != (height, width):
        scale = min(height / rh, width / rw)
        nh, nw = int(rh * scale), int(rw * scale)
        resized = F.interpolate(ref[None], size=(nh, nw), mode="bilinear", align_corners=False)
        canvas = torch.ones(3, height, width)  # white in [-1, 1]
        top, left = (height - nh) // 2, (width - nw) // 2
        canvas[:, top : top + nh, left : left + nw] = resized[0]
        ref = canvas
    return ref.unsqueeze(1)


def max_references(frame_num: int, stride: int) -> int:
    """openwan's limit: no more reference frames than video latent frames (the references would
    otherwise outnumber the video in the sequence; the official code has no limit)."""
    return (frame_num - 1) // stride + 1


def prepare_frames(
    sources: VaceSources,
    size: tuple[int, int],
    frame_num: int,
    stride: tuple[int, int, int],
    patch: tuple[int, int, int],
) -> VaceFrames:
    """Bring the sources to the output geometry (``size`` = (width, height) of the request)."""
    width, height = size
    if sources.video is None:
        frames = torch.zeros(3, frame_num, height, width)
        mask = torch.ones(1, frame_num, height, width)
    else:
        down = (stride[0] * patch[0], stride[1] * patch[1], stride[2] * patch[2])
        budget = ((frame_num - 1) // stride[0] + 1) * (height // down[1]) * (width // down[2])
        n, h, w = sources.video.shape[:3]
        if n < 1 or h < down[1] or w < down[2]:
            raise ValueError(f"the source video ({n} frames of {w}x{h}) is too small")
        of, oh, ow = keep_last_geometry(n, h, w, budget, width * height, down)
        ids = keep_last_frame_ids(n, of)
        frames = resize_cover(sources.video[ids], oh, ow).float().div(127.5).sub(1.0)
        if sources.mask is None:
            mask = torch.ones(1, of, oh, ow)
        else:
            m = resize_cover(sources.mask[ids], oh, ow)[:1].float().div(127.5).sub(1.0)
            mask = ((m + 1) / 2).clamp(0, 1)
    limit = max_references(frames.shape[1], stride[0])
    if len(sources.refs) > limit:
        raise ValueError(
            f"{len(sources.refs)} reference images given; at most {limit} fit a "
            f"{frames.shape[1]}-frame video"
        )
    refs = [fit_reference(r, frames.shape[2], frames.shape[3]) for r in sources.refs]
    return VaceFrames(frames=frames, mask=mask, refs=refs)


def mask_channels(mask: torch.Tensor, stride: tuple[int, int, int], n_refs: int) -> torch.Tensor:
    """``[1, F, H, W]`` -> ``[s*s, n_refs + T, H/s, W/s]``: each s x s pixel cell becomes s*s
    channels (channel = s*dy + dx), time resampled to T = (F + 3) // 4 latent frames."""
    _, f, h, w = mask.shape
    sh, sw = stride[1], stride[2]
    m = mask[0].reshape(f, h // sh, sh, w // sw, sw)  # [F, h, dy, w, dx]
    m = m.permute(2, 4, 0, 1, 3).reshape(sh * sw, f, h // sh, w // sw)  # [dy*dx, F, h, w]
    t = (f + stride[0] - 1) // stride[0]
    m = F.interpolate(m[None], size=(t, h // sh, w // sw), mode="nearest-exact")[0]
    return F.pad(m, (0, 0, 0, 0, n_refs, 0))  # one zero frame in front per reference


def encode_context(vae: nn.Module, cond: VaceFrames) -> torch.Tensor:
    """The VACE context ``[32 + s*s, n_refs + T, h, w]`` (frame latents, then mask channels)."""
    param = next(vae.parameters())

    def enc(video: torch.Tensor) -> torch.Tensor:
        return vae.encode(video[None].to(param.device, param.dtype))[0].float()

    binary = (cond.mask > 0.5).float()  # frames are split with the binarised mask
    with torch.no_grad():
        latents = torch.cat(
            [enc(cond.frames * (1 - binary)), enc(cond.frames * binary)], dim=0
        )  # [2z, T, h, w]: inactive, reactive
        refs = [enc(r) for r in cond.refs]  # each [z, 1, h, w]
    if refs:
        ref_lat = torch.cat([torch.cat([r, torch.zeros_like(r)], dim=0) for r in refs], dim=1)
        latents = torch.cat([ref_lat, latents], dim=1)
    masks = mask_channels(cond.mask, vae.config.stride, len(refs)).to(latents)
    return torch.cat([latents, masks], dim=0)
