"""Worker functions for tests/dist (importable by spawned processes). Each writes its measured
errors to ``out`` (rank 0) so the test asserts in the parent process."""

import json
from collections.abc import Callable
from pathlib import Path

import torch

from helpers.random_weights import randomize_, rel_err
from openwan.configs.dit import DiTConfig
from openwan.configs.s2v import S2VConfig
from openwan.models.dit import WanModel
from openwan.models.s2v import WanModelS2V
from openwan.models.vace import VaceWanModel
from openwan.runtime.parallel import (
    ParallelPlan,
    apply_context_parallel,
    apply_fsdp_dit,
    build_mesh,
)

# 4 heads (Ulysses 2 leaves 2 per rank), head_dim 8
T2V = DiTConfig(dim=32, ffn_dim=48, num_heads=4, num_layers=2, text_dim=16, text_len=8)
I2V = T2V.replace(model_type="i2v", in_dim=36)


def dit_inputs(cfg: DiTConfig, seed: int = 0) -> list[dict]:
    """Cases: odd token count (3 x 3 x 3 = 27), per-token t, the model's own seq_len padding,
    I2V with clip_fea + y."""
    g = torch.Generator().manual_seed(seed)
    ctx = [torch.randn(5, cfg.text_dim, generator=g), torch.randn(7, cfg.text_dim, generator=g)]
    x = torch.randn(2, 16, 3, 6, 6, generator=g)
    cases = [
        {"x": x, "t": torch.tensor([300.0, 901.5]), "context": ctx},
        {"x": x, "t": torch.rand(2, 27, generator=g) * 1000, "context": ctx},  # per-token t
        {"x": x, "t": torch.tensor([10.0, 500.0]), "context": ctx, "seq_len": 30},
    ]
    if cfg.has_image_embedding:
        extra = {
            "y": torch.randn(2, 20, 3, 6, 6, generator=g),
            "clip_fea": torch.randn(2, 257, 1280, generator=g),
        }
        cases = [{**c, **extra} for c in cases]
    return cases


def tiny_dit(cfg: DiTConfig, seed: int = 0) -> WanModel:
    return randomize_(WanModel(cfg), seed=seed, scale=0.2).eval()


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


def models() -> list[tuple[str, Callable[[], torch.nn.Module], list[dict]]]:
    """(name, make a fresh copy of the tiny model, input cases) for every model family."""
    return [
        ("t2v", lambda: tiny_dit(T2V), dit_inputs(T2V)),
        ("i2v", lambda: tiny_dit(I2V), dit_inputs(I2V)),
        ("vace", lambda: randomize_(VaceWanModel(VACE), seed=1, scale=0.2).eval(), vace_inputs()),
        ("s2v", lambda: randomize_(WanModelS2V(S2V), seed=2, scale=0.2).eval(), s2v_inputs()),
    ]


def _call(model: torch.nn.Module, case: dict, device: str) -> torch.Tensor:
    def to(v):
        if isinstance(v, list):
            return [c.to(device) for c in v]
        return v.to(device) if isinstance(v, torch.Tensor) else v

    kw = {k: to(v) for k, v in case.items() if k not in ("x", "t", "context")}
    with torch.no_grad():
        return model(to(case["x"]), to(case["t"]), to(case["context"]), **kw).cpu()


def forward_layouts(
    rank: int, world: int, layouts: list[dict], out: str, device: str = "cpu"
) -> None:
    """Every layout x {T2V, I2V, VACE, S2V} x cases against the same model on one process."""
    dev = f"cuda:{rank}" if device == "cuda" else device
    errors: dict[str, float] = {}
    for model_name, make, cases in models():
        refs = [_call(make().to(dev), c, dev) for c in cases]
        for lay in layouts:
            plan = ParallelPlan(ulysses=lay.get("ulysses", 1), ring=lay.get("ring", 1))
            mesh = build_mesh(plan, device)
            model = apply_context_parallel(make().to(dev), mesh)
            if lay.get("fsdp"):
                apply_fsdp_dit(model, mesh.world)
            name = f"{model_name} " + " ".join(f"{k}={v}" for k, v in lay.items())
            errors[name] = max(rel_err(_call(model, c, dev), r) for c, r in zip(cases, refs))
    if rank == 0:
        Path(out).write_text(json.dumps(errors, indent=1))


def generate_layouts(rank: int, world: int, out: str) -> None:
    """A full tiny generation (embedded wan-tiny, 5 frames, 2 steps) per layout vs one process;
    then a bad layout through the CLI, which must fail the same way on every rank."""
    from openwan.cli.main import main
    from openwan.pipelines.request import GenerationRequest
    from openwan.pipelines.t2v import WanT2V
    from openwan.runtime.parallel.session import ParallelSession

    req = GenerationRequest(
        prompt="a red circle moving", size=(48, 48), frame_num=5, steps=2, seed=3
    )
    ref = WanT2V.from_pretrained(device="cpu").generate(req).video
    errors: dict[str, float] = {}
    for lay in ({"ring": 2, "dit_fsdp": True}, {"ulysses": 2, "t5_fsdp": True}):
        pipe = WanT2V.from_pretrained(device="cpu")
        plan = ParallelPlan(ulysses=lay.get("ulysses", 1), ring=lay.get("ring", 1))
        session = ParallelSession(
            build_mesh(plan, "cpu"), dit_fsdp="dit_fsdp" in lay, t5_fsdp="t5_fsdp" in lay
        )
        session.apply(pipe)
        errors[" ".join(lay)] = rel_err(pipe.generate(req).video, ref)
    code = main(["generate", "--prompt", "x", "--ulysses-size", "2", "--ring-size", "2", "--quiet"])
    if rank == 0:
        Path(out).write_text(json.dumps({"errors": errors, "bad_layout_exit": code}))
