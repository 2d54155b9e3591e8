"""Workers for the VACE / S2V context-parallel tests (importable by spawned processes).

Rank 0 writes the measured relative errors to ``out``; the test asserts in the parent.
"""

import json
from pathlib import Path

import numpy as np
import torch

from helpers.dist_workers import T2V, _call
from helpers.random_weights import randomize_, rel_err
from openwan.configs.dit import DiTConfig
from openwan.configs.s2v import S2VConfig
from openwan.models.s2v import WanModelS2V
from openwan.models.vace import VaceWanModel
from openwan.runtime.parallel import (
    ContextParallelVace,
    ParallelPlan,
    apply_context_parallel,
    apply_fsdp_dit,
    build_mesh,
)

VACE = T2V.replace(vace_layers=(0, 1), vace_in_dim=96)  # a hint after each of the 2 blocks
# 2 heads: Ulysses 2 (alone or x Ring 2) leaves one head per rank
S2V = S2VConfig(
    dit=DiTConfig(model_type="s2v", dim=32, ffn_dim=48, num_heads=2, num_layers=2, text_dim=16),
    audio_dim=8,
    audio_inject_layers=(0, 1),
)


def vace_inputs(seed: int = 0) -> list[dict]:
    """27 video tokens (3 x 3 x 3, not a multiple of 2 or 4); with seq_len padding; per-token t."""
    g = torch.Generator().manual_seed(seed)
    ctx = [torch.randn(5, 16, generator=g), torch.randn(7, 16, generator=g)]
    x = torch.randn(2, 16, 3, 6, 6, generator=g)
    vace = torch.randn(2, 96, 3, 6, 6, generator=g)
    base = {"x": x, "context": ctx, "vace_context": vace}
    return [
        {**base, "t": torch.tensor([300.0, 901.5]), "vace_context_scale": 0.7},
        {**base, "t": torch.tensor([10.0, 500.0]), "seq_len": 30},
        {**base, "t": torch.rand(2, 27, generator=g) * 1000},
    ]


def s2v_inputs(seed: int = 0) -> list[dict]:
    """Latent 8 x 8 (4 x 4 = 16 tokens per frame): 3 frames + reference + 24 motion tokens = 88
    (shards of 44 / 22 start mid-frame, the noisy/reference boundary 48 falls inside a shard);
    and without motion at latent 6 x 6 (9 tokens per frame): 2 frames + reference = 27 tokens,
    not a multiple of 2 or 4 (FramePack needs multiples of 8, so only this case pads)."""
    g = torch.Generator().manual_seed(seed)
    ctx = [torch.randn(5, 16, generator=g), torch.randn(7, 16, generator=g)]
    cases = []
    for frames, side, drop in ((3, 8, False), (2, 6, True)):
        cases.append(
            {
                "x": torch.randn(2, 16, frames, side, side, generator=g),
                "t": torch.tensor([300.0, 901.5]),
                "context": ctx,
                "ref_latents": torch.randn(2, 16, 1, side, side, generator=g),
                "motion_latents": torch.randn(2, 16, 5, side, side, generator=g),
                "cond_states": torch.randn(2, 16, frames, side, side, generator=g),
                "audio_input": torch.randn(2, 25, 8, 4 * frames, generator=g),
                "drop_motion_frames": drop,
            }
        )
    return cases


def _models():
    return (
        ("vace", lambda: randomize_(VaceWanModel(VACE), seed=1, scale=0.2).eval(), vace_inputs()),
        ("s2v", lambda: randomize_(WanModelS2V(S2V), seed=2, scale=0.2).eval(), s2v_inputs()),
    )


def task_layouts(rank: int, world: int, layouts: list[dict], out: str) -> None:
    """Every layout x {VACE, S2V} x cases against the same model on one process (fp32)."""
    errors: dict[str, float] = {}
    for name, make, cases in _models():
        refs = [_call(make(), c, "cpu") for c in cases]
        for lay in layouts:
            plan = ParallelPlan(ulysses=lay.get("ulysses", 1), ring=lay.get("ring", 1))
            mesh = build_mesh(plan, "cpu")
            model = apply_context_parallel(make(), mesh)
            if lay.get("fsdp"):
                apply_fsdp_dit(model, mesh.world)
            key = f"{name} " + " ".join(f"{k}={v}" for k, v in lay.items())
            errors[key] = max(rel_err(_call(model, c, "cpu"), r) for c, r in zip(cases, refs))
    if world == 2:
        errors["vace generate ring=2"] = _vace_generation()
    if rank == 0:
        Path(out).write_text(json.dumps(errors, indent=1))


def _vace_generation() -> float:
    """A full tiny VACE generation (embedded tiny T5/VAE, a random VACE DiT, source video +
    mask + reference image) under a Ring-2 session vs the same on one process."""
    from PIL import Image

    from openwan.pipelines.request import GenerationRequest
    from openwan.pipelines.t2v import WanT2V
    from openwan.pipelines.vace import WanVACE
    from openwan.pipelines.vace_inputs import read_sources
    from openwan.runtime.parallel.session import ParallelSession

    def pipe() -> WanVACE:
        base = WanT2V.from_pretrained(device="cpu")
        _, sh, sw = base.vae.config.stride
        # inactive + reactive latents, then the mask folded over the VAE's spatial stride
        in_dim = 2 * base.vae.config.z_dim + sh * sw
        cfg = base.dit.config.replace(vace_layers=(0, 3), vace_in_dim=in_dim)
        dit = randomize_(VaceWanModel(cfg), seed=3, scale=0.2).eval()
        return WanVACE(base.task, dit, base.vae, base.text_encoder, device="cpu")

    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, (5, 48, 48, 3), dtype=np.uint8)
    mask = np.zeros((5, 48, 48, 3), np.uint8)
    mask[:, 8:40, 8:40] = 255
    ref = Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8))
    sources = read_sources(video, mask, [ref])
    req = GenerationRequest(prompt="a red circle", size=(48, 48), frame_num=5, steps=2, seed=3)
    single = pipe().generate(req, sources=sources, context_scale=0.8).video
    parallel = pipe()
    ParallelSession(build_mesh(ParallelPlan(ring=2), "cpu")).apply(parallel)
    assert isinstance(parallel.dit, ContextParallelVace)
    return rel_err(parallel.generate(req, sources=sources, context_scale=0.8).video, single)
