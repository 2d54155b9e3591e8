"""A ``torchrun`` generation session: mesh, rank-consistent checks, and the pipeline wiring.

Every check that could fail on one rank only (the output path) runs on rank 0 and its verdict
is broadcast, so all ranks raise the same error and exit together instead of hanging in the
next collective. Layout errors are deterministic and raised on every rank before any
collective.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from openwan.pipelines.s2v import ClipParts, WanS2V
from openwan.runtime.parallel.context import apply_context_parallel
from openwan.runtime.parallel.fsdp import apply_fsdp_dit, apply_fsdp_t5
from openwan.runtime.parallel.mesh import (
    ParallelConfigError,
    ParallelMesh,
    ParallelPlan,
    build_mesh,
    init_distributed,
)


def _comm_device() -> torch.device:
    """Where broadcast tensors must live for the default backend (NCCL: the current GPU)."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def broadcast_tensors(tensors: Sequence[torch.Tensor] | None) -> list[torch.Tensor]:
    """Rank 0's tensors on every rank (other ranks pass None); returned on the comm device."""
    meta: list[Any] = [None]
    if dist.get_rank() == 0:
        assert tensors is not None
        meta = [[(tuple(t.shape), t.dtype) for t in tensors]]
    dist.broadcast_object_list(meta, src=0)
    dev = _comm_device()
    out = []
    for i, (shape, dtype) in enumerate(meta[0]):
        buf = (
            tensors[i].to(dev).contiguous()
            if tensors is not None
            else torch.empty(shape, dtype=dtype, device=dev)
        )
        dist.broadcast(buf, src=0)
        out.append(buf)
    return out


class RankZeroText(nn.Module):
    """The text encoder run once, on rank 0; the features are broadcast to every rank."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.module = encoder

    def count_tokens(self, prompt: str) -> int:
        return int(self.module.count_tokens(prompt))

    def encode(self, prompts: Sequence[str]) -> list[torch.Tensor]:
        feats = self.module.encode(prompts) if dist.get_rank() == 0 else None
        device = next(self.module.parameters()).device
        return [f.to(device) for f in broadcast_tensors(feats)]


class RankZeroVAE(nn.Module):
    """The VAE run once, on rank 0 (encode and decode); the result is broadcast."""

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.module = vae

    @property
    def config(self) -> Any:
        return self.module.config

    def _once(self, fn: Callable[..., torch.Tensor], *args: Any, **kw: Any) -> torch.Tensor:
        out = [fn(*args, **kw)] if dist.get_rank() == 0 else None
        device = next(self.module.parameters()).device
        return broadcast_tensors(out)[0].to(device)

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        return self._once(self.module.encode, video)

    def decode(self, z: torch.Tensor, **kw: Any) -> torch.Tensor:
        return self._once(self.module.decode, z, **kw)


class RankZeroAudio:
    """The Wav2Vec2 features computed once, on rank 0, and broadcast (every rank must condition
    on bit-identical audio, whatever its thread count)."""

    def __init__(self, encoder: Any) -> None:
        self.module = encoder

    def features(self, wave: np.ndarray) -> torch.Tensor:
        feats = [self.module.features(wave).cpu()] if dist.get_rank() == 0 else None
        return broadcast_tensors(feats)[0].cpu()


class RankZeroParts(ClipParts):
    """S2V's store of finished clips in a multi-process run: rank 0 checks, reads and writes the
    ``.parts`` folder; the other ranks take its answers (a folder only rank 0 sees works too)."""

    def __init__(
        self, folder: Path, fingerprint: dict[str, Any], *, session: ParallelSession
    ) -> None:

        def check() -> None:  # a folder of another request fails on every rank
            ClipParts(folder, fingerprint)

        session.agree(check)
        self.folder, self.fingerprint = folder, fingerprint
        self.writes = session.rank0

    def load(self, r: int) -> torch.Tensor | None:
        mine = super().load(r) if self.writes else None
        got = broadcast_tensors(None if not self.writes else [] if mine is None else [mine])
        return got[0].cpu() if got else None

    def save(self, r: int, latent: torch.Tensor) -> None:
        if self.writes:
            super().save(r, latent)

    def remove(self) -> None:
        if self.writes:
            super().remove()


@dataclass
class ParallelSession:
    mesh: ParallelMesh
    dit_fsdp: bool = False
    t5_fsdp: bool = False

    @property
    def rank0(self) -> bool:
        return dist.get_rank() == 0

    @classmethod
    def start(
        cls, *, ulysses: int = 1, ring: int = 1, dit_fsdp: bool = False, t5_fsdp: bool = False
    ) -> ParallelSession | None:
        """Join the torchrun group and build the mesh; None for a plain single-process run."""
        plan = ParallelPlan(ulysses=ulysses, ring=ring)
        wanted = plan.cp > 1 or dit_fsdp or t5_fsdp
        if not init_distributed():
            if wanted:
                raise ParallelConfigError(
                    "--ulysses-size/--ring-size/--dit-fsdp/--t5-fsdp need several processes: "
                    f"torchrun --nproc_per_node {max(plan.cp, 2)} -m openwan generate ..."
                )
            return None
        try:
            world = dist.get_world_size()
            if plan.cp > 1 and plan.cp != world:
                raise ParallelConfigError(
                    f"ulysses x ring = {plan.cp} must equal the number of processes ({world}) "
                    "for generation"
                )
            if plan.cp == 1 and world > 1 and not dit_fsdp:
                raise ParallelConfigError(
                    f"{world} processes would each make the same video: set --ulysses-size x "
                    f"--ring-size = {world}, or --dit-fsdp to shard the DiT over them"
                )
            session = cls(build_mesh(plan), dit_fsdp=dit_fsdp, t5_fsdp=t5_fsdp)
        except BaseException:
            dist.destroy_process_group()
            raise
        return session

    def agree(self, check: Callable[[], None]) -> None:
        """Run ``check`` on rank 0; if it raises ValueError, raise the same message everywhere."""
        verdict: list[str | None] = [None]
        if self.rank0:
            try:
                check()
            except ValueError as e:
                verdict = [str(e)]
        dist.broadcast_object_list(verdict, src=0)
        if verdict[0] is not None:
            raise ValueError(verdict[0])

    def shared_seed(self, seed: int) -> int:
        """A random seed (seed < 0) drawn on rank 0, so every rank draws the same noise."""
        box = [seed if seed >= 0 else random.randint(0, sys.maxsize)]
        dist.broadcast_object_list(box, src=0)
        return int(box[0])

    def apply(self, pipe: Any, *, cache: bool = False) -> None:
        """Context parallelism (+ FSDP) on the DiT(s); T5 sharded or run once; VAE run once."""
        if cache and self.mesh.plan.cp > 1:
            raise ParallelConfigError(
                "--cache-threshold cannot be combined with --ulysses-size/--ring-size (each rank "
                "would decide to skip blocks from its own tokens)"
            )
        for name in ("dit", "dit_high"):
            model = getattr(pipe, name, None)  # S2V has no second expert
            if model is None:
                continue
            model = apply_context_parallel(model, self.mesh)
            if self.dit_fsdp:
                apply_fsdp_dit(model, self.mesh.world)
            setattr(pipe, name, model)
        if self.t5_fsdp:
            if getattr(pipe, "t5_cpu", False):
                raise ParallelConfigError(
                    "--t5-fsdp shards the encoder over the GPUs: drop --t5-cpu"
                )
            pipe.text_encoder.to(pipe.device)
            apply_fsdp_t5(pipe.text_encoder.model, self.mesh.world)
        else:
            pipe.text_encoder = RankZeroText(pipe.text_encoder)
        pipe.vae = RankZeroVAE(pipe.vae)
        if isinstance(pipe, WanS2V):  # the audio is encoded once; rank 0 owns the output files
            pipe.audio_encoder = RankZeroAudio(pipe.audio_encoder)
            pipe.parts_factory = partial(RankZeroParts, session=self)

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()
