"""Seeded random weights for every floating tensor of a module (constructors zero some tensors,
e.g. head weights, which would hide bugs)."""

import torch
from torch import nn


def randomize_(module: nn.Module, seed: int = 0, scale: float = 0.05) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(module.state_dict(keep_vars=True).items()):
            if not p.is_floating_point():
                continue
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if (
                name.endswith(("norm.weight", "gamma"))
                or ".norm" in name
                and name.endswith("weight")
            ):
                p.copy_(1 + 0.1 * noise)
            else:
                p.copy_(scale * noise)
    return module


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())
