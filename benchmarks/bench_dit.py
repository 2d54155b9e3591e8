"""openwan vs diffusers: Wan2.1 1.3B DiT forward on this machine (random weights, same inputs).

python benchmarks/bench_dit.py [--quick] [--repeats 2]

Each measurement runs in its own process (peak RSS per implementation), openwan and diffusers
alternate, and the printed ratios are openwan / diffusers (lower is better).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
LATENT = (1, 16, 5, 30, 52)


def child(impl: str, dtype_name: str, layers: int) -> None:
    import torch

    from openwan.checkpoint.dit_format import official_to_diffusers
    from openwan.configs.dit import WAN21_T2V_1_3B
    from openwan.models.dit import WanModel

    torch.manual_seed(0)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    cfg = WAN21_T2V_1_3B.replace(num_layers=layers)
    model = WanModel(cfg)
    model.init_weights()
    torch.nn.init.normal_(
        model.head.head.weight, std=0.02
    )  # init zeroes it: outputs would be all 0
    g = torch.Generator().manual_seed(1)
    x = torch.randn(LATENT, generator=g)
    ctx = torch.randn(1, 512, 4096, generator=g)
    t = torch.tensor([500.0])
    with torch.no_grad():
        if impl == "openwan":
            model = model.to(dtype)
            run = lambda: model(x, t, ctx)  # noqa: E731
        else:
            import diffusers

            ref = diffusers.WanTransformer3DModel(**cfg.to_diffusers_dict())
            ref.load_state_dict(official_to_diffusers(model.state_dict()), strict=True)
            ref = ref.to(dtype).eval()
            del model
            run = lambda: ref(x.to(dtype), t, ctx.to(dtype), return_dict=False)[0].float()  # noqa: E731
        run()  # warm-up
        t0 = time.perf_counter()
        out = run()
        seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    torch.save(out.float(), f"/tmp/bench_dit_{impl}_{dtype_name}.pt")
    print(json.dumps({"seconds": seconds, "peak_mb": peak}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", nargs=3)
    ap.add_argument("--quick", action="store_true", help="4 layers instead of 30")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--dtypes", default="fp32,bf16", help="comma-separated rows to run")
    args = ap.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return
    import torch

    sys.path.insert(0, str(HERE.parent))
    from _runner import measure, report

    layers = "4" if args.quick else "30"
    rows = []
    for dtype in args.dtypes.split(","):
        best: dict[str, dict] = {}
        for _ in range(args.repeats):
            for impl in ("openwan", "diffusers"):
                r = measure(HERE, [impl, dtype, layers])
                if impl not in best or r["seconds"] < best[impl]["seconds"]:
                    best[impl] = r
        a = torch.load(f"/tmp/bench_dit_openwan_{dtype}.pt")
        b = torch.load(f"/tmp/bench_dit_diffusers_{dtype}.pt")
        best["openwan"]["rel_diff"] = float((a - b).norm() / b.norm())
        rows.append((f"DiT 1.3B x{layers} layers {dtype}", best["openwan"], best["diffusers"]))
    report(rows)


if __name__ == "__main__":
    main()
