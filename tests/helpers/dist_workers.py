"""Worker functions for tests/dist (importable by spawned processes). Each writes its measured
errors to ``out`` (rank 0) so the test asserts in the parent process."""

import json
from pathlib import Path

import torch

from helpers.random_weights import randomize_, rel_err
from openwan.configs.dit import DiTConfig
from openwan.models.dit import WanModel
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
    """Every layout x {T2V, I2V} x cases against the same model on one process."""
    dev = f"cuda:{rank}" if device == "cuda" else device
    errors: dict[str, float] = {}
    for cfg_name, cfg in (("t2v", T2V), ("i2v", I2V)):
        cases = dit_inputs(cfg)
        refs = [_call(tiny_dit(cfg).to(dev), c, dev) for c in cases]
        for lay in layouts:
            plan = ParallelPlan(ulysses=lay.get("ulysses", 1), ring=lay.get("ring", 1))
            mesh = build_mesh(plan, device)
            model = apply_context_parallel(tiny_dit(cfg).to(dev), mesh)
            if lay.get("fsdp"):
                apply_fsdp_dit(model, mesh.world)
            name = f"{cfg_name} " + " ".join(f"{k}={v}" for k, v in lay.items())
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
