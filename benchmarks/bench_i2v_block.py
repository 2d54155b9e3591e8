"""openwan vs diffusers: one Wan2.1 I2V-14B DiT block at the real width (dim 5120, 40 heads,
ffn 13824, image cross-attention over 257 CLIP + 512 text tokens), same random weights and inputs.

python benchmarks/bench_i2v_block.py [--frames 1] [--dtype fp32|bf16] [--repeats 2]

The whole 14B forward does not fit this machine; one block is 404M parameters. ``--frames`` latent
frames of the 480P grid (30 x 52 tokens each; 81 frames = 21 latent frames = 32760 tokens). Each
measurement runs in its own process (peak RSS per implementation), openwan and diffusers
alternate; the printed ratios are openwan / diffusers (lower is better).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
GRID_480P = (30, 52)  # 480 x 832 pixels / (8 VAE x 2 patch)


def block_weights(dtype):  # -> dict[str, torch.Tensor] in the official layout
    import torch

    from openwan.configs.dit import WAN21_I2V_14B
    from openwan.models.dit import WanAttentionBlock

    with torch.device("meta"):
        shapes = {k: v.shape for k, v in WanAttentionBlock(WAN21_I2V_14B).state_dict().items()}
    g = torch.Generator().manual_seed(0)
    out = {}
    for key in sorted(shapes):
        noise = torch.randn(shapes[key], generator=g)
        out[key] = (1 + 0.1 * noise if "norm" in key else 0.02 * noise).to(dtype)
    return out


def child(impl: str, dtype_name: str, frames: int) -> None:
    import torch

    from openwan.configs.dit import WAN21_I2V_14B as CFG

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    grid = (frames, *GRID_480P)
    n = frames * GRID_480P[0] * GRID_480P[1]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, n, CFG.dim, generator=g)
    e0 = 0.1 * torch.randn(1, 1, 6, CFG.dim, generator=g)
    context = torch.randn(1, 257 + CFG.text_len, CFG.dim, generator=g)  # image tokens first
    sd = block_weights(dtype)
    with torch.no_grad():
        if impl == "openwan":
            from openwan.models.dit import TokenLayout, WanAttentionBlock
            from openwan.ops.rope import rope_angles, rope_cos_sin

            with torch.device("meta"):
                block = WanAttentionBlock(CFG)
            block.load_state_dict(sd, strict=True, assign=True)
            cos, sin = rope_cos_sin(rope_angles(grid, CFG.head_dim, device=x.device))
            layout = TokenLayout(grid=grid, k_lens=None, cos=cos, sin=sin)
            ctx = context.to(dtype)
            run = lambda: block(x, e0, ctx, layout)  # noqa: E731
        else:
            import diffusers
            from diffusers.models.transformers.transformer_wan import (
                WanRotaryPosEmbed,
                WanTransformerBlock,
            )

            from openwan.checkpoint.dit_format import official_to_diffusers

            ref_sd = {
                k.removeprefix("blocks.0."): v
                for k, v in official_to_diffusers(
                    {f"blocks.0.{k}": v for k, v in sd.items()}
                ).items()
            }
            with torch.device("meta"):
                block = WanTransformerBlock(
                    CFG.dim, CFG.ffn_dim, CFG.num_heads, "rms_norm_across_heads", True, CFG.eps,
                    added_kv_proj_dim=CFG.dim,
                )  # fmt: skip
            block.load_state_dict(ref_sd, strict=True, assign=True)
            rope = WanRotaryPosEmbed(CFG.head_dim, CFG.patch_size, 1024)
            rotary = rope(torch.empty(1, 1, frames, 2 * GRID_480P[0], 2 * GRID_480P[1]))
            temb = e0[:, 0]  # [B, 6, dim]
            xd, ctx = x.to(dtype), context.to(dtype)
            assert diffusers.__version__
            run = lambda: block(xd, ctx, temb, rotary).float()  # noqa: E731
        run()  # warm-up
        t0 = time.perf_counter()
        out = run()
        seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    torch.save(out.float(), f"/tmp/bench_i2v_block_{impl}_{dtype_name}.pt")
    print(json.dumps({"seconds": seconds, "peak_mb": peak}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", nargs=3)
    ap.add_argument("--frames", type=int, default=1, help="latent frames of the 480P grid")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return
    import torch

    sys.path.insert(0, str(HERE.parent))
    from _runner import measure, report

    best: dict[str, dict] = {}
    for _ in range(args.repeats):
        for impl in ("openwan", "diffusers"):
            r = measure(HERE, [impl, args.dtype, str(args.frames)])
            if impl not in best or r["seconds"] < best[impl]["seconds"]:
                best[impl] = r
    a = torch.load(f"/tmp/bench_i2v_block_openwan_{args.dtype}.pt")
    b = torch.load(f"/tmp/bench_i2v_block_diffusers_{args.dtype}.pt")
    best["openwan"]["rel_diff"] = float((a - b).norm() / b.norm())
    tokens = args.frames * GRID_480P[0] * GRID_480P[1]
    report([(f"I2V-14B block {tokens} tok {args.dtype}", best["openwan"], best["diffusers"])])


if __name__ == "__main__":
    main()
