"""Block-level offload: DiT blocks live on the CPU and stream to the device one at a time.

``apply_block_offload(model, device)`` keeps everything but the streamed modules on ``device``
and returns a module to call instead of the model (``denoiser=`` puts it around a cache wrapper of
the same model). The streamed modules are the blocks and, in S2V, the audio injectors that run
between them (:func:`stream_order`; at the S2V-14B config the injectors hold 1.9B of its 16.3B
parameters, too many to keep resident). Its ``.to()`` / ``.cpu()`` are no-ops: placement is the
offloader's job, so a pipeline's model-level offload (moving the whole DiT to the device per
step) cannot undo it. A forward pre-hook on module ``i`` makes sure it is resident and starts
copying module ``i + 1`` (on a side CUDA stream, from pinned memory, so the copy overlaps module
``i``'s compute); a forward hook sends module ``i`` back to the CPU. Peak device memory is then
about two blocks plus activations instead of the whole model. Hooks, not forward patches: the
DiT code is unchanged and ``remove()`` takes them off.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from openwan.models.dit import WanModel
from openwan.models.s2v import WanModelS2V


def stream_order(model: WanModel) -> list[nn.Module]:
    """The modules that stream, in the order a forward calls them: the blocks, and in S2V after
    each injected block its injector's AdaLN then attention. The official S2V checkpoint also
    holds injectors no block calls (see ``S2VConfig.injector_map``); they stay on the CPU."""
    if not isinstance(model, WanModelS2V):
        return list(model.blocks)
    inj = model.audio_injector
    order: list[nn.Module] = []
    for i, block in enumerate(model.blocks):
        order.append(block)
        if i in model.injected:
            k = model.injected[i]
            order += [inj.injector_adain_layers[k], inj.injector[k]]
    return order


class BlockOffload(nn.Module):
    def __init__(
        self, model: WanModel, device: torch.device, denoiser: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.model, self.device = model, torch.device(device)
        self.denoiser = denoiser if denoiser is not None else model
        self.config = model.config
        # ("load" | "evict", index in stream_order), for inspection
        self.events: list[tuple[str, int]] = []
        self._stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        self.units = stream_order(model)
        # a child holding a streamed module stays on the CPU whole (``blocks``; S2V's
        # ``audio_injector``, whose uncalled injectors then never move); the rest goes to the device
        in_units = {id(m) for unit in self.units for m in unit.modules()}
        for child in model.children():
            streams = any(id(m) in in_units for m in child.modules())
            child.to("cpu" if streams else self.device)
        # the CPU copy of every streamed tensor is the master (pinned for async copies); on load
        # the tensors point at a device copy, on evict back at the master: inference never
        # writes them
        self._master: list[list[torch.Tensor]] = []
        for unit in self.units:
            tensors = [*unit.parameters(), *unit.buffers()]
            if self._stream is not None:
                for t in tensors:
                    t.data = t.data.pin_memory()
            self._master.append([t.data for t in tensors])
        self._resident: set[int] = set()
        self._handles = []
        for i, unit in enumerate(self.units):
            self._handles.append(unit.register_forward_pre_hook(self._before(i)))
            self._handles.append(unit.register_forward_hook(self._after(i)))

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.denoiser(*args, **kwargs)

    def _apply(self, fn: Any, recurse: bool = True) -> BlockOffload:
        return self  # device moves from outside are ignored: the hooks place the blocks

    def _tensors(self, i: int) -> list[torch.Tensor]:
        unit = self.units[i]
        return [*unit.parameters(), *unit.buffers()]

    def _load(self, i: int) -> None:
        if i in self._resident or i >= len(self.units):
            return
        self.events.append(("load", i))
        if self._stream is None:
            for t, master in zip(self._tensors(i), self._master[i]):
                t.data = master.to(self.device)
        else:
            with torch.cuda.stream(self._stream):
                for t, master in zip(self._tensors(i), self._master[i]):
                    t.data = master.to(self.device, non_blocking=True)
        self._resident.add(i)

    def _before(self, i: int) -> Any:
        def hook(module: nn.Module, args: Any) -> None:
            self._load(i)
            if self._stream is not None:  # module i's copy must be done before it runs
                current = torch.cuda.current_stream(self.device)
                current.wait_stream(self._stream)
                for t in self._tensors(i):  # allocated on the side stream, used on this one
                    t.data.record_stream(current)
            self._load(i + 1)  # prefetch, overlapping module i's compute

        return hook

    def _after(self, i: int) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            self.events.append(("evict", i))
            for t, master in zip(self._tensors(i), self._master[i]):
                t.data = master
            self._resident.discard(i)

        return hook

    def remove(self) -> nn.Module:
        """Take the hooks off and give back what was called (the streamed modules stay on the
        CPU)."""
        for h in self._handles:
            h.remove()
        return self.denoiser


def apply_block_offload(
    model: WanModel, device: str | torch.device, denoiser: nn.Module | None = None
) -> BlockOffload:
    """Stream ``model``'s blocks (and S2V's audio injectors) to ``device`` during the forward;
    the rest stays on ``device``."""
    return BlockOffload(model, torch.device(device), denoiser)
