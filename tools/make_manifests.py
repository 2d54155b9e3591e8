"""Write key manifests (key -> shape) of every real config, built on the meta device.

python tools/make_manifests.py   (re-run only when an architecture change is intended)
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from openwan.configs import dit as dit_cfg
from openwan.configs.vae import WAN21_VAE, WAN22_VAE
from openwan.models.dit import WanModel
from openwan.models.vace import VaceWanModel
from openwan.models.vae import WanVAE

OUT = Path(__file__).resolve().parents[1] / "tests" / "keys" / "manifests"

DITS = {
    "dit_t2v_1.3B": dit_cfg.WAN21_T2V_1_3B,
    "dit_t2v_14B": dit_cfg.WAN21_T2V_14B,
    "dit_i2v_14B": dit_cfg.WAN21_I2V_14B,
    "dit_flf2v_14B": dit_cfg.WAN21_FLF2V_14B,
    "dit_ti2v_5B": dit_cfg.WAN22_TI2V_5B,
    "dit_i2v_A14B": dit_cfg.WAN22_I2V_A14B,
    "dit_vace_1.3B": dit_cfg.WAN21_VACE_1_3B,
    "dit_vace_14B": dit_cfg.WAN21_VACE_14B,
}
VAES = {"vae_2.1": WAN21_VAE, "vae_2.2": WAN22_VAE}


def manifest(module: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in module.state_dict().items()}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with torch.device("meta"):
        models = {
            **{k: (VaceWanModel if c.is_vace else WanModel)(c) for k, c in DITS.items()},
            **{k: WanVAE(c) for k, c in VAES.items()},
        }
    for name, model in models.items():
        (OUT / f"{name}.json").write_text(json.dumps(manifest(model), indent=0) + "\n")
        print(name, len(model.state_dict()))


if __name__ == "__main__":
    main()
