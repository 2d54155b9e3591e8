"""Copy a model folder (a DiT's ``config.json`` + ``diffusion_pytorch_model.safetensors``, or any
folder of ``*.safetensors`` and JSON files) with its weights packed as int8 with per-channel fp32
scales (:func:`openwan.checkpoint.io.pack_int8`), which every openwan loader unpacks to fp32.
This is how the embedded tiny model keeps its stage DiTs inside the package's 30 MB budget.

    python tools/pack_int8.py runs/wan-tiny-t2i/transformer src/openwan/assets/wan-tiny/transformer_t2i
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from safetensors.torch import load_file

from openwan.checkpoint.io import pack_int8, save_state_dict


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("src", type=Path, help="folder to copy")
    ap.add_argument("dst", type=Path, help="where to write the packed copy (created)")
    args = ap.parse_args()
    files = sorted(args.src.glob("*.safetensors"))
    if not files:
        raise SystemExit(f"no .safetensors files in {args.src}")
    args.dst.mkdir(parents=True, exist_ok=True)
    for src in sorted(args.src.glob("*.json")):
        shutil.copyfile(src, args.dst / src.name)
    for src in files:
        save_state_dict(pack_int8(load_file(str(src))), args.dst / src.name)
        print(f"{src} ({src.stat().st_size / 2**20:.2f} MiB) -> {args.dst / src.name} "
              f"({(args.dst / src.name).stat().st_size / 2**20:.2f} MiB)")  # fmt: skip


if __name__ == "__main__":
    main()
