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

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from openwan.runtime.parallel import (
    ParallelConfigError,
    ParallelMesh,
    apply_context_parallel,
    apply_fsdp_dit,
    apply_fsdp_t5,
)
from openwan.training import common
from openwan.training.flow import Denoiser, StepBatch, encode_texts, flow_loss


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
    """Write a DCP checkpoint folder (every rank writes its shards)."""
    path = Path(path)
    state = _state(pd, opt, ema)
    state["step"] = torch.tensor(step)
    dcp.save(state, checkpoint_id=str(path))
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
