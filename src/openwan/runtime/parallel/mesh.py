"""Process layout: data parallel x ring x Ulysses, as DeviceMeshes.

Global rank ``g = (d * R + r) * U + u``: Ulysses is the innermost (fastest-varying) dim so its
all-to-all stays inside a node; the ring dim is outer and only passes K/V to a neighbour. The
context-parallel (CP) shard index of a rank is ``r * U + u``: after the Ulysses all-to-all the
ranks of one Ulysses group hold, together, one contiguous chunk of the sequence, which is the
chunk that rank's ring position owns.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh


class ParallelConfigError(ValueError):
    """A parallel layout that cannot run (caught by the CLI; raised on every rank alike)."""


@dataclass(frozen=True)
class ParallelPlan:
    ulysses: int = 1
    ring: int = 1

    @property
    def cp(self) -> int:
        return self.ulysses * self.ring

    def data_parallel(self, world_size: int) -> int:
        """The data-parallel degree ``world / (U * R)``; an error if it does not divide."""
        if self.ulysses < 1 or self.ring < 1:
            raise ParallelConfigError(
                f"--ulysses-size and --ring-size must be >= 1, got {self.ulysses} and {self.ring}"
            )
        if world_size % self.cp:
            raise ParallelConfigError(
                f"world size {world_size} is not a multiple of ulysses x ring = "
                f"{self.ulysses} x {self.ring} = {self.cp}; launch U*R*dp processes "
                f"(e.g. torchrun --nproc_per_node {self.cp})"
            )
        return world_size // self.cp

    def check_heads(self, num_heads: int) -> None:
        if num_heads % self.ulysses:
            raise ParallelConfigError(
                f"--ulysses-size {self.ulysses} must divide the model's {num_heads} attention "
                f"heads; pick a divisor of {num_heads} and put the rest of the ranks in --ring-size"
            )


@dataclass
class ParallelMesh:
    """The meshes of one plan: ``grid`` (dp, ring, ulysses), ``cp`` (dp, cp) and ``world`` (all)."""

    plan: ParallelPlan
    grid: DeviceMesh
    cp: DeviceMesh
    world: DeviceMesh

    @property
    def ulysses_group(self) -> dist.ProcessGroup:
        return self.grid.get_group("ulysses")

    @property
    def ring_group(self) -> dist.ProcessGroup:
        return self.grid.get_group("ring")

    @property
    def cp_group(self) -> dist.ProcessGroup:
        return self.cp.get_group("cp")

    @property
    def cp_rank(self) -> int:
        """This rank's shard index ``r * U + u`` (equals its rank in ``cp_group``)."""
        return self.cp.get_local_rank("cp")

    @property
    def dp_rank(self) -> int:
        return self.grid.get_local_rank("dp")


def build_mesh(plan: ParallelPlan, device_type: str | None = None) -> ParallelMesh:
    """Meshes over the initialised default process group (every rank must call this)."""
    world = dist.get_world_size()
    dp = plan.data_parallel(world)
    if device_type is None:
        device_type = "cuda" if torch.cuda.is_available() else "cpu"
    grid = init_device_mesh(
        device_type, (dp, plan.ring, plan.ulysses), mesh_dim_names=("dp", "ring", "ulysses")
    )
    cp = init_device_mesh(device_type, (dp, plan.cp), mesh_dim_names=("dp", "cp"))
    flat = init_device_mesh(device_type, (world,), mesh_dim_names=("world",))
    return ParallelMesh(plan, grid, cp, flat)


def init_distributed() -> bool:
    """Join the ``torchrun`` process group (NCCL on CUDA, else gloo); False when not launched so."""
    if dist.is_initialized():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 and "RANK" not in os.environ:
        return False
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")
    return True


def is_rank0() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0
