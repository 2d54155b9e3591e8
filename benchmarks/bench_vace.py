"""openwan vs diffusers: one VACE context block + one main block at the real VACE-1.3B width.

python benchmarks/bench_vace.py [--repeats 2] [--frames 5]

The model is VACE-1.3B cut to one main block with a hint after it (``num_layers 1``,
``vace_layers [0]``: embeddings, one context block with before/after projections, one main block,
head), random weights, a 480x832 latent of ``--frames`` latent frames. Each measurement runs in
its own process (peak RSS per implementation), the two alternate, and the printed ratios are
openwan / diffusers (lower is better).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()


def child(impl: str, dtype_name: str, frames: int) -> None:
    import torch

    from openwan.checkpoint.dit_format import official_to_diffusers
    from openwan.configs.dit import WAN21_VACE_1_3B
    from openwan.models.vace import VaceWanModel

    torch.manual_seed(0)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    cfg = WAN21_VACE_1_3B.replace(num_layers=1, vace_layers=(0,))
    model = VaceWanModel(cfg)
    model.init_weights()
    for p in model.parameters():  # init zeroes the head and projections: outputs would be 0
        if p.ndim >= 2 and not p.abs().sum():
            torch.nn.init.normal_(p, std=0.02)
    g = torch.Generator().manual_seed(1)
    shape = (1, frames, 60, 104)
    x = torch.randn(1, 16, *shape[1:], generator=g)
    vace = torch.randn(1, 96, *shape[1:], generator=g)
    ctx = torch.randn(1, 512, 4096, generator=g)
    t = torch.tensor([500.0])
    with torch.no_grad():
        if impl == "openwan":
            model = model.to(dtype)
            run = lambda: model(x, t, ctx, vace_context=vace)  # noqa: E731
        else:
            import diffusers

            ref = diffusers.WanVACETransformer3DModel(**cfg.to_diffusers_dict())
            ref.load_state_dict(official_to_diffusers(model.state_dict()), strict=True)
            ref = ref.to(dtype).eval()
            del model

            def run() -> torch.Tensor:
                out = ref(
                    x.to(dtype),
                    t,
                    ctx.to(dtype),
                    control_hidden_states=vace.to(dtype),
                    return_dict=False,
                )[0]
                return out.float()

        run()  # warm-up
        t0 = time.perf_counter()
        out = run()
        seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    torch.save(out.float(), f"/tmp/bench_vace_{impl}_{dtype_name}.pt")
    print(json.dumps({"seconds": seconds, "peak_mb": peak}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", nargs=3)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--frames", type=int, default=5, help="latent frames (5 = 17 video frames)")
    args = ap.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return
    import torch

    sys.path.insert(0, str(HERE.parent))
    from _runner import measure, report

    rows = []
    for dtype in ("fp32", "bf16"):
        best: dict[str, dict] = {}
        for _ in range(args.repeats):
            for impl in ("openwan", "diffusers"):
                r = measure(HERE, [impl, dtype, str(args.frames)])
                if impl not in best or r["seconds"] < best[impl]["seconds"]:
                    best[impl] = r
        a = torch.load(f"/tmp/bench_vace_openwan_{dtype}.pt")
        b = torch.load(f"/tmp/bench_vace_diffusers_{dtype}.pt")
        best["openwan"]["rel_diff"] = float((a - b).norm() / b.norm())
        rows.append(
            (f"VACE 1.3B block+ctx {dtype} f{args.frames}", best["openwan"], best["diffusers"])
        )
    report(rows)


if __name__ == "__main__":
    main()
