"""Scale-out with torch.distributed: context parallelism (Ulysses x Ring) and FSDP2."""

from openwan.runtime.parallel.context import (
    ContextParallelDiT,
    ContextParallelS2V,
    ContextParallelVace,
    apply_context_parallel,
)
from openwan.runtime.parallel.fsdp import apply_fsdp_dit, apply_fsdp_t5
from openwan.runtime.parallel.mesh import (
    ParallelConfigError,
    ParallelMesh,
    ParallelPlan,
    build_mesh,
    init_distributed,
    is_rank0,
)

__all__ = [
    "ContextParallelDiT",
    "ContextParallelS2V",
    "ContextParallelVace",
    "ParallelConfigError",
    "ParallelMesh",
    "ParallelPlan",
    "apply_context_parallel",
    "apply_fsdp_dit",
    "apply_fsdp_t5",
    "build_mesh",
    "init_distributed",
    "is_rank0",
]
