"""NCCL section of parallel_model.py: one spawned process per GPU (see ``measure_nccl``).

A 2-block DiT of 14B width (bf16) at 480P x 81 frames (32760 tokens), every (U, R) layout of
the visible GPUs: time per call, peak memory, and the relative difference of the output from
the same model on one GPU (bf16: expect ~1e-2, not the fp32 1e-5 of the CPU tests).
"""

from __future__ import annotations

import os
import time

import torch
import torch.distributed as dist

from openwan.configs.dit import WAN21_T2V_14B
from openwan.models.dit import WanModel
from openwan.runtime.parallel import ParallelPlan, apply_context_parallel, build_mesh


def _model(device: torch.device) -> WanModel:
    torch.manual_seed(0)
    model = WanModel(WAN21_T2V_14B.replace(num_layers=2))
    for p in model.parameters():  # the init zeroes the head: random weights everywhere instead
        torch.nn.init.normal_(p, std=0.02)
    return model.to(device, torch.bfloat16).eval()


def _inputs(device: torch.device) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    g = torch.Generator(device=device).manual_seed(1)
    x = torch.randn(1, 16, 21, 60, 104, generator=g, device=device)  # 480P x 81 frames
    ctx = [torch.randn(64, 4096, generator=g, device=device)]
    return x, torch.tensor([500.0], device=device), ctx


def _timed(fn: object) -> tuple[torch.Tensor, float]:
    with torch.no_grad():
        out = fn()  # type: ignore[operator]  # warm-up
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()  # type: ignore[operator]
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def worker(rank: int, world: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", rank=rank, world_size=world)
    device = torch.device("cuda", rank)
    x, t, ctx = _inputs(device)
    base = _model(device)
    ref, ref_s = _timed(lambda: base(x, t, ctx))
    if rank == 0:
        print(f"\nNCCL, {world} GPUs, 2 blocks of 14B at 480P: one GPU {ref_s:.3f}s")
        print(f"{'layout':10s} {'s/call':>8s} {'speed-up':>9s} {'peak GiB':>9s} {'rel diff':>9s}")
    heads = WAN21_T2V_14B.num_heads
    for u in [u for u in range(1, world + 1) if world % u == 0 and heads % u == 0]:
        plan = ParallelPlan(ulysses=u, ring=world // u)
        model = apply_context_parallel(_model(device), build_mesh(plan, "cuda"))
        torch.cuda.reset_peak_memory_stats()
        out, secs = _timed(lambda m=model: m(x, t, ctx))
        peak = torch.cuda.max_memory_allocated() / 2**30
        diff = float((out.float() - ref.float()).norm() / ref.float().norm())
        if rank == 0:
            print(
                f"U{u} x R{world // u:<4d} {secs:8.3f} {ref_s / secs:9.2f} {peak:9.2f} {diff:9.2e}"
            )
    dist.destroy_process_group()
