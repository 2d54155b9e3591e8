"""FSDP2 (``fully_shard``) for the DiT and the umT5 encoder: one unit per block plus the root.

Parameters are sharded over every rank of the world mesh. All ranks run the same modules at
the same time (CP ranks run the same blocks on different tokens), so the per-block all-gather
composes with context parallelism; in training the reduce-scatter averages over all ranks.
"""

from __future__ import annotations

from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import fully_shard

from openwan.models.dit import WanAttentionBlock, WanModel


def find_dit(module: nn.Module) -> WanModel:
    """The WanModel inside ``module`` (itself, or held by a CP wrapper / a trainer module)."""
    for m in module.modules():
        if isinstance(m, WanModel):
            return m
    raise TypeError(f"no WanModel in {type(module).__name__}")


def apply_fsdp_dit(
    root: nn.Module, mesh: DeviceMesh, *, reshard_after_forward: bool = True
) -> nn.Module:
    """Shard each DiT block (the VACE context blocks too), then ``root`` (the module whose
    ``__call__`` starts a forward: the model, or the CP wrapper holding it, so the root gather
    also covers embed, head and the small S2V audio modules)."""
    blocks = [m for m in find_dit(root).modules() if isinstance(m, WanAttentionBlock)]
    for block in blocks:
        fully_shard(block, mesh=mesh, reshard_after_forward=reshard_after_forward)
    fully_shard(root, mesh=mesh, reshard_after_forward=reshard_after_forward)
    return root


def apply_fsdp_t5(encoder: nn.Module, mesh: DeviceMesh) -> nn.Module:
    """Shard a transformers (U)MT5 encoder: each ``encoder.block[i]``, then the model."""
    blocks = getattr(getattr(encoder, "encoder", None), "block", None)
    if blocks is None:
        raise TypeError(f"{type(encoder).__name__} has no encoder.block list to shard")
    for block in blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(encoder, mesh=mesh)
    return encoder
