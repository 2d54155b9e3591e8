"""ShapesBench: a deterministic analyzer of generated shapes-world videos against their prompts.

Per video: background (border mode), the shape pixels (far from the background), split per frame
into connected blobs; each blob takes the nearest palette colour of its median pixel, and a colour
seen in at least half of the frames is one tracked object (the world gives the two shapes of a
clip different colours). Per object: shape class (the best-overlapping ideal shape of the same
area and centroid) and motion (centroid travel and area change over time). Scores:
colour, shape, motion, background, count, all-correct; aggregated per language and seen vs
held-out, one-shape and two-shape prompts apart.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from openwan.data import shapes

FIELDS = ("color", "shape", "motion", "background", "count", "all")


@dataclass(frozen=True)
class Track:
    """One object followed over the video."""

    color: str
    shape: str
    motion: str
    area: float  # mean pixels per frame where it is present


@dataclass(frozen=True)
class Detection:
    background: str | None
    count: int  # median number of blobs per frame
    flicker: float
    objects: tuple[Track, ...] = ()  # largest first

    @property
    def color(self) -> str | None:
        return self.objects[0].color if self.objects else None

    @property
    def shape(self) -> str | None:
        return self.objects[0].shape if self.objects else None

    @property
    def motion(self) -> str | None:
        return self.objects[0].motion if self.objects else None


def _nearest(rgb: np.ndarray, table: dict[str, tuple[int, int, int]]) -> str:
    names = list(table)
    d = [float(np.abs(rgb - np.array(table[n], dtype=np.float32)).sum()) for n in names]
    return names[int(np.argmin(d))]


def _blobs(mask: np.ndarray, min_size: int = 6) -> list[np.ndarray]:
    """The 4-connected blobs of at least ``min_size`` pixels, as boolean masks (a small flood
    fill, no scipy)."""
    seen = np.zeros_like(mask, dtype=bool)
    out = []
    h, w = mask.shape
    for y, x in zip(*np.nonzero(mask)):
        if seen[y, x]:
            continue
        stack, pixels = [(y, x)], []
        seen[y, x] = True
        while stack:
            cy, cx = stack.pop()
            pixels.append((cy, cx))
            for ny, nx in ((cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
        if len(pixels) >= min_size:
            blob = np.zeros_like(mask, dtype=bool)
            blob[tuple(np.array(pixels).T)] = True
            out.append(blob)
    return out


def classify_shape(mask: np.ndarray) -> str:
    """The shape whose ideal mask (same area, same centroid, axis-aligned as the world draws it)
    overlaps ``mask`` best (IoU): robust to the blur of small decoded shapes, where the bounding
    box fill ratio of a square and a circle overlap."""
    h, w = mask.shape
    size = max(h, w)
    ys, xs = np.nonzero(mask)
    cx, cy = (xs.mean() + 0.5) / size, (ys.mean() + 0.5) / size
    r = float(np.sqrt(len(ys) / np.pi)) / size  # every template has the area of this circle
    best, best_iou = "circle", -1.0
    for shape in shapes.SHAPES:
        ideal = shapes.shape_mask(shape, cx, cy, r, size)[:h, :w]
        iou = (ideal & mask).sum() / max(1, (ideal | mask).sum())
        if iou > best_iou:
            best, best_iou = shape, float(iou)
    return best


def classify_motion(masks: list[np.ndarray]) -> str:
    """Motion of one object from its masks in the frames where it is present (in order)."""
    h, w = masks[0].shape
    ys = np.array([np.nonzero(m)[0].mean() for m in masks])
    xs = np.array([np.nonzero(m)[1].mean() for m in masks])
    dx, dy = (xs[-1] - xs[0]) / w, (ys[-1] - ys[0]) / h
    ratio = masks[-1].sum() / max(1, masks[0].sum())
    if ratio > 1.5:
        return "growing"
    if ratio < 1 / 1.5:
        return "shrinking"
    if max(abs(dx), abs(dy)) < 0.12:
        return "static"
    if abs(dx) >= abs(dy):
        return "right" if dx > 0 else "left"
    return "down" if dy > 0 else "up"


def _track(masks: list[np.ndarray], color: str) -> Track:
    votes = [classify_shape(m) for m in masks]
    shape = max(set(votes), key=votes.count)
    area = float(np.mean([m.sum() for m in masks]))
    return Track(color, shape, classify_motion(masks), area)


def analyze(video: np.ndarray) -> Detection:
    """Analyse a uint8 video ``[F, H, W, 3]``."""
    v: np.ndarray = video.astype(np.float32)
    f, h, w, _ = v.shape
    border = np.concatenate([v[:, 0], v[:, -1], v[:, :, 0], v[:, :, -1]], axis=1).reshape(-1, 3)
    bg_rgb = np.median(border, axis=0)
    background = _nearest(bg_rgb, shapes.BACKGROUNDS)
    fg = np.abs(v - bg_rgb).sum(-1) > 90  # [F, H, W]
    areas = fg.sum((1, 2))
    bg_pixels = ~fg
    flicker = (
        float(np.abs(np.diff(v, axis=0)).sum(-1)[bg_pixels[1:] & bg_pixels[:-1]].mean())
        if f > 1
        else 0.0
    )
    need = max(1, f // 2)  # frames an object must be present in
    good = [i for i in range(f) if areas[i] >= 6]
    if len(good) < need:
        return Detection(background, 0, flicker)
    per_color: dict[str, dict[int, np.ndarray]] = {}  # colour -> frame -> its pixels
    counts = []
    for i in good:
        blobs = _blobs(fg[i])
        counts.append(len(blobs))
        for blob in blobs:
            color = _nearest(np.median(v[i][blob], axis=0), shapes.COLORS)
            frames = per_color.setdefault(color, {})
            frames[i] = frames[i] | blob if i in frames else blob
    tracks = [
        _track([frames[i] for i in sorted(frames)], color)
        for color, frames in per_color.items()
        if len(frames) >= need
    ]
    if not tracks:  # a blob whose colour wanders: one object of all the foreground
        masks = [fg[i] for i in good]
        tracks = [_track(masks, _nearest(np.median(v[fg], axis=0), shapes.COLORS))]
    tracks.sort(key=lambda t: -t.area)
    return Detection(background, int(np.median(counts)), flicker, tuple(tracks))


def _match(items: tuple[shapes.Scene, ...], objects: tuple[Track, ...]) -> list[Track | None]:
    """The detected object of each asked shape: the one of its colour, else the largest left."""
    left = list(objects)
    out: list[Track | None] = [None] * len(items)
    for k, item in enumerate(items):
        same = [o for o in left if o.color == item.color]
        if same:
            out[k] = same[0]
            left.remove(same[0])
    for k in range(len(items)):
        if out[k] is None and left:
            out[k] = left.pop(0)
    return out


def score(scene: shapes.Scene, det: Detection) -> dict[str, bool]:
    items = scene.items
    found = _match(items, det.objects)
    s = {
        "color": all(o is not None and o.color == it.color for it, o in zip(items, found)),
        "shape": all(o is not None and o.shape == it.shape for it, o in zip(items, found)),
        "motion": all(o is not None and o.motion == it.motion for it, o in zip(items, found)),
        "background": scene.background is None or det.background == scene.background,
        "count": det.count == len(items) and len(det.objects) == len(items),
    }
    s["all"] = all(s.values())
    return s


def bench_prompts(
    n_per_split: int, languages: tuple[str, ...], seed: int = 0, n_two_shapes: int = 0
) -> list[dict]:
    """Prompts for seen and held-out combos, each in every language; ``n_two_shapes`` more per
    split name two shapes (splits ``seen-2`` / ``heldout-2``)."""
    out = []
    for split, n, two in (
        ("seen", n_per_split, 0.0),
        ("heldout", n_per_split, 0.0),
        ("seen-2", n_two_shapes, 1.0),
        ("heldout-2", n_two_shapes, 1.0),
    ):
        world = shapes.ShapesWorld(
            seed=seed + 1000, split="heldout" if "heldout" in split else "train", two_shapes=two
        )
        for i in range(n):
            scene = world[i][2]
            for lang in languages:
                out.append(
                    {
                        "split": split,
                        "lang": lang,
                        "scene": scene,
                        "prompt": shapes.caption(scene, lang, i),
                    }
                )
    return out


def run_shapesbench(
    generate_fn: Callable[[str, int], np.ndarray],
    *,
    n_prompts_per_split: int = 10,
    n_two_shapes: int = 0,
    languages: tuple[str, ...] = ("en", "zh"),
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    items = bench_prompts(n_prompts_per_split, languages, seed, n_two_shapes)
    rows = []
    for k, item in enumerate(items):
        det = analyze(generate_fn(item["prompt"], seed + k))
        rows.append({**{k2: v for k2, v in item.items() if k2 != "scene"}, "scene": asdict(item["scene"]),
                     "detected": asdict(det), "score": score(item["scene"], det)})  # fmt: skip
        if progress:
            progress(k + 1, len(items))
    groups: dict[str, dict[str, float]] = {}
    splits = ("seen", "heldout") + (("seen-2", "heldout-2") if n_two_shapes else ())
    for key in ["all"] + [f"{s}/{l}" for s in splits for l in languages]:
        sel = [r for r in rows if key == "all" or f"{r['split']}/{r['lang']}" == key]
        groups[key] = {f: float(np.mean([r["score"][f] for r in sel])) for f in FIELDS}
        groups[key]["n"] = len(sel)
        groups[key]["flicker"] = float(np.mean([r["detected"]["flicker"] for r in sel]))
    return {"groups": groups, "videos": rows}


def format_table(report: dict) -> str:
    head = f"{'group':14s} {'n':>4s} " + " ".join(f"{f:>10s}" for f in FIELDS) + f" {'flicker':>8s}"
    lines = [head, "-" * len(head)]
    for name, g in report["groups"].items():
        lines.append(
            f"{name:14s} {int(g['n']):4d} "
            + " ".join(f"{g[f]:10.3f}" for f in FIELDS)
            + f" {g['flicker']:8.2f}"
        )
    return "\n".join(lines)


def save_report(report: dict, path: str | Path) -> None:
    from openwan.checkpoint.io import atomic_path

    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(report, indent=1, ensure_ascii=False), encoding="utf-8")
