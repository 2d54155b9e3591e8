"""ShapesBench: a deterministic analyzer of generated shapes-world videos against their prompts.

Per video: background (border mode), the shape pixels (far from the background), their colour
(nearest palette colour), shape class (fill ratio of the bounding box: square ~1, circle ~0.79,
triangle ~0.5), and motion (centroid travel and area change over time). Scores: colour, shape,
motion, background, count, all-correct; aggregated per language and seen vs held-out.
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
class Detection:
    color: str | None
    shape: str | None
    motion: str | None
    background: str | None
    count: int
    flicker: float


def _nearest(rgb: np.ndarray, table: dict[str, tuple[int, int, int]]) -> str:
    names = list(table)
    d = [float(np.abs(rgb - np.array(table[n], dtype=np.float32)).sum()) for n in names]
    return names[int(np.argmin(d))]


def _components(mask: np.ndarray) -> int:
    """Number of 4-connected blobs of at least 6 pixels (a small flood fill, no scipy)."""
    seen = np.zeros_like(mask, dtype=bool)
    count = 0
    h, w = mask.shape
    for y, x in zip(*np.nonzero(mask)):
        if seen[y, x]:
            continue
        stack, size = [(y, x)], 0
        seen[y, x] = True
        while stack:
            cy, cx = stack.pop()
            size += 1
            for ny, nx in ((cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
        count += size >= 6
    return count


def classify_shape(mask: np.ndarray) -> str:
    ys, xs = np.nonzero(mask)
    box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
    fill = len(ys) / box
    if fill > 0.9:
        return "square"
    return "circle" if fill > 0.64 else "triangle"


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
    if (areas >= 6).sum() < max(1, f // 2):
        return Detection(None, None, None, background, 0, flicker)
    good = [i for i in range(f) if areas[i] >= 6]
    color = _nearest(np.median(v[fg], axis=0), shapes.COLORS)
    votes = [classify_shape(fg[i]) for i in good]
    shape = max(set(votes), key=votes.count)
    count = int(np.median([_components(fg[i]) for i in good[:: max(1, len(good) // 4)]]))
    ys = np.array([np.nonzero(fg[i])[0].mean() for i in good])
    xs = np.array([np.nonzero(fg[i])[1].mean() for i in good])
    dx, dy = (xs[-1] - xs[0]) / w, (ys[-1] - ys[0]) / h
    ratio = areas[good[-1]] / max(1, areas[good[0]])
    if ratio > 1.5:
        motion = "growing"
    elif ratio < 1 / 1.5:
        motion = "shrinking"
    elif max(abs(dx), abs(dy)) < 0.12:
        motion = "static"
    elif abs(dx) >= abs(dy):
        motion = "right" if dx > 0 else "left"
    else:
        motion = "down" if dy > 0 else "up"
    return Detection(color, shape, motion, background, count, flicker)


def score(scene: shapes.Scene, det: Detection) -> dict[str, bool]:
    s = {
        "color": det.color == scene.color,
        "shape": det.shape == scene.shape,
        "motion": det.motion == scene.motion,
        "background": scene.background is None or det.background == scene.background,
        "count": det.count == 1,
    }
    s["all"] = all(s.values())
    return s


def bench_prompts(n_per_split: int, languages: tuple[str, ...], seed: int = 0) -> list[dict]:
    """Prompts for seen and held-out combos, each in every language."""
    out = []
    for split in ("seen", "heldout"):
        world = shapes.ShapesWorld(
            seed=seed + 1000, split="train" if split == "seen" else "heldout"
        )
        for i in range(n_per_split):
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
    languages: tuple[str, ...] = ("en", "zh"),
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    items = bench_prompts(n_prompts_per_split, languages, seed)
    rows = []
    for k, item in enumerate(items):
        det = analyze(generate_fn(item["prompt"], seed + k))
        rows.append({**{k2: v for k2, v in item.items() if k2 != "scene"}, "scene": asdict(item["scene"]),
                     "detected": asdict(det), "score": score(item["scene"], det)})  # fmt: skip
        if progress:
            progress(k + 1, len(items))
    groups: dict[str, dict[str, float]] = {}
    for key in ["all"] + [f"{s}/{l}" for s in ("seen", "heldout") for l in languages]:
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
