"""The DiT training step on many processes: FSDP2 + context parallelism, applied from outside.

* Parameters (DiT and the jointly trained umT5) are sharded with ``fully_shard`` over every
  rank, per block plus the roots; the optimizer and EMA hold only the local shards.
* Data parallel x context parallel: the global batch of a step is drawn exactly as on one
  process (:func:`flow.step_batch`), each data-parallel group takes its rows, and the ranks of a
  group split the tokens (Ulysses x Ring, :mod:`openwan.runtime.parallel.context`).
* Gradients: every CP rank computes the loss on the gathered output, and the gather's backward
  sums over the group, so the sum over all ranks of the local gradients is ``cp`` times the
  data-parallel gradient sum; FSDP's reduce-scatter averages over ``dp * cp`` ranks, which gives
  exactly the gradient of the single-process mean loss.
* Activation checkpointing per block (``torch.distributed._composable.checkpoint``: the
  parameter names stay those of the model).
* Checkpoints: ``torch.distributed.checkpoint`` (one shard file per rank plus metadata), loaded
  onto any other world size or layout (DCP reshards on load).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from openwan.runtime.parallel import (
    ParallelConfigError,
    ParallelMesh,
    ParallelPlan,
    apply_context_parallel,
    apply_fsdp_dit,
    apply_fsdp_t5,
    build_mesh,
)
from openwan.training import common, flow
from openwan.training.flow import (
    Denoiser,
    DiTTrainConfig,
    StepBatch,
    TrainResult,
    encode_texts,
    flow_loss,
)


@dataclass
class ParallelDenoiser:
    model: Denoiser  # FSDP-sharded in place; its state dict keys are those of one process
    dit: nn.Module  # what the loss calls: the CP runner of model.dit (the DiT's FSDP root)
    mesh: ParallelMesh

    def local_rows(self, batch: StepBatch) -> StepBatch:
        dp = self.mesh.grid.size(0)
        n = batch.x0.shape[0]
        if n % dp:
            raise ParallelConfigError(
                f"batch size {n} is not divisible by the data-parallel degree {dp}"
            )
        per = n // dp
        return batch.rows(slice(self.mesh.dp_rank * per, (self.mesh.dp_rank + 1) * per))


def parallelize(
    model: Denoiser, mesh: ParallelMesh, *, activation_checkpointing: bool = False
) -> ParallelDenoiser:
    mesh.plan.check_heads(model.dit.config.num_heads)
    if activation_checkpointing:
        from torch.distributed._composable import checkpoint

        for block in model.dit.blocks:
            checkpoint(block)
    dit = apply_context_parallel(model.dit, mesh)
    apply_fsdp_dit(dit, mesh.world)
    apply_fsdp_t5(model.text, mesh.world)
    return ParallelDenoiser(model, dit, mesh)


def train_step(
    pd: ParallelDenoiser,
    encoder: Any,
    opt: torch.optim.Optimizer,
    ema: common.EMA,
    batch: StepBatch,
    lr: float,
    bar: Any,
) -> float:
    """One optimizer step on this rank's share of ``batch``; returns the global mean loss."""
    for group in opt.param_groups:
        group["lr"] = lr
    local = pd.local_rows(batch)
    loss = flow_loss(pd.dit, encode_texts(encoder, local.texts), *local.tensors())
    common.optimizer_step(pd.model, opt, ema, loss, bar)
    total = loss.detach().clone()
    dist.all_reduce(total, group=pd.mesh.grid.get_group("dp"))  # CP ranks agree already
    return float(total) / pd.mesh.grid.size(0)


def _state(pd: ParallelDenoiser, opt: torch.optim.Optimizer, ema: common.EMA) -> dict[str, Any]:
    return {
        "model": get_model_state_dict(pd.model),
        "optimizer": get_optimizer_state_dict(pd.model, opt),
        "ema": ema.shadow,
    }


def save_sharded(
    path: str | Path, step: int, pd: ParallelDenoiser, opt: torch.optim.Optimizer, ema: common.EMA
) -> Path:
    """Write a DCP checkpoint folder (every rank writes its shards; the run dir must be shared).

    Written as ``<path>.partial`` and renamed by rank 0 once every rank is done, so a crash never
    leaves a half checkpoint under the final name; the newest ``KEEP_CHECKPOINTS`` are kept.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    rank0 = dist.get_rank() == 0
    if rank0 and tmp.exists():
        shutil.rmtree(tmp)
    dist.barrier()
    state = _state(pd, opt, ema)
    state["step"] = torch.tensor(step)
    dcp.save(state, checkpoint_id=str(tmp))
    dist.barrier()
    if rank0:
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
        if path.name.startswith("dcp_"):
            for old in _checkpoints(path.parent)[: -common.KEEP_CHECKPOINTS]:
                shutil.rmtree(old)
    dist.barrier()
    return path


def load_sharded(
    path: str | Path, pd: ParallelDenoiser, opt: torch.optim.Optimizer, ema: common.EMA
) -> int:
    """Load a DCP checkpoint written at any world size into this layout; returns its step."""
    path = Path(path)
    if not (path / ".metadata").is_file():
        raise ParallelConfigError(f"{path} is not a sharded (torch.distributed.checkpoint) folder")
    state = _state(pd, opt, ema)
    state["step"] = torch.tensor(0)
    dcp.load(state, checkpoint_id=str(path))  # in place, resharded onto this mesh
    set_model_state_dict(pd.model, state["model"])
    set_optimizer_state_dict(pd.model, opt, state["optimizer"])
    return int(state["step"])


def _checkpoints(run_dir: Path) -> list[Path]:
    return sorted(p for p in run_dir.glob("dcp_*") if (p / ".metadata").is_file())


def train_dit_distributed(
    cfg: DiTTrainConfig, plan: ParallelPlan, resume: str | None = None, show_progress: bool = True
) -> TrainResult | None:
    """:func:`flow.train_dit` on every rank of the ``torchrun`` group, FSDP2 x CP.

    The same batches, LR schedule and EMA as one process; sharded checkpoints
    ``run_dir/dcp_<step>`` (``resume``: such a folder or ``latest``, from any world size).
    Returns the trained EMA model on rank 0, None elsewhere.
    """
    # settings the sharded step does not apply yet: refused rather than silently ignored
    unsupported = [
        text
        for text, on in (
            (f"model_type = {cfg.model_type!r}", cfg.model_type != "t2v"),
            (f"precision = {cfg.precision!r}", cfg.precision != "fp32"),
            ("compile = true", cfg.compile),
        )
        if on
    ]
    if unsupported:
        raise ValueError(
            f"distributed training does not support {', '.join(unsupported)} yet; "
            "train in one process or use model_type 't2v', precision 'fp32', compile false"
        )
    run_dir = Path(cfg.run_dir)
    rank0 = dist.get_rank() == 0
    mesh = build_mesh(plan)
    # activation checkpointing is applied by parallelize, not by build's block wrapper
    plain_cfg = replace(cfg, grad_checkpointing=False)
    if rank0:  # one process encodes the latent cache and trains the tokenizer; the rest read them
        latents, sources = flow.latent_cache(cfg, run_dir)
        flow.build(plain_cfg, run_dir, [s for s in sources if isinstance(s, str)])
    dist.barrier()
    if not rank0:
        latents, sources = flow.latent_cache(cfg, run_dir)
    extra = [s for s in sources if isinstance(s, str)]
    model, encoder, tok_dir = flow.build(plain_cfg, run_dir, extra)
    pd = parallelize(model, mesh, activation_checkpointing=cfg.grad_checkpointing)
    opt, ema = common.optimizer_and_ema(
        model, lr=cfg.lr, weight_decay=cfg.weight_decay, ema_decay=cfg.ema_decay
    )
    start = 0
    if resume:
        found = _checkpoints(run_dir) if resume == "latest" else [Path(resume)]
        if not found:
            raise ParallelConfigError(f"--resume latest: no dcp_* checkpoint in {run_dir}")
        start = load_sharded(found[-1], pd, opt, ema)
    metrics = common.MetricsLog(run_dir) if rank0 else None
    bar = common.progress(cfg.steps, start, "train", show_progress and rank0)
    t0 = time.perf_counter()
    model.train()
    end = cfg.stop_at or cfg.steps
    for step in range(start, end):
        batch = flow.step_batch(cfg, step, latents, sources)
        lr = common.lr_at(step, cfg.lr, cfg.warmup, cfg.steps)
        loss = train_step(pd, encoder, opt, ema, batch, lr, bar)
        if metrics is not None and (step + 1) % cfg.log_every == 0:
            metrics.write({"step": step + 1, "loss": loss, "time": time.perf_counter() - t0})
        if (step + 1) % cfg.ckpt_every == 0 or step + 1 == end:
            save_sharded(run_dir / f"dcp_{step + 1:07d}", step + 1, pd, opt, ema)
    bar.close()
    ema.copy_to(model)
    full = get_model_state_dict(
        model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )
    if not rank0:
        return None
    plain, plain_encoder, _ = flow.build(plain_cfg, run_dir, extra)
    plain.load_state_dict(full, strict=True)
    plain.eval()
    return TrainResult(cfg, plain.dit, plain_encoder, tok_dir)
