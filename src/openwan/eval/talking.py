"""Scoring an S2V model on held-out talking-shapes audio (``openwan eval s2v``).

Per held-out item of :class:`openwan.data.talking.TalkingWorld`: the item's face drawn with its
mouth closed is the reference image, its caption the prompt, its (held-out) speech the audio.
The model makes a several-clip mp4 with the audio muxed in, exactly as ``openwan generate`` does;
the scores are read back from that file:

- **sync**: Pearson correlation of the mouth opening measured in the frames
  (:func:`~openwan.data.talking.measure_mouth`) with the audio's loudness per frame;
- **identity**: share of frames that keep the reference's colour and shape;
- **seams**: at each clip joint, the frame change over the median change inside the clips
  (:func:`~openwan.eval.metrics.seam_ratios`; within 2x shows no seam);
- **A/V**: the audio stream's declared duration minus the video's, in frames.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from openwan.data.talking import (
    FPS,
    RATE,
    TalkingWorld,
    audio_envelope,
    face_caption,
    identity_kept,
    measure_mouth,
    render_face,
    sync_score,
)


@dataclass(frozen=True)
class TalkingScore:
    item: int
    prompt: str
    frames: int
    sync: float
    identity: float
    joint_ratios: list[float]
    av_offset_frames: float  # audio duration - video duration, in video frames


def write_wav(path: Path, audio: np.ndarray, rate: int = RATE) -> None:
    """16-bit mono PCM wav (what a user would hand the CLI)."""
    import wave

    pcm = (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def score_video(
    path: Path, item: Any, clip_frames: int, index: int = 0, prompt: str = ""
) -> TalkingScore:
    """The scores of one generated mp4 against the talking-world item that drove it."""
    from openwan.data.shapes import to_tensor
    from openwan.eval.metrics import seam_ratios
    from openwan.io.audio import stream_durations
    from openwan.io.video import read_video

    video, _ = read_video(path)  # uint8 [F, H, W, 3]
    frames = len(video)
    opening = measure_mouth(video, item.face)
    loud = audio_envelope(item.audio, frames)
    joints = list(range(clip_frames, frames, clip_frames))
    pixels = to_tensor(video)
    v_sec, a_sec = stream_durations(path)
    return TalkingScore(
        item=index,
        prompt=prompt,
        frames=frames,
        sync=sync_score(opening, loud),
        identity=identity_kept(video, item.face),
        joint_ratios=seam_ratios(pixels, joints) if joints else [],
        av_offset_frames=(a_sec - v_sec) * FPS,
    )


def evaluate_s2v(
    pipe: Any,
    *,
    items: int = 8,
    clips: int = 3,
    clip_frames: int = 16,
    steps: int | None = None,
    guide_scale: float | None = None,
    seed: int = 0,
    world_seed: int = 0,
    size: int = 64,
    keep_dir: Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Generate ``items`` held-out talking videos of ``clips`` clips with ``pipe``
    (:class:`~openwan.pipelines.s2v.WanS2V`) at ``size`` x ``size`` and score them; returns the
    report dict."""
    from PIL import Image
    from tqdm import tqdm

    from openwan.pipelines.s2v import S2V_GUIDE, S2V_STEPS, S2VRequest

    seconds = clips * clip_frames / FPS
    world = TalkingWorld(seed=world_seed, seconds=seconds, size=size, split="heldout")
    rows: list[TalkingScore] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        work = keep_dir or Path(tmp_name)
        work.mkdir(parents=True, exist_ok=True)
        for k in tqdm(range(items), desc="s2v eval", unit="video", disable=not progress):
            item = world[k]
            ref, wav, out = work / f"ref_{k}.png", work / f"audio_{k}.wav", work / f"s2v_{k}.mp4"
            Image.fromarray(render_face(item.face, np.zeros(1, np.float32), size)[0]).save(ref)
            # the audio of exactly ``clips`` clips (the world draws one frame more)
            write_wav(wav, item.audio[: int(round(seconds * RATE))])
            prompt = face_caption(item.face)
            request = S2VRequest(
                prompt=prompt,
                audio=wav,
                image=ref,
                max_area=size * size,
                infer_frames=clip_frames,
                num_clip=clips,
                seed=seed + k,
                steps=steps or S2V_STEPS,
                guide_scale=S2V_GUIDE if guide_scale is None else guide_scale,
            )
            if out.exists():
                out.unlink()
            pipe.generate(request, out)
            rows.append(score_video(out, item, clip_frames, k, prompt))
    worst = [max(r.joint_ratios) if r.joint_ratios else 0.0 for r in rows]
    return {
        "items": [asdict(r) for r in rows],
        "sync_mean": float(np.mean([r.sync for r in rows])),
        "sync_min": float(np.min([r.sync for r in rows])),
        "identity_mean": float(np.mean([r.identity for r in rows])),
        "share_seamless": float(np.mean([w <= 2.0 for w in worst])),
        "worst_joint_ratio": float(np.max(worst)),
        "max_av_offset_frames": float(np.max([abs(r.av_offset_frames) for r in rows])),
    }
