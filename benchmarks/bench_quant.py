"""int8 DiT forward vs fp32 and bf16 at the real Wan2.1 1.3B width (random weights, same inputs).

    OMP_NUM_THREADS=1 python benchmarks/bench_quant.py [--layers 2] [--repeats 2]

Each configuration runs in its own process (so peak RSS is its own); the table prints CPU
seconds per forward, the speed-up against the faster of fp32 and bf16, the output's relative
error against fp32, the resident weight bytes and the peak RSS (which includes building the
model in fp32 before converting it). ``int8`` is openwan's native path on the fp32 model (int8
block linears in PyTorch's x86 quantized engine, everything else in fp32: on CPUs without
AVX512-BF16, bf16 elementwise work and GEMMs are several times slower than fp32);
``int8-bf16`` is the same on the bf16 model; ``int8-torchao`` is torchao's
Int8DynamicActivationInt8WeightConfig on the fp32 model, in eager mode.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
LATENT = (1, 16, 5, 30, 52)  # 480P-wide latent, 5 latent frames: 1950 tokens
CASES = ("fp32", "bf16", "int8", "int8-bf16", "int8-torchao")


def child(case: str, layers: int, repeats: int) -> None:
    import torch

    from openwan.configs.dit import WAN21_T2V_1_3B
    from openwan.models.dit import WanModel
    from openwan.runtime.quant import apply_quant

    torch.manual_seed(0)
    model = WanModel(WAN21_T2V_1_3B.replace(num_layers=layers)).eval()
    model.init_weights()
    torch.nn.init.normal_(model.head.head.weight, std=0.02)  # init zeroes it: outputs would be 0
    g = torch.Generator().manual_seed(1)
    x = torch.randn(LATENT, generator=g)
    ctx = torch.randn(1, 512, 4096, generator=g)
    t = torch.tensor([500.0])
    if case in ("bf16", "int8-bf16"):
        model = model.to(torch.bfloat16)
    if case.startswith("int8"):
        apply_quant(model, "int8", backend="torchao" if case.endswith("torchao") else "native")
    with torch.no_grad():
        model(x, t, ctx)  # warm-up
        t0 = time.process_time()
        for _ in range(repeats):
            out = model(x, t, ctx)
        seconds = (time.process_time() - t0) / repeats  # CPU time: robust to a shared machine
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tensors = [*model.parameters(), *model.buffers()]
    weights = sum(t.numel() * t.element_size() for t in tensors) / 2**20
    torch.save(out.float(), f"/tmp/bench_quant_{case}.pt")
    print(json.dumps({"seconds": seconds, "peak_mb": peak, "weights_mb": weights}))


def main() -> None:
    import subprocess

    import torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.layers, args.repeats)
        return
    rows = {}
    for case in args.cases:
        cmd = [sys.executable, str(HERE), "--child", case, "--layers", str(args.layers)]
        cmd += ["--repeats", str(args.repeats)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows[case] = json.loads(out.strip().splitlines()[-1])
    ref = torch.load("/tmp/bench_quant_fp32.pt") if "fp32" in rows else None
    peers = [rows[c]["seconds"] for c in ("fp32", "bf16") if c in rows]
    best = min(peers) if peers else float("nan")
    print(
        f"Wan2.1 1.3B width, {args.layers} blocks, latent {LATENT}, {torch.get_num_threads()} threads"
    )
    print(
        f"{'case':14s} {'CPU s/fwd':>10s} {'x vs best fp32/bf16':>20s} {'rel err':>9s} {'weights MB':>10s} {'peak MB':>8s}"
    )
    for case, r in rows.items():
        err = float("nan")
        if ref is not None:
            out = torch.load(f"/tmp/bench_quant_{case}.pt")
            err = float((out - ref).norm() / ref.norm())
        print(f"{case:14s} {r['seconds']:10.2f} {best / r['seconds']:20.2f} {err:9.2e} "
              f"{r['weights_mb']:10.0f} {r['peak_mb']:8.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
