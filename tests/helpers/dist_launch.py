"""Run a function on N gloo processes on loopback (torch.multiprocessing spawn) with a deadline.

A hang (a collective some rank never reaches) fails the test at ``timeout`` instead of
blocking CI: the still-running processes are killed.
"""

import os
import socket
import time
from collections.abc import Callable
from typing import Any

import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _entry(
    rank: int, fn: Callable[..., Any], world: int, port: int, args: tuple, backend: str
) -> None:
    import torch
    import torch.distributed as dist

    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    if backend == "nccl":
        torch.cuda.set_device(rank)
    dist.init_process_group(backend, rank=rank, world_size=world)
    try:
        fn(rank, world, *args)
    finally:
        if dist.is_initialized():  # a CLI run under test may have closed it already
            dist.destroy_process_group()


def run(
    fn: Callable[..., Any], world: int, *args: Any, timeout: float = 60.0, backend: str = "gloo"
) -> None:
    """Call ``fn(rank, world, *args)`` on ``world`` processes; raise if any fails or time runs out."""
    ctx = mp.start_processes(
        _entry,
        args=(fn, world, free_port(), args, backend),
        nprocs=world,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + timeout
    while not ctx.join(timeout=1.0):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                if p.is_alive():
                    p.kill()
            raise TimeoutError(f"{fn.__name__} on {world} processes did not finish in {timeout}s")
