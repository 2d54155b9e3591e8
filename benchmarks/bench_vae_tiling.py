"""Wan2.1 VAE decode at 480P: peak RSS and time with and without tiling (random weights).

    OMP_NUM_THREADS=2 python benchmarks/bench_vae_tiling.py --frames 81   # the full clip (slow on CPU)
    OMP_NUM_THREADS=2 python benchmarks/bench_vae_tiling.py --frames 5    # 2 latent frames

Each mode runs in its own process (peak RSS is its own). The causal decoder streams one latent
frame at a time, so the peak comes from one chunk's activations at full frame size; tiling cuts
that to one tile's. The PSNR column compares the tiled video with the untiled one.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()


def child(mode: str, frames: int, size: tuple[int, int], tile: int, overlap: int) -> None:
    import torch

    from openwan.configs.vae import WAN21_VAE
    from openwan.models.vae import WanVAE
    from openwan.runtime.vae_tiling import tiled_decode

    torch.manual_seed(0)
    vae = WanVAE(WAN21_VAE).eval()
    t = (frames - 1) // 4 + 1
    z = torch.randn(
        1, 16, t, size[1] // 8, size[0] // 8, generator=torch.Generator().manual_seed(1)
    )
    t0 = time.process_time()
    with torch.no_grad():
        video = vae.decode(z) if mode == "untiled" else tiled_decode(vae, z, tile, overlap)
    seconds = time.process_time() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    torch.save(video[0], f"/tmp/bench_vae_tiling_{mode}.pt")
    print(json.dumps({"seconds": seconds, "peak_mb": peak}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--frames", type=int, default=81)
    ap.add_argument("--size", default="832*480", help="WIDTH*HEIGHT")
    ap.add_argument("--tile", type=int, default=32, help="latent pixels (x8 in the video)")
    ap.add_argument("--overlap", type=int, default=8)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("*"))
    if args.child:
        child(args.child, args.frames, (w, h), args.tile, args.overlap)
        return
    import torch

    from openwan.eval.metrics import psnr

    rows = {}
    for mode in ("untiled", "tiled"):
        cmd = [sys.executable, str(HERE), "--child", mode, "--frames", str(args.frames),
               "--size", args.size, "--tile", str(args.tile), "--overlap", str(args.overlap)]  # fmt: skip
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows[mode] = json.loads(out.strip().splitlines()[-1])
    quality = psnr(
        torch.load("/tmp/bench_vae_tiling_tiled.pt"), torch.load("/tmp/bench_vae_tiling_untiled.pt")
    )
    print(
        f"Wan2.1 VAE decode {w}x{h}, {args.frames} frames, tile {args.tile} overlap {args.overlap} (latent px)"
    )
    print(f"{'mode':8s} {'CPU s':>8s} {'peak RSS MB':>12s} {'RSS x':>6s} {'PSNR vs untiled':>16s}")
    for mode, r in rows.items():
        ratio = r["peak_mb"] / rows["untiled"]["peak_mb"]
        q = "" if mode == "untiled" else f"{quality:16.2f}"
        print(f"{mode:8s} {r['seconds']:8.1f} {r['peak_mb']:12.0f} {ratio:6.2f} {q}")


if __name__ == "__main__":
    main()
