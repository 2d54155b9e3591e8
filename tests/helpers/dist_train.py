"""Tiny distributed-training runs for tests/dist: FSDP2 x CP steps and DCP resume."""

import json
from pathlib import Path

import torch

from helpers.random_weights import randomize_
from openwan.runtime.parallel import ParallelPlan, build_mesh
from openwan.training import common, flow
from openwan.training.distributed import load_sharded, parallelize, save_sharded, train_step

CFG = flow.DiTTrainConfig(
    dim=32, ffn_dim=48, num_heads=4, num_layers=2, text_len=8, vocab_size=120,
    t5_dim=16, t5_layers=1, t5_heads=2, t5_ff=24, batch_size=4, image_prob=0.0,
    warmup=1, steps=10, lr=1e-3, ema_decay=0.9,
)  # fmt: skip
CAPTIONS = ["a red circle", "a blue square moving up", "a green triangle", "一个红色的圆"]


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def set_postfix(self, **kw: object) -> None:
        pass


def setup(run_dir: Path):
    """Model (random weights: the init zeroes the head), encoder, data: the same on every rank."""
    model, encoder, _ = flow.build(CFG, run_dir, CAPTIONS)
    randomize_(model.dit, seed=1, scale=0.2)
    g = torch.Generator().manual_seed(2)
    latents = torch.randn(6, 16, 3, 6, 6, generator=g)  # 3 x 3 x 3 = 27 tokens: odd for CP
    return model, encoder, latents, CAPTIONS * 2


def _lr(step: int) -> float:
    return common.lr_at(step, CFG.lr, CFG.warmup, CFG.steps)


def single_process(run_dir: Path, steps: int) -> dict:
    """The reference: the plain model, one process, the trainer's own pieces."""
    model, encoder, latents, sources = setup(run_dir)
    opt, ema = common.optimizer_and_ema(model, lr=CFG.lr, weight_decay=0.01, ema_decay=0.9)
    out: dict = {"loss": []}
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = _lr(step)
        batch = flow.step_batch(CFG, step, latents, sources)
        loss = flow.flow_loss(model.dit, flow.encode_texts(encoder, batch.texts), *batch.tensors())
        common.optimizer_step(model, opt, ema, loss, _NoBar())
        out["loss"].append(loss.item())
        if step == 2:
            out["grads@3"] = {n: p.grad.clone() for n, p in model.named_parameters()}
            out["params@3"] = {n: p.detach().clone() for n, p in model.named_parameters()}
    out["params@end"] = {n: p.detach().clone() for n, p in model.named_parameters()}
    out["ema@end"] = {k: v.clone() for k, v in ema.shadow.items()}
    return out


def _full(t: torch.Tensor) -> torch.Tensor:
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def parallel_run(
    rank: int, world: int, layout: dict, run_dir: str, out: str, steps: int,
    save_at: int | None = None, resume: str | None = None,
) -> None:  # fmt: skip
    """Train ``steps`` steps under ``layout`` (optionally from a DCP checkpoint, optionally
    saving one); rank 0 writes losses, gradients after step 3 and final parameters."""
    plan = ParallelPlan(ulysses=layout.get("ulysses", 1), ring=layout.get("ring", 1))
    model, encoder, latents, sources = setup(Path(run_dir))
    pd = parallelize(
        model, build_mesh(plan, "cpu"), activation_checkpointing=layout.get("ac", False)
    )
    opt, ema = common.optimizer_and_ema(model, lr=CFG.lr, weight_decay=0.01, ema_decay=0.9)
    start = load_sharded(resume, pd, opt, ema) if resume else 0
    res: dict = {"loss": [], "start": start}
    for step in range(start, steps):
        batch = flow.step_batch(CFG, step, latents, sources)
        res["loss"].append(train_step(pd, encoder, opt, ema, batch, _lr(step), _NoBar()))
        if step == 2:
            res["grads@3"] = {n: _full(p.grad) for n, p in model.named_parameters()}
        if save_at is not None and step + 1 == save_at:
            save_sharded(Path(run_dir) / "dcp", step + 1, pd, opt, ema)
    res["params@end"] = {n: _full(p.detach()) for n, p in model.named_parameters()}
    res["ema@end"] = {k: _full(v) for k, v in ema.shadow.items()}
    if rank == 0:
        torch.save(res, out)


def write_json(path: str, obj: dict) -> None:
    Path(path).write_text(json.dumps(obj, indent=1))


def cli_train(rank: int, world: int, argv: list[str], out: str) -> None:
    """``openwan train ... --ulysses-size 2`` inside an already joined process group."""
    from openwan.cli.main import main

    code = main(argv)
    if rank == 0:
        write_json(out, {"code": code})
