"""At what lag does a lip-sync edit's mouth follow its new audio? A diagnostic, not a benchmark.

Held-out talking-world items are written as source videos (their own speech's mouth); each is
edited (``openwan.pipelines.s2v_lipsync.lipsync``, the mouth region masked) with the speech of
another held-out item. The mouth opening measured in the edit is correlated with the new
audio's loudness at frame lags -4..4; an edit in sync peaks at lag 0.

    python tools/lipsync_lag.py                          # the embedded s2v-tiny
    python tools/lipsync_lag.py --ckpt-dir runs/s2v/export --items 8
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from openwan.data.talking import RATE, TalkingWorld, audio_envelope, face_caption, measure_mouth
from openwan.eval.talking import write_wav
from openwan.io.video import read_video, save_video

SECONDS, LAGS = 3, range(-4, 5)


def mouth_mask(video: np.ndarray, margin: int = 4) -> np.ndarray:
    """The box around every pixel that changes over the source video (its mouth), widened."""
    ys, xs = np.nonzero(video.astype(np.float32).std(0).sum(-1) > 1)
    mask = np.zeros(video.shape[1:3], np.uint8)
    mask[max(0, ys.min() - margin) : ys.max() + margin + 1,
         max(0, xs.min() - margin) : xs.max() + margin + 1] = 255  # fmt: skip
    return mask


def lagged(a: np.ndarray, b: np.ndarray, lag: int) -> float:
    """Pearson correlation of ``a`` (lag frames later) with ``b``."""
    x, y = (a[lag:], b[: len(b) - lag]) if lag >= 0 else (a[:lag], b[-lag:])
    return float(np.corrcoef(x, y)[0, 1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--ckpt-dir", default=None, help="S2V folder (default: the embedded s2v-tiny)")
    ap.add_argument("--items", type=int, default=4)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()

    from openwan.assets import tiny_model_dir
    from openwan.pipelines.s2v import WanS2V
    from openwan.pipelines.s2v_lipsync import lipsync, lipsync_request

    pipe = WanS2V.from_pretrained(args.ckpt_dir or tiny_model_dir("s2v"), device="cpu")
    world = TalkingWorld(seed=0, seconds=SECONDS, size=64, split="heldout")
    scores: dict[int, list[float]] = {lag: [] for lag in LAGS}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for k in range(args.items):
            src, new = world[k], world[k + args.items]
            video = np.ascontiguousarray(src.video[: SECONDS * 16])
            save_video(video, tmp / "src.mp4", fps=16)
            write_wav(tmp / "new.wav", new.audio[: SECONDS * RATE])
            Image.fromarray(mouth_mask(video)).save(tmp / "mask.png")
            out = tmp / f"edit_{k}.mp4"
            request = lipsync_request(
                face_caption(src.face), tmp / "new.wav", tmp / "src.mp4", mask=tmp / "mask.png",
                steps=args.steps, max_area=64 * 64, infer_frames=16, seed=k,
            )  # fmt: skip
            lipsync(pipe, request, out)
            edit, _ = read_video(out)
            mouth, loud = measure_mouth(edit, src.face), audio_envelope(new.audio, len(edit))
            for lag in LAGS:
                scores[lag].append(lagged(mouth, loud, lag))
    print(f"{args.items} edits: correlation of the mouth opening with the new audio's loudness")
    for lag in LAGS:
        print(f"mouth {lag:+d} frames later: {np.mean(scores[lag]):+.3f}")


if __name__ == "__main__":
    main()
