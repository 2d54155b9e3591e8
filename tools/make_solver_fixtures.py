"""Produce reference numbers for the solver tests from the OFFICIAL Wan schedulers.

Run by hand, never by CI:  python tools/make_solver_fixtures.py --wan21 <export of Wan-Video/Wan2.1>
The official code is imported from the given path only; nothing of it is stored, only numbers.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

WAN21_COMMIT = "9737cba9c1c3c4d04b33fcad41c111989865d315"
CASES = [
    ("unipc", 50, 5.0),
    ("unipc", 40, 12.0),
    ("unipc", 40, 3.0),
    ("unipc", 4, 1.0),
    ("unipc", 10, 5.0),
    ("dpm++", 50, 5.0),
    ("dpm++", 40, 12.0),
    ("dpm++", 4, 1.0),
    ("dpm++", 10, 5.0),
]


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def toy_inputs():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 3, 5, generator=g)
    w = torch.randn(4, 4, generator=g) / 2
    c = torch.randn(2, 4, 3, 5, generator=g)
    return x, w, c


def toy_velocity(x, t, w, c):
    # a smooth nonlinear field that depends on the timestep
    return torch.tanh(torch.einsum("ij,bjhw->bihw", w, x)) + c * (t / 1000.0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--wan21", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path("tests/fixtures/solvers/official.safetensors"))
    args = ap.parse_args()
    unipc = _load(args.wan21 / "wan/utils/fm_solvers_unipc.py", "ref_unipc")
    dpm = _load(args.wan21 / "wan/utils/fm_solvers.py", "ref_dpm")
    x0, w, c = toy_inputs()
    out = {"toy.x": x0, "toy.w": w, "toy.c": c}
    for solver, steps, shift in CASES:
        key = f"{solver}.{steps}.{shift:g}"
        if solver == "unipc":
            sch = unipc.FlowUniPCMultistepScheduler(
                num_train_timesteps=1000, shift=1, use_dynamic_shifting=False
            )
            sch.set_timesteps(steps, device="cpu", shift=shift)
        else:
            sch = dpm.FlowDPMSolverMultistepScheduler(
                num_train_timesteps=1000, shift=1, use_dynamic_shifting=False
            )
            sch.set_timesteps(sigmas=dpm.get_sampling_sigmas(steps, shift), device="cpu")
        out[f"{key}.sigmas"] = sch.sigmas.clone()
        out[f"{key}.timesteps"] = sch.timesteps.clone()
        x = x0.clone()
        for t in sch.timesteps:
            v = toy_velocity(x, t.float(), w, c)
            x = sch.step(v, t, x, return_dict=False)[0]
        out[f"{key}.x0"] = x
    meta = {
        "official_repo": "Wan-Video/Wan2.1",
        "official_commit": WAN21_COMMIT,
        "torch": torch.__version__,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in out.items()}, str(args.out), metadata=meta)
    print(f"wrote {len(out)} tensors to {args.out}")


if __name__ == "__main__":
    main()
