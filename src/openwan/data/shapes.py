"""The procedural "shapes world": flat shapes moving on plain backgrounds, with EN/ZH captions.

Everything is deterministic in (seed, index). A fixed list of held-out (colour, shape, motion)
combinations never appears in training; ShapesBench scores seen and held-out prompts apart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30),
    "green": (30, 200, 40),
    "blue": (40, 80, 250),
    "yellow": (245, 225, 20),
    "white": (245, 245, 245),
    "purple": (160, 40, 210),
    "orange": (255, 140, 0),
    "cyan": (0, 225, 230),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "gray": (110, 110, 110),
    "navy": (15, 20, 90),
}
DARK_BACKGROUNDS = ("black", "navy")  # white shapes only on these
SHAPES = ("circle", "square", "triangle")
MOTIONS = ("right", "left", "up", "down", "static", "growing", "shrinking")

ZH_COLORS = {"red": "红色", "green": "绿色", "blue": "蓝色", "yellow": "黄色", "white": "白色",
             "purple": "紫色", "orange": "橙色", "cyan": "青色"}  # fmt: skip
ZH_SHAPES = {"circle": "圆形", "square": "正方形", "triangle": "三角形"}
ZH_BACKGROUNDS = {"black": "黑色", "gray": "灰色", "navy": "深蓝色"}
EN_MOTIONS = {
    "right": ("moving from left to right", "moving right", "sliding to the right"),
    "left": ("moving from right to left", "moving left", "sliding to the left"),
    "up": ("moving up", "moving upward", "rising"),
    "down": ("moving down", "moving downward", "falling"),
    "static": ("staying still", "not moving", "standing still"),
    "growing": ("growing", "getting bigger", "expanding"),
    "shrinking": ("shrinking", "getting smaller", "contracting"),
}
ZH_MOTIONS = {
    "right": ("从左向右移动", "向右移动", "向右滑动"),
    "left": ("从右向左移动", "向左移动", "向左滑动"),
    "up": ("向上移动", "往上移动", "上升"),
    "down": ("向下移动", "往下移动", "下落"),
    "static": ("静止不动", "保持不动", "一动不动"),
    "growing": ("逐渐变大", "慢慢变大", "不断变大"),
    "shrinking": ("逐渐变小", "慢慢变小", "不断变小"),
}
EN_TEMPLATES = (
    "a {color} {shape} {motion} on a {bg} background",
    "{color} {shape} {motion}, {bg} background",
    "on a {bg} background, a {color} {shape} is {motion}",
)
ZH_TEMPLATES = ("{color}的{shape}在{bg}背景上{motion}", "{bg}背景上，一个{color}的{shape}{motion}",
                "一个{color}{shape}{motion}，背景是{bg}")  # fmt: skip

HELDOUT_FILE = Path(__file__).with_name("heldout.json")


def heldout_combos() -> set[tuple[str, str, str]]:
    """(colour, shape, motion) triples that training never sees."""
    return {tuple(c) for c in json.loads(HELDOUT_FILE.read_text(encoding="utf-8"))}  # type: ignore[misc]


@dataclass(frozen=True)
class Scene:
    color: str
    shape: str
    motion: str
    background: str | None  # None: not specified (user prompt without a background)
    x0: float = 0.5  # centre in [0, 1] where the motion is centred
    y0: float = 0.5
    radius: float = 0.15  # fraction of the frame size

    @property
    def combo(self) -> tuple[str, str, str]:
        return (self.color, self.shape, self.motion)


def allowed(color: str, background: str) -> bool:
    return color != "white" or background in DARK_BACKGROUNDS


def sample_scene(rng: np.random.Generator, split: str = "train") -> Scene:
    """A random scene; ``split`` 'train' avoids held-out combos, 'heldout' uses only them."""
    held = heldout_combos()
    while True:
        color = str(rng.choice(list(COLORS)))
        shape = str(rng.choice(SHAPES))
        motion = str(rng.choice(MOTIONS))
        bg = str(rng.choice(list(BACKGROUNDS)))
        if not allowed(color, bg) or ((color, shape, motion) in held) != (split == "heldout"):
            continue
        return Scene(
            color, shape, motion, bg,
            x0=float(rng.uniform(0.4, 0.6)), y0=float(rng.uniform(0.4, 0.6)),
            radius=float(rng.uniform(0.12, 0.17)),
        )  # fmt: skip


def caption(scene: Scene, lang: str = "en", variant: int = 0) -> str:
    bg = scene.background or "black"
    if lang == "en":
        tpl = EN_TEMPLATES[variant % len(EN_TEMPLATES)]
        motion = EN_MOTIONS[scene.motion][(variant // len(EN_TEMPLATES)) % 3]
        return tpl.format(color=scene.color, shape=scene.shape, motion=motion, bg=bg)
    tpl = ZH_TEMPLATES[variant % len(ZH_TEMPLATES)]
    motion = ZH_MOTIONS[scene.motion][(variant // len(ZH_TEMPLATES)) % 3]
    return tpl.format(color=ZH_COLORS[scene.color], shape=ZH_SHAPES[scene.shape], motion=motion,
                      bg=ZH_BACKGROUNDS[bg])  # fmt: skip


def caption_corpus() -> list[str]:
    """Every caption phrasing of every scene (for training the tokenizer)."""
    out = []
    for color in COLORS:
        for shape in SHAPES:
            for motion in MOTIONS:
                for bg in BACKGROUNDS:
                    s = Scene(color, shape, motion, bg)
                    out += [caption(s, lang, v) for lang in ("en", "zh") for v in range(9)]
    return out


def parse_prompt(text: str) -> Scene | None:
    """Recover colour, shape, motion (and background if named) from an EN or ZH prompt."""
    t = text.lower()

    def find(table: dict[str, tuple[str, ...]]) -> str | None:
        hits = [(t.find(p), k) for k, ps in table.items() for p in ps if p in t]
        return min(hits)[1] if hits else None

    bg = None
    for key, zh in ZH_BACKGROUNDS.items():
        if f"{key} background" in t or f"背景是{zh}" in t or f"{zh}背景" in t:
            bg = key
    shape = find({k: (k, ZH_SHAPES[k]) for k in SHAPES})
    # colour: the first colour word that is not the background's
    colors = {k: (k, ZH_COLORS[k]) for k in COLORS}
    stripped = t
    if bg is not None:
        stripped = stripped.replace(f"{bg} background", "").replace(f"{ZH_BACKGROUNDS[bg]}背景", "")
        stripped = stripped.replace(f"背景是{ZH_BACKGROUNDS[bg]}", "")
    hits = [(stripped.find(p), k) for k, ps in colors.items() for p in ps if p in stripped]
    color = min(hits)[1] if hits else None
    motion = find({k: EN_MOTIONS[k] + ZH_MOTIONS[k] for k in MOTIONS})
    if color is None or shape is None or motion is None:
        return None
    return Scene(color, shape, motion, bg)


# ------------------------------------------------------------------------------ rendering
def trajectory(scene: Scene, frames: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre x, centre y and radius (fractions of the frame) for every frame."""
    s = np.linspace(0.0, 1.0, frames)
    x = np.full(frames, scene.x0)
    y = np.full(frames, scene.y0)
    r = np.full(frames, scene.radius)
    travel = 0.5  # half the frame
    if scene.motion == "right":
        x = scene.x0 - travel / 2 + travel * s
    elif scene.motion == "left":
        x = scene.x0 + travel / 2 - travel * s
    elif scene.motion == "down":
        y = scene.y0 - travel / 2 + travel * s
    elif scene.motion == "up":
        y = scene.y0 + travel / 2 - travel * s
    elif scene.motion == "growing":
        r = scene.radius * (0.6 + 0.9 * s)
    elif scene.motion == "shrinking":
        r = scene.radius * (1.5 - 0.9 * s)
    return x, y, r


def shape_mask(shape: str, cx: float, cy: float, r: float, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    cx, cy, r = cx * size, cy * size, r * size
    if shape == "circle":
        return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    if shape == "square":
        h = r * 0.886  # same area as the circle
        return (np.abs(xx - cx) <= h) & (np.abs(yy - cy) <= h)
    # equilateral triangle pointing up, area close to the circle's
    side = r * 2.69
    height = side * np.sqrt(3) / 2
    top, bottom = cy - 2 * height / 3, cy + height / 3
    half = (yy - top) / height * side / 2
    return (yy >= top) & (yy <= bottom) & (np.abs(xx - cx) <= half)


def render(scene: Scene, frames: int = 17, size: int = 64) -> np.ndarray:
    """uint8 video ``[F, H, W, 3]``."""
    bg = np.array(BACKGROUNDS[scene.background or "black"], dtype=np.uint8)
    video = np.broadcast_to(bg, (frames, size, size, 3)).copy()
    color = np.array(COLORS[scene.color], dtype=np.uint8)
    for f, (x, y, r) in enumerate(zip(*trajectory(scene, frames))):
        video[f][shape_mask(scene.shape, x, y, r, size)] = color
    return video


def to_tensor(video: np.ndarray) -> torch.Tensor:
    """uint8 ``[F, H, W, 3]`` -> float ``[3, F, H, W]`` in [-1, 1]."""
    return torch.from_numpy(video).permute(3, 0, 1, 2).float().div(127.5).sub(1.0)


class ShapesWorld:
    """An endless, deterministic dataset of (video, caption, scene)."""

    def __init__(
        self, seed: int = 0, frames: int = 17, size: int = 64, split: str = "train"
    ) -> None:
        self.seed, self.frames, self.size, self.split = seed, frames, size, split

    def __getitem__(self, index: int) -> tuple[np.ndarray, str, Scene]:
        rng = np.random.default_rng([self.seed, index])
        scene = sample_scene(rng, self.split)
        lang = "en" if rng.random() < 0.5 else "zh"
        text = caption(scene, lang, int(rng.integers(0, 9)))
        return render(scene, self.frames, self.size), text, scene
