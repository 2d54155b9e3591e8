"""openwan vs diffusers: Wan2.1 VAE encode (17 frames) and decode (17 and 33 frames) at 240x416.

python benchmarks/bench_vae.py [--quick] [--repeats 2]

One process per measurement (peak RSS per implementation), alternating; ratios are
openwan / diffusers. Decode memory should be flat in frame count (33 vs 17 frames).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()


def child(impl: str, op: str, frames: int, height: int, width: int) -> None:
    import torch

    from openwan.checkpoint.vae_format import config_to_diffusers, official_to_diffusers
    from openwan.configs.vae import WAN21_VAE
    from openwan.models.vae import WanVAE

    torch.manual_seed(0)
    vae = WanVAE(WAN21_VAE).eval()
    g = torch.Generator().manual_seed(1)
    if op == "encode":
        inp = torch.rand(1, 3, frames, height, width, generator=g) * 2 - 1
    else:
        inp = torch.randn(1, 16, (frames - 1) // 4 + 1, height // 8, width // 8, generator=g)
    mean = torch.tensor(WAN21_VAE.latent_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(WAN21_VAE.latent_std).view(1, -1, 1, 1, 1)
    with torch.no_grad():
        if impl == "openwan":
            run = (lambda: vae.encode(inp)) if op == "encode" else (lambda: vae.decode(inp))
        else:
            import diffusers

            kw = {k: v for k, v in config_to_diffusers(WAN21_VAE).items() if not k.startswith("_")}
            kw.pop("clip_output", None)
            ref = diffusers.AutoencoderKLWan(**kw).eval()
            ref.load_state_dict(official_to_diffusers(vae.state_dict(), WAN21_VAE), strict=True)
            del vae
            if op == "encode":
                run = lambda: (ref.encode(inp).latent_dist.mean - mean) / std  # noqa: E731
            else:
                run = lambda: ref.decode(inp * std + mean).sample  # noqa: E731
        t0 = time.perf_counter()
        out = run()
        seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    torch.save(out, f"/tmp/bench_vae_{impl}_{op}_{frames}.pt")
    print(json.dumps({"seconds": seconds, "peak_mb": peak}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", nargs=5)
    ap.add_argument("--quick", action="store_true", help="96x160 instead of 240x416")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    if args.child:
        impl, op, f, h, w = args.child
        child(impl, op, int(f), int(h), int(w))
        return
    import torch

    sys.path.insert(0, str(HERE.parent))
    from _runner import measure, report

    h, w = ("96", "160") if args.quick else ("240", "416")
    rows = []
    for op, frames in (("encode", "17"), ("decode", "17"), ("decode", "33")):
        best: dict[str, dict] = {}
        for _ in range(args.repeats):
            for impl in ("openwan", "diffusers"):
                r = measure(HERE, [impl, op, frames, h, w])
                if impl not in best or r["seconds"] < best[impl]["seconds"]:
                    best[impl] = r
        a = torch.load(f"/tmp/bench_vae_openwan_{op}_{frames}.pt")
        b = torch.load(f"/tmp/bench_vae_diffusers_{op}_{frames}.pt")
        best["openwan"]["rel_diff"] = float((a - b).norm() / b.norm())
        rows.append((f"VAE {op} {frames}f {h}x{w}", best["openwan"], best["diffusers"]))
    report(rows)


if __name__ == "__main__":
    main()
