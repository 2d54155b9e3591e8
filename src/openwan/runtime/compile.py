"""Regional torch.compile: each DiT block is compiled on its own (one graph reused by every
block of the same shape), which compiles in seconds instead of minutes for the whole model.

``apply_compile(model)`` compiles each block's ``forward`` in place and returns ``None``, or,
when compilation is unavailable here, leaves the model eager and returns the reason (also
logged) so callers can say why they fell back. The forward, not the whole module call
(``nn.Module.compile``): module hooks then run eagerly around the compiled code, so block offload
(whose hooks re-point the weights at a device copy before the block and back after it) works
with it. The compiled code reads the weights the module holds at each call (parameters are
inputs of the graph), so re-pointed weights are used as they are.
"""

from __future__ import annotations

import logging
import shutil

import torch

from openwan.models.dit import WanModel

log = logging.getLogger(__name__)


def compile_unavailable(backend: str) -> str | None:
    """Why ``torch.compile`` cannot run here (None when it can), found by compiling a probe."""
    if not torch._dynamo.is_dynamo_supported():
        return "torch.compile (dynamo) is not supported on this Python/platform"
    if backend == "inductor" and shutil.which("cc") is None and shutil.which("gcc") is None:
        return "inductor needs a C/C++ compiler on the CPU (install gcc) or a GPU"
    try:
        probe = torch.compile(lambda x: x * 2 + 1, backend=backend, dynamic=False)
        probe(torch.ones(4))
    except Exception as e:  # any failure of the compiler stack means: stay eager
        return f"the {backend} backend failed on a probe: {type(e).__name__}: {e}"
    return None


def apply_compile(model: WanModel, backend: str = "inductor") -> str | None:
    """Compile every block of ``model`` in place; returns the fallback reason, or None."""
    reason = compile_unavailable(backend)
    if reason is not None:
        log.warning("--compile: staying eager: %s", reason)
        return reason
    for block in model.blocks:
        block.forward = torch.compile(block.forward, backend=backend, dynamic=False)
    return None


def is_compiled(block: torch.nn.Module) -> bool:
    """Whether :func:`apply_compile` compiled this block."""
    return "forward" in vars(block)
