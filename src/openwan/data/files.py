"""Video + caption datasets on disk, for training on your own clips.

Three layouts are accepted (``open_dataset`` picks one from the path):

- a folder of ``name.mp4`` files each with a ``name.txt`` caption beside it (sub-folders too);
- a ``metadata.csv`` with the columns ``video,prompt`` (paths relative to the CSV's folder),
  given as the CSV file or as the folder that holds it;
- a ``.jsonl`` file with one ``{"video": ..., "prompt": ...}`` object per line.

Items whose caption is missing or empty are skipped when the dataset is opened; videos that
cannot be decoded, or that are too short, are skipped when they are read. Every skip is logged
with the path and counted in ``VideoTextDataset.skipped``, so one bad file never stops a run.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from openwan.io.video import MediaError, read_video

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi")


class DatasetError(ValueError):
    """The dataset path or index file itself is unusable (nothing to skip to)."""


@dataclass(frozen=True)
class Item:
    video: Path
    prompt: str


@dataclass
class VideoTextDataset:
    """Clips of ``frames`` frames at ``size`` x ``size`` (centre crop), as float [3, F, H, W]."""

    items: list[Item]
    frames: int = 17
    size: int = 64
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    def _skip(self, path: Path | str, reason: str) -> None:
        log.warning("skipping %s: %s", path, reason)
        self.skipped.append((str(path), reason))

    def load(self, item: Item) -> torch.Tensor:
        """Decode, centre-crop to a square, resize and cut one clip (raises ``MediaError``)."""
        frames, _ = read_video(item.video, max_frames=self.frames)
        if frames.shape[0] < self.frames:
            raise MediaError(f"{item.video} has {frames.shape[0]} frames, {self.frames} needed")
        return resize_clip(frames, self.size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, str]]:
        """Every readable clip once, in order; unreadable ones are skipped and counted."""
        for item in self.items:
            try:
                yield self.load(item), item.prompt
            except MediaError as e:
                self._skip(item.video, str(e))


def resize_clip(frames: np.ndarray, size: int) -> torch.Tensor:
    """uint8 ``[F, H, W, 3]`` -> float ``[3, F, size, size]`` in [-1, 1] (centre crop, area resize)."""
    video = torch.from_numpy(frames).permute(0, 3, 1, 2).float()  # [F, 3, H, W]
    h, w = video.shape[-2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    video = video[:, :, top : top + side, left : left + side]
    if side != size:
        mode = "area" if side > size else "bilinear"
        video = F.interpolate(video, size=(size, size), mode=mode)
    return video.div(127.5).sub(1.0).clamp(-1, 1).permute(1, 0, 2, 3).contiguous()


def _caption_file(video: Path) -> str | None:
    txt = video.with_suffix(".txt")
    if not txt.is_file():
        return None
    return txt.read_text(encoding="utf-8", errors="replace").strip() or None


def _from_folder(root: Path, skipped: list[tuple[str, str]]) -> list[Item]:
    items = []
    for video in sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES):
        prompt = _caption_file(video)
        if prompt is None:
            log.warning(
                "skipping %s: no caption (%s missing or empty)",
                video,
                video.with_suffix(".txt").name,
            )
            skipped.append((str(video), "missing caption"))
        else:
            items.append(Item(video, prompt))
    return items


def _from_records(
    records: list[tuple[int, dict[str, str]]],
    base: Path,
    source: Path,
    skipped: list[tuple[str, str]],
) -> list[Item]:
    items = []
    for line, rec in records:
        video, prompt = (rec.get("video") or "").strip(), (rec.get("prompt") or "").strip()
        where = f"{source}:{line}"
        if not video:
            log.warning("skipping %s: no 'video' value", where)
            skipped.append((where, "missing video path"))
        elif not prompt:
            log.warning("skipping %s (%s): no caption", where, video)
            skipped.append((str(base / video), "missing caption"))
        else:
            items.append(Item(base / video, prompt))
    return items


def _read_csv(path: Path) -> list[tuple[int, dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields = set(reader.fieldnames or ())
        if not {"video", "prompt"} <= fields:
            raise DatasetError(f"{path} needs the columns 'video,prompt'; it has {sorted(fields)}")
        return [(i + 2, row) for i, row in enumerate(reader)]  # line numbers after the header


def _read_jsonl(path: Path, skipped: list[tuple[str, str]]) -> list[tuple[int, dict[str, str]]]:
    records = []
    for i, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not text.strip():
            continue
        try:
            rec = json.loads(text)
            if not isinstance(rec, dict):
                raise ValueError("not an object")
        except ValueError as e:
            log.warning("skipping %s:%d: not a JSON object (%s)", path, i, e)
            skipped.append((f"{path}:{i}", "bad JSON line"))
            continue
        records.append((i, {k: str(v) for k, v in rec.items() if v is not None}))
    return records


def open_dataset(path: str | Path, frames: int = 17, size: int = 64) -> VideoTextDataset:
    """Open a folder, ``metadata.csv`` or ``.jsonl`` dataset (see the module docstring)."""
    path = Path(path)
    skipped: list[tuple[str, str]] = []
    if path.is_dir() and (path / "metadata.csv").is_file():
        path = path / "metadata.csv"
    if path.is_dir():
        items = _from_folder(path, skipped)
    elif path.is_file() and path.suffix.lower() == ".csv":
        items = _from_records(_read_csv(path), path.parent, path, skipped)
    elif path.is_file() and path.suffix.lower() == ".jsonl":
        items = _from_records(_read_jsonl(path, skipped), path.parent, path, skipped)
    elif not path.exists():
        raise DatasetError(f"dataset not found: {path}")
    else:
        raise DatasetError(
            f"{path}: expected a folder of videos with .txt captions, a metadata.csv or a .jsonl file"
        )
    if not items:
        raise DatasetError(f"{path}: no usable (video, caption) pairs ({len(skipped)} skipped)")
    return VideoTextDataset(items, frames=frames, size=size, skipped=skipped)
