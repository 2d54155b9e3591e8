"""Diffusion caches end to end on the tiny shapes model: openwan's modes vs diffusers' cache hooks.

Every configuration generates the same prompts with the same seeds through the same pipeline
(text encoder, UniPC, VAE); only the denoiser changes. Rows report the end-to-end speed-up over
the same implementation's uncached run (end to end, and inside the DiT alone), PSNR / SSIM against the uncached video of the same seed, the fraction of DiT
blocks run, and the ShapesBench all-correct rate. The diffusers rows load the same weights into
``WanTransformer3DModel`` (through the official->diffusers key adapter) and apply diffusers' own
hooks (``enable_cache``), each branch inside ``cache_context("cond"/"uncond")`` as WanPipeline does.

    OMP_NUM_THREADS=1 python benchmarks/bench_cache.py    # 2 prompts per split, EN+ZH
    OMP_NUM_THREADS=1 python benchmarks/bench_cache.py --prompts 4 --seed 0 1 2 3 --diffusers \
        --openwan taylor:6,cfg    # four prompt sets pooled (64 videos), per-set PSNR too
    python benchmarks/bench_cache.py --prompts 1 --openwan teacache:0.1 cfg --diffusers fbc:0.1

An openwan row may end in ``+hold`` (the first-block cache holds its last residual instead of
extrapolating it), ``+wN`` (N full steps first instead of the default warm-up) and ``+v`` (taylor
extrapolates the DiT's output instead of the noise estimate), e.g. ``teacache:0.2+hold+w0``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from openwan.eval import shapesbench
from openwan.eval.metrics import psnr, ssim
from openwan.io.video import to_uint8_frames
from openwan.pipelines.t2v import WanT2V
from openwan.runtime.cache import DEFAULT_TEACACHE, TAYLOR_SPACES, CacheSpec, apply_cache

OPENWAN = ["teacache:0.08", "teacache:0.1", "teacache:0.2", "teacache:0.2+hold", "taylor", "taylor:4+w4",
           "taylor:3", "taylor:5+w5", "teacache:0.08,cfg:3", "teacache:0.2,cfg:3", "cfg", "attn"]  # fmt: skip
DIFFUSERS = ["fbc:0.1", "fbc:0.2", "fbc:0.3", "taylorseer:3", "taylorseer:5", "pab"]  # fmt: skip


class Timed(nn.Module):
    """CPU seconds spent inside the denoiser (the part a diffusion cache can speed up)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.config, self.seconds = inner, inner.config, 0.0

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        t0 = time.process_time()
        out = self.inner(*args, **kwargs)
        self.seconds += time.process_time() - t0
        return out


class DiffusersDenoiser(nn.Module):
    """A diffusers WanTransformer3DModel behind openwan's DiT call; branches alternate cond/uncond."""

    def __init__(self, transformer: nn.Module, config: Any, steps: int) -> None:
        super().__init__()
        self.transformer, self.config, self.steps = transformer, config, steps
        self.calls = 0

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, context: list[torch.Tensor]
    ) -> torch.Tensor:
        # openwan pads the text to text_len inside the model; diffusers takes it padded
        ctx = torch.stack(
            [nn.functional.pad(c, (0, 0, 0, self.config.text_len - c.shape[0])) for c in context]
        )
        step, branch = divmod(self.calls, 2)
        self.calls += 1
        kwargs = {"step_index": step % self.steps, "num_inference_steps": self.steps}
        with self.transformer.cache_context(("cond", "uncond")[branch], **kwargs):
            return self.transformer(
                hidden_states=x, timestep=t, encoder_hidden_states=ctx, return_dict=False
            )[0]


def diffusers_transformer(pipe: WanT2V) -> nn.Module:
    from diffusers import WanTransformer3DModel

    from openwan.checkpoint.dit_format import official_to_diffusers

    c = pipe.dit.config
    model = WanTransformer3DModel(
        patch_size=tuple(c.patch_size), num_attention_heads=c.num_heads,
        attention_head_dim=c.dim // c.num_heads, in_channels=c.in_dim, out_channels=c.out_dim,
        text_dim=c.text_dim, freq_dim=c.freq_dim, ffn_dim=c.ffn_dim, num_layers=c.num_layers,
        cross_attn_norm=c.cross_attn_norm, qk_norm="rms_norm_across_heads", eps=c.eps,
    )  # fmt: skip
    model.load_state_dict(official_to_diffusers(pipe.dit.state_dict()), strict=True)
    return model.eval()


def diffusers_config(name: str, steps: int) -> Any:
    from diffusers import (
        FirstBlockCacheConfig,
        PyramidAttentionBroadcastConfig,
        TaylorSeerCacheConfig,
    )

    kind, _, value = name.partition(":")
    if kind == "fbc":
        return FirstBlockCacheConfig(threshold=float(value))
    if kind == "taylorseer":
        # lite mode (skip the blocks, extrapolate proj_out): the default patterns ("^blocks.*attn",
        # fullmatch) hook no module of Wan's attn1/attn2, so they would cache nothing
        return TaylorSeerCacheConfig(
            cache_interval=int(value), taylor_factors_dtype=torch.float32, use_lite_mode=True
        )
    if kind == "pab":
        return PyramidAttentionBroadcastConfig(
            spatial_attention_block_skip_range=2,
            spatial_attention_timestep_skip_range=(-1, 901),
            current_timestep_callback=lambda: 0,
        )
    raise ValueError(f"unknown diffusers cache {name!r}")


def bench_spec(text: str) -> CacheSpec:
    """A ``--cache`` text plus the bench's own suffixes: ``+hold`` (the first-block cache reuses
    the residual as it is), ``+wN`` (the first N steps run in full), ``+v`` / ``+eps`` (what
    taylor extrapolates)."""
    mode, *extras = text.split("+")
    spec = CacheSpec.parse(mode, DEFAULT_TEACACHE)
    for extra in extras:
        if extra == "hold":
            spec = dataclasses.replace(spec, extrapolate=False)
        elif extra in TAYLOR_SPACES:
            spec = dataclasses.replace(spec, taylor_space=extra)
        elif extra.startswith("w") and extra[1:].isdigit():
            n = int(extra[1:])
            spec = dataclasses.replace(spec, teacache_warmup=n, taylor_warmup=n)
        else:
            raise ValueError(f"unknown bench suffix +{extra} in {text!r}")
    return spec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--prompts", type=int, default=2, help="per split (seen / held-out), EN+ZH")
    ap.add_argument("--openwan", nargs="*", default=OPENWAN, help="--cache texts")
    ap.add_argument("--diffusers", nargs="*", default=DIFFUSERS)
    ap.add_argument("--seed", type=int, nargs="+", default=[0],
                    help="prompt sets and their noise seeds (tune on one, report on others); "
                         "several: every row pooled over all their videos")  # fmt: skip
    args = ap.parse_args()
    torch.manual_seed(0)
    pipe = WanT2V.from_pretrained(None, device="cpu")
    plain = pipe.dit
    steps = pipe.task.steps
    # (prompt set, noise seed) per video: set s's k-th video has seed s + k, as in a run of set s
    items, seeds, sets = [], [], []
    for set_seed in args.seed:
        for k, item in enumerate(
            shapesbench.bench_prompts(args.prompts, ("en", "zh"), seed=set_seed)
        ):
            items.append(item)
            seeds.append(set_seed + k)
            sets.append(set_seed)

    def bench(videos: list[torch.Tensor]) -> float:
        hits = [
            shapesbench.score(item["scene"], shapesbench.analyze(to_uint8_frames(v)))["all"]
            for item, v in zip(items, videos)
        ]
        return float(np.mean(hits))

    transformer = diffusers_transformer(pipe) if args.diffusers else None

    @contextmanager
    def denoiser(impl: str, name: str) -> Iterator[nn.Module]:
        """The denoiser of one configuration, set up for one video and taken down after it."""
        if impl == "openwan":
            if name == "none":
                yield plain
                return
            cached = apply_cache(plain, bench_spec(name))
            try:
                yield cached
            finally:
                blocks[name][0] += cached.stats.blocks_run
                blocks[name][1] += cached.stats.blocks_total
                cached.remove()
            return
        assert transformer is not None
        # fresh hooks per video: diffusers' WanPipeline resets its cache hooks' state after every
        # call (maybe_free_model_hooks); hooks kept across videos would start each new video
        # from the last one's cached residuals and Taylor factors
        if name != "none":
            transformer.enable_cache(diffusers_config(name, steps))
        try:
            yield DiffusersDenoiser(transformer, plain.config, steps)
        finally:
            if name != "none":
                transformer.disable_cache()

    configs = [("openwan", "none"), *(("openwan", t) for t in args.openwan)]
    if args.diffusers:
        configs += [("diffusers", "none"), *(("diffusers", d) for d in args.diffusers)]
    blocks = {name: [0, 0] for _, name in configs}
    videos: dict[tuple[str, str], list[torch.Tensor]] = {c: [] for c in configs}
    seconds = {c: [0.0, 0.0] for c in configs}  # end to end, inside the DiT (CPU seconds)

    pipe(items[0]["prompt"], seed=0, steps=2)  # warm-up (first-call allocations, lazy imports)
    # interleaved (every configuration on one prompt, then the next prompt), so that a change
    # in the machine's speed during the run (a neighbour, throttling) hits all rows alike
    for k, item in enumerate(tqdm(items, desc="prompts", file=sys.stderr)):
        for c in configs:
            with denoiser(*c) as d:
                pipe.dit = timed = Timed(d)
                # CPU time: on a shared machine wall time measures the neighbours
                t0 = time.process_time()
                videos[c].append(pipe(item["prompt"], seed=seeds[k]))
                seconds[c][0] += time.process_time() - t0
                seconds[c][1] += timed.seconds
                pipe.dit = plain
    base = videos[("openwan", "none")]
    base_bench = bench(base)
    base_s, base_dit = seconds[("openwan", "none")]
    print(f"{len(items)} videos x {steps} steps, task {pipe.task.name}; uncached {base_s:.1f}s CPU "
          f"({base_dit:.1f}s in the DiT), ShapesBench all-correct {base_bench:.3f}")  # fmt: skip
    print(f"{'impl':9s} {'cache':24s} {'e2e x':>6s} {'DiT x':>6s} {'PSNR dB':>8s} {'SSIM':>6s} "
          f"{'blocks':>6s} {'all-correct':>11s}"
          + ("  PSNR per prompt set " + "/".join(map(str, args.seed)) if len(args.seed) > 1 else ""))  # fmt: skip
    for impl, name in configs:
        if impl == "openwan" and name == "none":
            continue
        ref_s, ref_dit = seconds[(impl, "none")]  # against the same implementation uncached
        s, dit_s = seconds[(impl, name)]
        vids = videos[(impl, name)]
        each = np.array([min(psnr(v, b), 99.0) for v, b in zip(vids, base)])
        p = float(each.mean())
        per_set = "/".join(f"{each[np.array(sets) == x].mean():.1f}" for x in args.seed)
        q = float(np.mean([ssim(v, b) for v, b in zip(vids, base)]))
        run, total = blocks[name] if impl == "openwan" else (0, 0)
        frac = f"{run / total:6.2f}" if total else f"{'-':>6s}"
        print(f"{impl:9s} {name:24s} {ref_s / s:6.2f} {ref_dit / dit_s:6.2f} {p:8.2f} {q:6.3f} "
              f"{frac} {bench(vids) - base_bench:+11.3f}"
              + (f"  {per_set}" if len(args.seed) > 1 else ""), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
