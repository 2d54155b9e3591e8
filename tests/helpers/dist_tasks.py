"""Workers for the VACE / S2V context-parallel tests (importable by spawned processes).

Rank 0 writes the measured relative errors to ``out``; the test asserts in the parent.
"""

import json
from functools import partial
from pathlib import Path

import numpy as np
import torch.distributed as dist

from helpers.random_weights import randomize_, rel_err
from openwan.models.vace import VaceWanModel
from openwan.pipelines.s2v import ClipParts
from openwan.runtime.parallel import (
    ContextParallelVace,
    ParallelPlan,
    build_mesh,
)
from openwan.runtime.parallel.session import RankZeroParts


def generations(rank: int, world: int, out: str, s2v: dict) -> None:
    """A tiny VACE generation under Ring 2 vs one process (rel. error to ``out``); an S2V run
    under a Ring-2 + FSDP session that keeps its clip latents (``s2v_clip_latents``); then the
    ``openwan`` command line ``s2v["cli"]`` (last: the CLI closes the process group)."""
    from openwan.cli.main import main
    from openwan.runtime.parallel.session import ParallelSession

    generation = _vace_generation()
    session = ParallelSession(build_mesh(ParallelPlan(ring=2), "cpu"), dit_fsdp=True)
    s2v_clip_latents(s2v["ckpt"], s2v["request"], s2v["out"], session)
    # a rerun finds every clip in rank 0's store: no rank samples again (nor hangs)
    resumed = s2v_clip_latents(s2v["ckpt"], s2v["request"], s2v["out"], session)
    steps: list = [None] * world
    dist.all_gather_object(steps, resumed)
    if rank == 0:
        Path(out).write_text(json.dumps({"vace": generation, "resumed_steps": steps}))
    if main(s2v["cli"]) != 0:
        raise RuntimeError(f"openwan {' '.join(s2v['cli'])} failed on rank {rank}")


class _KeptParts(ClipParts):
    def remove(self) -> None:  # keep the clip latents: the exact result, before the lossy mp4
        pass


class _KeptRankZeroParts(RankZeroParts):
    def remove(self) -> None:
        pass


def s2v_clip_latents(ckpt: str, request: dict, out: str, session=None) -> int:
    """Run WanS2V to ``out`` (mp4) and keep ``<out>.parts/`` with every clip's latent; returns
    the number of denoising steps run (0 when every clip was already stored)."""
    from openwan.pipelines.s2v import S2VRequest, WanS2V

    pipe = WanS2V.from_pretrained(ckpt, device="cpu")
    pipe.parts_factory = _KeptParts
    if session is not None:
        session.apply(pipe)
        pipe.parts_factory = partial(_KeptRankZeroParts, session=session)
    steps = []
    pipe.generate(S2VRequest(**request), out, callback=lambda i, n: steps.append(i))
    return len(steps)


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
