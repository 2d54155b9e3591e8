"""First-block diffusion cache on a real model: time, blocks run, drift and ShapesBench.

For each threshold, the same prompts and seeds are generated with and without the cache in
this run; the table prints time ratios against the uncached pipeline, the fraction of DiT block
stacks actually run, the relative difference of the videos, and (on the tiny shapes model) the
ShapesBench all-correct rate of both.

    python benchmarks/bench_cache.py                       # embedded wan-tiny, 6 prompts
    python benchmarks/bench_cache.py --thresholds 0.05 0.1 --prompts 3
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from openwan.eval import shapesbench
from openwan.io.video import to_uint8_frames
from openwan.pipelines.t2v import WanT2V
from openwan.runtime.cache import apply_first_block_cache


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--ckpt-dir", default=None, help="default: the embedded tiny model")
    ap.add_argument("--thresholds", type=float, nargs="+", default=[0.03, 0.05, 0.1, 0.2])
    ap.add_argument("--prompts", type=int, default=3, help="per split (seen / held-out), EN+ZH")
    ap.add_argument("--steps", type=int, default=None)
    args = ap.parse_args()
    torch.manual_seed(0)
    pipe = WanT2V.from_pretrained(args.ckpt_dir, device="cpu")
    items = shapesbench.bench_prompts(args.prompts, ("en", "zh"))

    def run_all() -> tuple[list[torch.Tensor], float]:
        videos, t0 = [], time.perf_counter()
        for k, item in enumerate(items):
            videos.append(pipe(item["prompt"], seed=k, steps=args.steps))
        return videos, time.perf_counter() - t0

    def bench(videos: list[torch.Tensor]) -> float:
        hits = [
            shapesbench.score(item["scene"], shapesbench.analyze(to_uint8_frames(v)))["all"]
            for item, v in zip(items, videos)
        ]
        return float(np.mean(hits))

    pipe(items[0]["prompt"], seed=0, steps=2)  # warm-up (first-call allocations, lazy imports)
    base, base_s = run_all()
    print(
        f"{len(items)} videos, task {pipe.task.name}; uncached {base_s:.1f}s, ShapesBench all-correct {bench(base):.3f}"
    )
    print(
        f"{'threshold':>9s} {'time x':>7s} {'blocks run':>10s} {'rel diff':>9s} {'all-correct':>11s}"
    )
    for th in args.thresholds:
        cache = apply_first_block_cache(pipe.dit, th)
        videos, s = run_all()
        cache.remove()
        diff = max(float((a - b).norm() / b.norm()) for a, b in zip(videos, base))
        print(
            f"{th:9.3f} {s / base_s:7.2f} {cache.stats.block_fraction:10.2f} {diff:9.2e} {bench(videos):11.3f}"
        )


if __name__ == "__main__":
    main()
