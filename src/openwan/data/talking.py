"""The "talking shapes" world for the tiny speech-to-video model: a flat face (circle or square,
two eyes, a mouth) whose mouth opening follows the loudness of a speech-like audio track.

Everything is deterministic in (seed, index). The audio is synthetic speech: syllables (voiced
harmonic bursts of a slowly gliding pitch, with a little breath noise) separated by pauses. Its
loudness envelope, averaged over each video frame, sets how wide the mouth is open in that frame.
Held-out items use audio seeds that training never draws (``split="heldout"``).

The analyzer half (:func:`measure_mouth`, :func:`sync_score`, :func:`identity_kept`) scores a
generated video against the audio that drove it: the mouth opening measured in the frames,
correlated with the audio envelope, and whether the face keeps its colour and shape.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from openwan.data.shapes import BACKGROUNDS, COLORS, shape_mask

RATE = 16000  # audio samples per second (what the S2V audio front end takes)
FPS = 16  # video frames per second (Wan's)
FACE_COLORS = ("yellow", "orange", "cyan", "green", "blue", "red")
FACE_SHAPES = ("circle", "square")
MOUTH = (90, 10, 30)  # dark maroon: far from every face colour and background
EYE = (250, 250, 250)
HELDOUT_SEED_OFFSET = 1_000_003  # held-out items draw their audio from seeds training never uses


@dataclass(frozen=True)
class Face:
    color: str
    shape: str
    background: str
    x0: float = 0.5  # centre, fraction of the frame
    y0: float = 0.5
    radius: float = 0.3


def syllable_envelope(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """Loudness in [0, 1] at ``RATE`` for ``seconds``: syllables of 0.12-0.35 s with raised-cosine
    attack and decay and their own peak loudness, separated by pauses of 0.05-0.4 s."""
    n = int(round(seconds * RATE))
    env: np.ndarray = np.zeros(n, np.float32)
    pos = int(rng.uniform(0.0, 0.2) * RATE)
    while pos < n:
        length = int(rng.uniform(0.12, 0.35) * RATE)
        peak = rng.uniform(0.45, 1.0)
        shape = np.sin(np.linspace(0.0, np.pi, length)) ** 2  # raised cosine bump
        end = min(n, pos + length)
        env[pos:end] = np.maximum(env[pos:end], peak * shape[: end - pos])
        pos = end + int(rng.uniform(0.05, 0.4) * RATE)
    return env


def speech_audio(rng: np.random.Generator, envelope: np.ndarray) -> np.ndarray:
    """Mono float32 samples: a voiced source (harmonics 1-8 of a pitch gliding around
    100-220 Hz) plus a little noise, shaped by ``envelope``; peak 0.5."""
    n = envelope.size
    t = np.arange(n) / RATE
    f0 = rng.uniform(100.0, 220.0) * (1.0 + 0.08 * np.sin(2 * np.pi * rng.uniform(0.5, 2.0) * t))
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    voiced = sum(np.sin(k * phase) / k for k in range(1, 9))
    noise = rng.standard_normal(n) * 0.15
    audio = (voiced + noise) * envelope
    peak = float(np.abs(audio).max())
    return (0.5 * audio / peak if peak > 0 else audio).astype(np.float32)


def _per_frame(
    signal: np.ndarray, frames: int, fps: int, reduce: Callable[[np.ndarray], float]
) -> np.ndarray:
    """``reduce`` of the samples in each video frame's time span (0 past the signal's end)."""
    per = RATE / fps
    out: np.ndarray = np.zeros(frames, np.float32)
    for f in range(frames):
        seg = signal[int(round(f * per)) : int(round((f + 1) * per))]
        out[f] = reduce(seg) if seg.size else 0.0
    return out


def frame_envelope(envelope: np.ndarray, frames: int, fps: int = FPS) -> np.ndarray:
    """The audio envelope averaged over each video frame's time span (``frames`` values)."""
    return _per_frame(envelope, frames, fps, lambda seg: float(seg.mean()))


def openness_from_envelope(env_frames: np.ndarray) -> np.ndarray:
    """Mouth opening in [0, 1] per frame: the frame envelope itself (the audio peaks at 1)."""
    return np.clip(env_frames, 0.0, 1.0)


def render_face(face: Face, openness: np.ndarray, size: int = 64) -> np.ndarray:
    """uint8 video ``[F, H, W, 3]``: the face on its background, the mouth (an ellipse below the
    centre) opened to ``openness[f]`` of its full height in frame ``f``."""
    bg = np.array(BACKGROUNDS[face.background], np.uint8)
    skin = np.array(COLORS[face.color], np.uint8)
    face_px = shape_mask(face.shape, face.x0, face.y0, face.radius, size)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    r = face.radius * size
    cx, cy = face.x0 * size, face.y0 * size
    eyes: np.ndarray = np.zeros((size, size), bool)
    for side in (-1, 1):
        ex, ey = cx + side * 0.38 * r, cy - 0.3 * r
        eyes |= (xx - ex) ** 2 + (yy - ey) ** 2 <= (0.14 * r) ** 2
    mx, my, half_w = cx, cy + 0.42 * r, 0.45 * r
    video: np.ndarray = np.empty((openness.size, size, size, 3), np.uint8)
    for f, o in enumerate(openness):
        frame = np.broadcast_to(bg, (size, size, 3)).copy()
        frame[face_px] = skin
        frame[eyes] = EYE
        half_h = 0.04 * r + 0.3 * r * float(o)  # a closed mouth is a thin line
        mouth = ((xx - mx) / half_w) ** 2 + ((yy - my) / half_h) ** 2 <= 1.0
        frame[mouth] = MOUTH
        video[f] = frame
    return video


@dataclass(frozen=True)
class TalkingItem:
    face: Face
    audio: np.ndarray  # float32 mono at RATE
    envelope: np.ndarray  # the audio's loudness at RATE
    video: np.ndarray  # uint8 [F, H, W, 3] of the ground truth
    opening: np.ndarray  # the mouth opening per frame the video is rendered with, [F]


class TalkingWorld:
    """Deterministic talking-face clips: ``world[i]`` is a face, ``seconds`` of speech-like audio
    and the ground-truth video of ``1 + FPS * seconds`` frames whose mouth follows the audio."""

    def __init__(
        self, seed: int = 0, seconds: float = 2.0, size: int = 64, split: str = "train"
    ) -> None:
        if split not in ("train", "heldout"):
            raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
        if seconds <= 0:
            raise ValueError(f"seconds must be > 0, got {seconds}")
        self.seed, self.seconds, self.size, self.split = seed, seconds, size, split

    @property
    def frames(self) -> int:
        return int(round(self.seconds * FPS)) + 1

    def face(self, rng: np.random.Generator) -> Face:
        return Face(
            color=str(rng.choice(FACE_COLORS)),
            shape=str(rng.choice(FACE_SHAPES)),
            background=str(rng.choice(list(BACKGROUNDS))),
            x0=float(rng.uniform(0.45, 0.55)),
            y0=float(rng.uniform(0.45, 0.55)),
            radius=float(rng.uniform(0.27, 0.33)),
        )

    def __getitem__(self, index: int) -> TalkingItem:
        rng = np.random.default_rng([self.seed, index])
        face = self.face(rng)
        offset = HELDOUT_SEED_OFFSET if self.split == "heldout" else 0
        audio_rng = np.random.default_rng([self.seed + offset, index, 1])
        env = syllable_envelope(audio_rng, (self.frames) / FPS)
        audio = speech_audio(audio_rng, env)
        opening = openness_from_envelope(frame_envelope(env, self.frames))
        return TalkingItem(face, audio, env, render_face(face, opening, self.size), opening)


def face_caption(face: Face) -> str:
    """The English caption of a face (the prompt s2v-tiny is trained and evaluated with)."""
    return f"a {face.color} {face.shape} face talking on a {face.background} background"


def audio_envelope(audio: np.ndarray, frames: int, fps: int = FPS) -> np.ndarray:
    """Loudness per video frame measured from samples alone (RMS over the frame's span): what
    the sync score compares the mouth with, for any audio (also one read from a file)."""
    return _per_frame(
        audio, frames, fps, lambda seg: float(np.sqrt(np.mean(seg.astype(np.float64) ** 2)))
    )


def _nearest(frame: np.ndarray, palette: list[tuple[int, int, int]]) -> np.ndarray:
    px: np.ndarray = frame.reshape(-1, 1, 3).astype(np.int32)
    d = ((px - np.array(palette, np.int32)[None]) ** 2).sum(-1)
    return d.argmin(1).reshape(frame.shape[:2])


def face_labels(frame: np.ndarray, face: Face) -> np.ndarray:
    """Each pixel of a frame ``[H, W, 3]`` labelled by the nearest of the face's colours:
    0 background, 1 face, 2 eye, 3 mouth."""
    return _nearest(frame, [BACKGROUNDS[face.background], COLORS[face.color], EYE, MOUTH])


def measure_mouth(video: np.ndarray, face: Face) -> np.ndarray:
    """Mouth opening per frame of a video ``[F, H, W, 3]``: pixels nearest the mouth colour (of
    background, face, eye and mouth colours) inside the face's bounding box, over the face area."""
    out: np.ndarray = np.zeros(len(video), np.float32)
    for f, frame in enumerate(video):
        label = face_labels(frame, face)
        body = label > 0
        if not body.any():
            continue
        ys, xs = np.nonzero(body)
        box = label[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
        out[f] = float((box == 3).sum()) / float(body.sum())
    return out


def sync_score(opening: np.ndarray, envelope: np.ndarray) -> float:
    """Pearson correlation of the measured mouth opening with the audio envelope (per frame);
    0 when either is constant."""
    a = opening.astype(np.float64) - opening.mean()
    b = envelope.astype(np.float64) - envelope.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else 0.0


def identity_kept(video: np.ndarray, face: Face) -> float:
    """Share of frames whose largest non-background colour is the face's and whose outline
    (face, eye and mouth pixels together) is closest to the face's shape."""
    from openwan.eval.shapesbench import classify_shape

    palette = [BACKGROUNDS[face.background], *(COLORS[c] for c in FACE_COLORS), EYE, MOUTH]
    want = 1 + FACE_COLORS.index(face.color)
    kept = 0
    for frame in video:
        label = _nearest(frame, palette)
        counts = np.bincount(label.ravel(), minlength=len(palette))
        colour_ok = int(counts[1 : 1 + len(FACE_COLORS)].argmax()) + 1 == want
        shape_ok = classify_shape(label > 0) == face.shape
        kept += bool(colour_ok and shape_ok)
    return kept / max(1, len(video))
