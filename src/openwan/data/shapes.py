"""The procedural "shapes world": flat shapes moving on plain backgrounds, with EN/ZH captions.

Everything is deterministic in (seed, index). A fixed list of held-out (colour, shape, motion)
combinations never appears in training; ShapesBench scores seen and held-out prompts apart.

A clip holds one shape, or two (``ShapesWorld(two_shapes=p)``: a share ``p`` of the clips) with
their own colours and motions. The two are laid out so they never touch: stacked (top / bottom)
when either moves sideways, side by side when either moves up or down; a pair never mixes a
sideways and an up/down motion, whose paths would cross.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

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
# two shapes: {a} and {b} are the shapes' own phrases, EN "a red circle moving up" (or, after
# "is", the motion alone), ZH "红色的圆形向上移动"
EN_PAIR_TEMPLATES = (
    "{a} and {b} on a {bg} background",
    "{a}, {b}, {bg} background",
    "on a {bg} background, {a} and {b}",
)
ZH_PAIR_TEMPLATES = ("{a}，{b}，背景是{bg}", "{bg}背景上，{a}，{b}", "在{bg}背景上，{a}，{b}")
SIDEWAYS, UPDOWN = ("left", "right"), ("up", "down")

HELDOUT_FILE = Path(__file__).with_name("heldout.json")


@functools.cache
def heldout_combos() -> frozenset[tuple[str, str, str]]:
    """(colour, shape, motion) triples that training never sees (the file is read once)."""
    return frozenset(tuple(c) for c in json.loads(HELDOUT_FILE.read_text(encoding="utf-8")))  # type: ignore[misc]


@dataclass(frozen=True)
class Scene:
    color: str
    shape: str
    motion: str
    background: str | None  # None: not specified (user prompt without a background)
    x0: float = 0.5  # centre in [0, 1] where the motion is centred
    y0: float = 0.5
    radius: float = 0.15  # fraction of the frame size
    companion: Scene | None = None  # a second shape (its own background field is unused)

    @property
    def combo(self) -> tuple[str, str, str]:
        return (self.color, self.shape, self.motion)

    @property
    def items(self) -> tuple[Scene, ...]:
        """The shapes of the clip: this one, then the companion if any."""
        return (self,) if self.companion is None else (self, self.companion)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Scene:
        """The inverse of ``dataclasses.asdict`` (the latent cache stores scenes as JSON)."""
        comp = d.get("companion")
        return cls(**{**d, "companion": None if comp is None else cls.from_dict(comp)})


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
        return place(Scene(color, shape, motion, bg), rng)


def compatible(a: str, b: str) -> bool:
    """Two motions one clip may hold: never one sideways and one up/down (the paths cross)."""
    return not ((a in SIDEWAYS and b in UPDOWN) or (a in UPDOWN and b in SIDEWAYS))


def place_pair(rng: np.random.Generator, first: Scene, second: Scene) -> Scene:
    """``first`` with ``second`` as companion, both at positions where they never touch."""
    motions = (first.motion, second.motion)
    if any(m in SIDEWAYS for m in motions):
        stacked = True
    elif any(m in UPDOWN for m in motions):
        stacked = False
    else:
        stacked = bool(rng.random() < 0.5)
    lanes = (0.26, 0.74) if stacked else (0.25, 0.75)
    order = rng.permutation(2)
    placed = []
    for item, lane in zip((first, second), (lanes[order[0]], lanes[order[1]])):
        across = float(rng.uniform(0.42, 0.58))
        x0, y0 = (across, lane) if stacked else (lane, across)
        placed.append(replace(item, x0=x0, y0=y0, radius=float(rng.uniform(0.08, 0.11))))
    return replace(placed[0], companion=replace(placed[1], background=None, companion=None))


def place(scene: Scene, rng: np.random.Generator) -> Scene:
    """A parsed scene with positions and sizes drawn like the world's (for rendering it)."""
    if scene.companion is not None:
        return place_pair(rng, scene, scene.companion)
    return replace(
        scene, x0=float(rng.uniform(0.4, 0.6)), y0=float(rng.uniform(0.4, 0.6)),
        radius=float(rng.uniform(0.12, 0.17)),
    )  # fmt: skip


def sample_pair(rng: np.random.Generator, first: Scene, split: str = "train") -> Scene:
    """Add a second shape to ``first``: another colour, a compatible motion, and a combo that is
    not held out (a held-out pair is one whose first shape is held out)."""
    held = heldout_combos()
    bg = first.background or "black"
    while True:
        color = str(rng.choice(list(COLORS)))
        shape = str(rng.choice(SHAPES))
        motion = str(rng.choice(MOTIONS))
        if color == first.color or not allowed(color, bg) or not compatible(first.motion, motion):
            continue
        if (color, shape, motion) in held:
            continue
        return place_pair(rng, first, Scene(color, shape, motion, None))


def _item_phrase(item: Scene, lang: str, variant: int, after_is: bool) -> str:
    if lang == "en":
        motion = EN_MOTIONS[item.motion][variant % 3]
        return f"a {item.color} {item.shape} {'is ' if after_is else ''}{motion}"
    return f"{ZH_COLORS[item.color]}的{ZH_SHAPES[item.shape]}{ZH_MOTIONS[item.motion][variant % 3]}"


def caption(scene: Scene, lang: str = "en", variant: int = 0) -> str:
    bg = scene.background or "black"
    if scene.companion is not None:
        templates = EN_PAIR_TEMPLATES if lang == "en" else ZH_PAIR_TEMPLATES
        tpl = templates[variant % len(templates)]
        is_form = lang == "en" and variant % len(templates) == 2
        a, b = (
            _item_phrase(item, lang, variant // len(templates) + k, is_form)
            for k, item in enumerate(scene.items)
        )
        return tpl.format(a=a, b=b, bg=bg if lang == "en" else ZH_BACKGROUNDS[bg])
    if lang == "en":
        tpl = EN_TEMPLATES[variant % len(EN_TEMPLATES)]
        motion = EN_MOTIONS[scene.motion][(variant // len(EN_TEMPLATES)) % 3]
        return tpl.format(color=scene.color, shape=scene.shape, motion=motion, bg=bg)
    tpl = ZH_TEMPLATES[variant % len(ZH_TEMPLATES)]
    motion = ZH_MOTIONS[scene.motion][(variant // len(ZH_TEMPLATES)) % 3]
    return tpl.format(color=ZH_COLORS[scene.color], shape=ZH_SHAPES[scene.shape], motion=motion,
                      bg=ZH_BACKGROUNDS[bg])  # fmt: skip


def caption_corpus(pairs: bool = False) -> list[str]:
    """Every caption phrasing of every one-shape scene (for training the tokenizer), and with
    ``pairs`` every two-shape phrasing too (kept apart: the shipped tokenizer predates them)."""
    out = []
    for color in COLORS:
        for shape in SHAPES:
            for motion in MOTIONS:
                for bg in BACKGROUNDS:
                    s = Scene(color, shape, motion, bg)
                    out += [caption(s, lang, v) for lang in ("en", "zh") for v in range(9)]
    if not pairs:
        return out
    # two-shape phrasings: every template and connective, for a few pairs
    combos = [("red", "circle", "right"), ("blue", "square", "static"), ("green", "triangle", "up"),
             ("yellow", "circle", "growing"), ("cyan", "square", "down")]  # fmt: skip
    for (c1, s1, m1), (c2, s2, m2) in zip(combos, combos[1:] + combos[:1]):
        pair = Scene(c1, s1, m1, "gray", companion=Scene(c2, s2, m2, None))
        out += [caption(pair, lang, v) for lang in ("en", "zh") for v in range(9)]
    return out


def _hits(text: str, table: dict[str, tuple[str, ...]]) -> list[tuple[int, int, str]]:
    """Every (start, end, key) where one of a key's phrases occurs in ``text``."""
    out = []
    for key, phrases in table.items():
        for p in phrases:
            start = text.find(p)
            while start >= 0:
                out.append((start, start + len(p), key))
                start = text.find(p, start + 1)
    return sorted(out)


def parse_prompt(text: str) -> Scene | None:
    """Recover colour, shape, motion (and background if named) from an EN or ZH prompt; a prompt
    naming two shapes gives a scene with a companion (each shape takes the colour word before it
    and the motion phrase after it)."""
    t = text.lower()
    bg = None
    for key, zh in ZH_BACKGROUNDS.items():
        if f"{key} background" in t or f"背景是{zh}" in t or f"{zh}背景" in t:
            bg = key
    stripped = t  # without the background phrase, whose colour word is not a shape's
    if bg is not None:
        zh = ZH_BACKGROUNDS[bg]
        for phrase in (f"{bg} background", f"{zh}背景", f"背景是{zh}"):
            stripped = stripped.replace(phrase, " " * len(phrase))  # keep the positions
    shapes = _hits(stripped, {k: (k, ZH_SHAPES[k]) for k in SHAPES})
    colors = _hits(stripped, {k: (k, ZH_COLORS[k]) for k in COLORS})
    motions = _hits(stripped, {k: EN_MOTIONS[k] + ZH_MOTIONS[k] for k in MOTIONS})
    if not shapes or not colors or not motions:
        return None
    if len(shapes) == 1:  # one shape: the first colour and motion words, wherever they are
        return Scene(colors[0][2], shapes[0][2], motions[0][2], bg)
    items = []
    for k, (start, end, shape) in enumerate(shapes[:2]):
        prev_end = shapes[k - 1][1] if k else 0
        nxt = shapes[k + 1][0] if k + 1 < len(shapes) else len(stripped)
        color = [c for c in colors if prev_end <= c[0] < start]
        motion = [m for m in motions if end <= m[0] < nxt]
        if not color or not motion:
            return None
        items.append(Scene(color[-1][2], shape, motion[0][2], bg if k == 0 else None))
    return replace(items[0], companion=items[1])


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
    for item in scene.items:
        color = np.array(COLORS[item.color], dtype=np.uint8)
        for f, (x, y, r) in enumerate(zip(*trajectory(item, frames))):
            video[f][shape_mask(item.shape, x, y, r, size)] = color
    return video


def to_tensor(video: np.ndarray) -> torch.Tensor:
    """uint8 ``[F, H, W, 3]`` -> float ``[3, F, H, W]`` in [-1, 1]."""
    return torch.from_numpy(video).permute(3, 0, 1, 2).float().div(127.5).sub(1.0)


class ShapesWorld:
    """An endless, deterministic dataset of (video, caption, scene)."""

    def __init__(
        self,
        seed: int = 0,
        frames: int = 17,
        size: int = 64,
        split: str = "train",
        two_shapes: float = 0.0,
    ) -> None:
        if not 0.0 <= two_shapes <= 1.0:
            raise ValueError(f"two_shapes is a share of the clips in [0, 1], got {two_shapes}")
        self.seed, self.frames, self.size, self.split = seed, frames, size, split
        self.two_shapes = two_shapes

    def __getitem__(self, index: int) -> tuple[np.ndarray, str, Scene]:
        rng = np.random.default_rng([self.seed, index])
        scene = sample_scene(rng, self.split)
        lang = "en" if rng.random() < 0.5 else "zh"
        variant = int(rng.integers(0, 9))
        # drawn after the one-shape draws, so two_shapes=0 keeps every earlier clip unchanged
        if self.two_shapes > 0 and rng.random() < self.two_shapes:
            scene = sample_pair(rng, scene, self.split)
        text = caption(scene, lang, variant)
        return render(scene, self.frames, self.size), text, scene
