"""GPU section: Wan2.1 1.3B text-to-video at 480P, 81 frames, 50 UniPC steps with CFG, per speed
switch: wall time and peak GPU memory. Skipped (exit 0) when no CUDA device is present.

    python benchmarks/bench_gpu.py [--ckpt-dir ./Wan2.1-T2V-1.3B] [--cases base,teacache,...]
        [--steps 50] [--frames 81] [--size 832*480]

With ``--ckpt-dir`` the whole official path runs (umT5 on the GPU, then offloaded, DiT, VAE
decode). Without it the 1.3B DiT and the Wan2.1 VAE get random weights and the prompt
embeddings are fixed random tensors (no umT5-XXL is built), so the figures are DiT + VAE only.
Each case runs in its own process (peak memory is its own); the table prints the speed-up and
the memory ratio against ``base`` (bf16, no switch) and the PSNR of the video against base's.
Cases (the CLI's switches): base, teacache (``--cache teacache:0.2,cfg``), attn
(``--cache attn``), int8, fp8 (``--quant``; fp8 needs compute capability >= 8.9), compile,
offload (``--offload block``), tiling (``--vae-tiling``).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

HERE = Path(__file__).resolve()
CASES = {
    "base": {},
    "teacache": {"cache": "teacache:0.2,cfg"},
    "attn": {"cache": "attn"},
    "int8": {"quant": "int8"},
    "fp8": {"quant": "fp8"},
    "compile": {"compile": True},
    "offload": {"offload": "block"},
    "tiling": {"vae_tiling": True},
}
PROMPT = "A red fox runs through fresh snow in a pine forest, morning light, tracking shot"


class _FixedEmbeddings:
    """Stands in for umT5-XXL with random weights: each prompt maps to a fixed random embedding."""

    def __init__(self, device: str) -> None:
        self.device = device

    def eval(self) -> _FixedEmbeddings:
        return self

    def to(self, device: object) -> _FixedEmbeddings:
        return self

    def encode(self, prompts: list[str]) -> list:
        import torch

        out = []
        for p in prompts:
            g = torch.Generator().manual_seed(sum(map(ord, p)) % (2**31))
            out.append(torch.randn(self.count_tokens(p), 4096, generator=g).to(self.device))
        return out

    def count_tokens(self, prompt: str) -> int:
        return len(prompt.split()) + 8


def _pipeline(ckpt_dir: str | None, device: str):
    import torch

    import openwan
    from openwan.configs.dit import WAN21_T2V_1_3B
    from openwan.configs.tasks import TASKS
    from openwan.configs.vae import WAN21_VAE
    from openwan.models.dit import WanModel
    from openwan.models.vae import WanVAE

    if ckpt_dir is not None:
        return openwan.WanT2V.from_pretrained(ckpt_dir, device=device, dtype=torch.bfloat16)
    torch.manual_seed(0)
    with torch.device(device):
        dit = WanModel(WAN21_T2V_1_3B)
        dit.init_weights()
        torch.nn.init.normal_(dit.head.head.weight, std=0.02)  # init zeroes it
        vae = WanVAE(WAN21_VAE)
    return openwan.WanT2V(
        TASKS["t2v-1.3B"], dit.to(torch.bfloat16), vae, _FixedEmbeddings(device), device=device
    )


def child(case: str, ckpt_dir: str | None, steps: int, frames: int, size: str, device: str) -> None:
    import resource

    import torch

    from openwan.cli.speed import apply_speed_options
    from openwan.configs.tasks import parse_size

    cuda = device == "cuda"
    pipe = _pipeline(ckpt_dir, device)
    switches = {"cache": None, "cache_threshold": None, "quant": "none", "compile": False}
    switches |= {"offload": "none", "vae_tiling": False} | CASES[case]
    apply_speed_options(pipe, SimpleNamespace(**switches), torch.device(device))
    width, height = parse_size(size)
    kw = dict(size=(width, height), frame_num=frames, steps=steps, seed=42)
    pipe(PROMPT, **kw)  # warm-up (compile, kernels)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    video = pipe(PROMPT, **kw)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    if cuda:
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:  # the --device cpu smoke run: peak RSS
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    torch.save(video.float().cpu(), f"/tmp/bench_gpu_{case}.pt")
    print(json.dumps({"seconds": seconds, "peak_mb": peak}))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--child", default=None)
    ap.add_argument("--ckpt-dir", default=None)
    ap.add_argument("--cases", default="base,teacache,int8,fp8,compile,offload,tiling")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--frames", type=int, default=81)
    ap.add_argument("--size", default="832*480")
    ap.add_argument("--device", default="cuda", help="cpu: a smoke run of the code path only")
    args = ap.parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here: the GPU section is skipped")
        return 0
    if args.child:
        child(args.child, args.ckpt_dir, args.steps, args.frames, args.size, args.device)
        return 0
    cases = ["base"] + [c for c in args.cases.split(",") if c and c != "base"]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        ap.error(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASES)}")
    common = ["--steps", str(args.steps), "--frames", str(args.frames), "--size", args.size]
    common += ["--device", args.device]
    if args.ckpt_dir:
        common += ["--ckpt-dir", args.ckpt_dir]
    name = torch.cuda.get_device_name() if args.device == "cuda" else args.device
    what = "official weights" if args.ckpt_dir else "random weights, no umT5"
    print(f"{name}: 1.3B {args.size} {args.frames} frames, {args.steps} steps, CFG ({what})")
    print(
        f"{'case':10s} {'seconds':>9s} {'speed-up':>9s} {'peak MB':>9s} {'mem x':>6s} {'PSNR dB':>8s}"
    )
    base = None
    for case in cases:
        run = subprocess.run(
            [sys.executable, str(HERE), "--child", case, *common], capture_output=True, text=True
        )
        if run.returncode != 0:
            last = (run.stderr.strip().splitlines() or ["failed"])[-1]
            print(f"{case:10s} failed: {last}")
            continue
        res = json.loads(run.stdout.strip().splitlines()[-1])
        video = torch.load(f"/tmp/bench_gpu_{case}.pt", weights_only=True)
        if base is None:
            base, ref = res, video
        mse = float((video - ref).square().mean()) / 4  # [-1, 1] -> [0, 1] range
        psnr = math.inf if mse == 0 else 10 * math.log10(1 / mse)
        print(
            f"{case:10s} {res['seconds']:9.1f} {base['seconds'] / res['seconds']:9.2f} "
            f"{res['peak_mb']:9.0f} {res['peak_mb'] / base['peak_mb']:6.2f} {psnr:8.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
