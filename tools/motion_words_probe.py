"""Does a tiny DiT use the motion words of its prompts? A diagnostic, not a benchmark.

For one-shape shapes-world clips, the flow-matching loss is computed with the true caption, with
the same caption whose motion is swapped (right<->left, up<->down, growing<->shrinking,
static->right) and with the empty caption, at several noise levels and with the same noise. A
DiT that uses the motion words has a clearly lower loss with the true caption than with the
swapped one.

    python tools/motion_words_probe.py                     # the embedded t2v-tiny DiT
    python tools/motion_words_probe.py --task i2v-tiny     # the I2V one, given frame 0
    python tools/motion_words_probe.py --ckpt-dir runs/wan-tiny-r4
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import torch

from openwan.data.shapes import ShapesWorld, caption, to_tensor
from openwan.pipelines.image_cond import encode_frame_condition

SWAP = {"right": "left", "left": "right", "up": "down", "down": "up", "static": "right",
        "growing": "shrinking", "shrinking": "growing"}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--ckpt-dir", default=None, help="model folder (default: the embedded one)")
    ap.add_argument("--task", default="t2v-tiny", choices=("t2v-tiny", "i2v-tiny"))
    ap.add_argument("--clips", type=int, default=48, help="clips drawn (two-shape ones skipped)")
    ap.add_argument("--sigmas", type=float, nargs="*", default=[0.5, 0.8, 0.95, 0.98, 1.0])
    args = ap.parse_args()

    if args.task == "i2v-tiny":
        from openwan.pipelines.i2v import WanI2V

        pipe = WanI2V.from_pretrained(args.ckpt_dir, task=args.task)
    else:
        from openwan.pipelines.t2v import WanT2V

        pipe = WanT2V.from_pretrained(args.ckpt_dir, task=args.task)
    world = ShapesWorld(seed=123, frames=17, size=64, split="train")
    videos, true, swapped = [], [], []
    for i in range(args.clips):
        video, _, scene = world[i]
        if scene.companion is not None:
            continue
        videos.append(to_tensor(video))
        true.append(caption(scene, "en", 0))
        swapped.append(caption(replace(scene, motion=SWAP[scene.motion]), "en", 0))
    with torch.no_grad():
        x0 = pipe.vae.encode(torch.stack(videos))
        kwargs = {}
        if args.task == "i2v-tiny":
            y = [encode_frame_condition(pipe.vae, {0: v[:, 0]}, 17, (64, 64)) for v in videos]
            kwargs["y"] = torch.stack(y)
        contexts = [pipe.text_encoder.encode(t) for t in (true, swapped, [""] * len(true))]
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
        print(
            f"{len(videos)} clips, {args.task}: loss with the true / motion-swapped / empty caption"
        )
        for s in args.sigmas:
            xt = (1 - s) * x0 + s * noise
            t = torch.full((len(videos),), s * 1000.0)
            loss = [
                float(((pipe.dit(xt, t, c, **kwargs) - (noise - x0)) ** 2).mean()) for c in contexts
            ]
            gap = (loss[1] - loss[0]) / loss[0]
            print(f"sigma {s:.2f}: {loss[0]:.4f} / {loss[1]:.4f} ({gap:+.1%}) / {loss[2]:.4f}")


if __name__ == "__main__":
    main()
