"""Diffusion caches on the embedded talking model (s2v-tiny): speed-up, fidelity and lip sync.

Every mode generates the same held-out talking items (3 clips of 16 frames, same seeds) through
the same WanS2V pipeline; only the denoiser changes. Rows report the time inside the DiT and end
to end relative to the uncached run, PSNR of each video against the uncached one of the same
seed, and the lip-sync / identity / seam scores of ``openwan eval s2v``.

    OMP_NUM_THREADS=1 python benchmarks/bench_s2v_cache.py    # 4 items, 40 steps (CPU time: one thread)
    python benchmarks/bench_s2v_cache.py --items 2 --steps 20 --modes taylor cfg:3
    python benchmarks/bench_s2v_cache.py --modes taylor taylor+v   # +v: taylor extrapolates v

Diffusers has no S2V pipeline, so there is no peer row; the reference is openwan's uncached run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_cache import Timed, bench_spec  # the CPU-time wrapper, the +suffixes of modes

from openwan.assets import tiny_model_dir
from openwan.data.shapes import to_tensor
from openwan.eval.metrics import psnr
from openwan.eval.talking import evaluate_s2v
from openwan.io.video import read_video
from openwan.pipelines.s2v import WanS2V
from openwan.runtime.cache import apply_cache

MODES = ["taylor", "taylor:4", "taylor:3", "cfg", "cfg:3", "attn", "taylor,cfg"]


def run(pipe: WanS2V, mode: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    plain = pipe.dit
    spec = bench_spec(mode)
    cached = apply_cache(plain, spec) if spec.enabled else None
    timed = Timed(cached if cached is not None else plain)
    pipe.dit = timed  # type: ignore[assignment]
    t0 = time.process_time()
    try:
        report = evaluate_s2v(
            pipe, items=args.items, steps=args.steps, keep_dir=out, progress=False
        )
    finally:
        pipe.dit = cached.remove() if cached is not None else plain  # type: ignore[assignment]
    report["seconds"] = time.process_time() - t0
    report["dit_seconds"] = timed.seconds
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=4)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--modes", nargs="*", default=MODES)
    args = ap.parse_args()
    torch.manual_seed(0)
    pipe = WanS2V.from_pretrained(tiny_model_dir("s2v"))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base = run(pipe, "off", args, root / "off")
        print(
            f"{'cache':12s} {'e2e x':>6s} {'DiT x':>6s} {'PSNR dB':>8s} {'sync':>6s} "
            f"{'identity':>8s} {'worst joint':>11s}"
        )

        def row(name: str, r: dict[str, Any], db: float) -> None:
            print(
                f"{name:12s} {base['seconds'] / r['seconds']:6.2f} "
                f"{base['dit_seconds'] / r['dit_seconds']:6.2f} {db:8.2f} {r['sync_mean']:6.3f} "
                f"{r['identity_mean']:8.3f} {r['worst_joint_ratio']:11.2f}"
            )

        row("off", base, float("inf"))
        for mode in args.modes:
            r = run(pipe, mode, args, root / mode)
            dbs = []
            for k in range(args.items):
                a = to_tensor(read_video(root / "off" / f"s2v_{k}.mp4")[0])
                b = to_tensor(read_video(root / mode / f"s2v_{k}.mp4")[0])
                dbs.append(psnr(a, b))
            row(mode, r, float(np.mean(dbs)))


if __name__ == "__main__":
    main()
