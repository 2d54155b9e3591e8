"""Video and image files: H.264 mp4 through PyAV, PNG through Pillow. Writes are atomic."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from openwan.checkpoint.io import atomic_path


class MediaError(RuntimeError):
    """A media file that cannot be read or written."""


def to_uint8_frames(video: torch.Tensor | np.ndarray) -> np.ndarray:
    """Convert a video to uint8 frames ``[F, H, W, 3]``.

    Accepts a tensor ``[3, F, H, W]`` / ``[B, 3, F, H, W]`` (first sample) in [-1, 1] or a uint8
    array ``[F, H, W, 3]``. Float values are clamped and mapped with ``(x + 1) / 2 * 255`` and a
    truncating cast, as the official writer does.
    """
    if isinstance(video, np.ndarray):
        if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3:
            raise ValueError(
                f"expected a uint8 array [F, H, W, 3], got {video.dtype} {video.shape}"
            )
        return video
    if video.ndim == 5:
        video = video[0]
    if video.ndim != 4 or video.shape[0] != 3:
        raise ValueError(f"expected a video tensor [3, F, H, W], got shape {tuple(video.shape)}")
    x = video.detach().float().clamp(-1, 1).add(1).mul(127.5)  # [3, F, H, W] in [0, 255]
    return x.to(torch.uint8).permute(1, 2, 3, 0).cpu().numpy()  # [F, H, W, 3]


def mp4_frames(video: torch.Tensor | np.ndarray, path: str | Path) -> tuple[np.ndarray, Path]:
    """The uint8 frames ``[F, H, W, 3]`` to encode, padded to even sides (yuv420p needs them; edge
    replication rather than failing), and the checked ``.mp4`` path."""
    frames = to_uint8_frames(video)
    if frames.shape[0] == 0:
        raise ValueError("cannot write a video with no frames")
    path = Path(path)
    if path.suffix.lower() != ".mp4":
        raise ValueError(f"video output must end in .mp4, got {path.name}")
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return frames, path


def add_h264_stream(
    container: Any, frames: np.ndarray, fps: int, crf: int, metadata: dict[str, Any] | None
) -> Any:
    """The H.264 (yuv420p) stream of an open mp4 container; ``metadata`` goes to its comment tag."""
    if metadata:
        container.metadata["comment"] = json.dumps(metadata, ensure_ascii=False)
    stream = container.add_stream("libx264", rate=fps)
    stream.width, stream.height = frames.shape[2], frames.shape[1]
    stream.pix_fmt = "yuv420p"
    stream.options = {"crf": str(crf), "preset": "medium"}
    return stream


def mux_h264(container: Any, stream: Any, frames: np.ndarray) -> None:
    """Encode every frame into ``stream`` and flush the encoder."""
    import av

    for frame in frames:
        container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
    container.mux(stream.encode())


def save_video(
    video: torch.Tensor | np.ndarray,
    path: str | Path,
    fps: int = 16,
    *,
    crf: int = 18,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write an H.264 mp4 (yuv420p) atomically; ``metadata`` is stored as JSON in the comment tag."""
    import av

    frames, path = mp4_frames(video, path)
    try:
        with atomic_path(path) as tmp, av.open(str(tmp), mode="w", format="mp4") as container:
            stream = add_h264_stream(container, frames, fps, crf, metadata)
            mux_h264(container, stream, frames)
    except OSError as e:
        raise MediaError(f"cannot write {path}: {e.strerror or e}") from None
    return path


def save_image(
    image: torch.Tensor | np.ndarray, path: str | Path, *, metadata: dict[str, Any] | None = None
) -> Path:
    """Write the first frame of a video (or an image ``[3, H, W]``) as PNG, atomically."""
    from PIL import Image, PngImagePlugin

    if isinstance(image, torch.Tensor) and image.ndim == 3:
        image = image.unsqueeze(1)  # [3, 1, H, W]
    frame = to_uint8_frames(image)[0]
    path = Path(path)
    info = PngImagePlugin.PngInfo()
    if metadata:
        info.add_text("parameters", json.dumps(metadata, ensure_ascii=False))
    try:
        with atomic_path(path) as tmp:
            Image.fromarray(frame).save(tmp, format="PNG", pnginfo=info)
    except OSError as e:
        raise MediaError(f"cannot write {path}: {e.strerror or e}") from None
    return path


def read_video(path: str | Path, max_frames: int | None = None) -> tuple[np.ndarray, float]:
    """Decode a video file to uint8 ``[F, H, W, 3]`` and its frame rate."""
    import av

    path = Path(path)
    if not path.is_file():
        raise MediaError(f"video file not found: {path}")
    frames = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(f"{path} has no video stream")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 16)
            for frame in container.decode(stream):
                frames.append(frame.to_ndarray(format="rgb24"))
                if max_frames is not None and len(frames) >= max_frames:
                    break
    except av.error.FFmpegError as e:
        raise MediaError(f"cannot decode {path}: {e}") from None
    if not frames:
        raise MediaError(f"{path} contains no decodable frames")
    return np.stack(frames), fps


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The parameters stored by :func:`save_video` / :func:`save_image` (empty if none)."""
    path = Path(path)
    if path.suffix.lower() == ".png":
        from PIL import Image

        with Image.open(path) as im:
            text = im.info.get("parameters")
    else:
        import av

        with av.open(str(path)) as container:
            text = container.metadata.get("comment")
    return json.loads(text) if text else {}
