"""Peak memory of the whole Wan2.1 T2V-1.3B path on the CPU: umT5-XXL text encoding, one
denoising step with CFG (two DiT forwards) and the VAE decode, at 832x480 and 81 frames by
default, with and without the low-memory switches.

- ``lean``: ``--dtype bf16 --offload block --vae-tiling``: the umT5-XXL stays in its file and is
  read one block at a time, the DiT holds bf16 weights, the VAE decodes in blended tiles.
- ``plain``: the defaults (fp32 DiT, the whole umT5-XXL in memory, untiled decode).

Each mode runs ``openwan generate`` in its own child process; the peak RSS is that child's own
(``os.wait4``), so one mode never colours another's figure.

The weights are random, written once in the official folder layout (about 15 GB of disk: the
umT5-XXL alone is 11.4 GB in bf16), with a small trained tokenizer in place of umT5's:

    python benchmarks/bench_lowmem.py --setup /data/wan13b-random
    python benchmarks/bench_lowmem.py --ckpt-dir /data/wan13b-random --modes lean,plain

``--frames`` / ``--size`` shrink the run (the VAE decode's peak does not grow with the frame
count, so a short plain run already shows the plain path's peak).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LEAN = ["--dtype", "bf16", "--offload", "block", "--vae-tiling"]
PROMPT = "a red circle moving from left to right on a black background"


def setup(root: Path) -> None:
    """Random Wan2.1 T2V-1.3B weights in the official layout (umT5-XXL at its real size)."""
    import torch

    from openwan.checkpoint.dit_format import save_dit
    from openwan.checkpoint.vae_format import save_vae
    from openwan.configs.dit import WAN21_T2V_1_3B
    from openwan.configs.vae import WAN21_VAE
    from openwan.data.shapes import caption_corpus
    from openwan.models.dit import WanModel
    from openwan.models.text import OFFICIAL_T5_FILE, OFFICIAL_TOKENIZER_DIR, train_tokenizer
    from openwan.models.vae import WanVAE

    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    train_tokenizer(caption_corpus(), root / OFFICIAL_TOKENIZER_DIR, vocab_size=400)
    dit = WanModel(WAN21_T2V_1_3B)
    dit.init_weights()
    save_dit(dit.to(torch.bfloat16), root, format="official")
    del dit
    save_vae(WanVAE(WAN21_VAE), root / "Wan2.1_VAE.pth", format="official")
    print(f"DiT, VAE and tokenizer written ({time.perf_counter() - t0:.0f}s)", flush=True)

    d, heads, d_ff, layers, vocab, buckets = 4096, 64, 10240, 24, 256384, 32

    def rand(*shape: int, std: float = 0.02) -> torch.Tensor:
        return torch.empty(shape, dtype=torch.bfloat16).normal_(0.0, std)

    sd = {
        "token_embedding.weight": rand(vocab, d, std=1.0),
        "norm.weight": torch.ones(d, dtype=torch.bfloat16),
    }
    for i in range(layers):
        p = f"blocks.{i}."
        sd[p + "norm1.weight"] = torch.ones(d, dtype=torch.bfloat16)
        sd[p + "norm2.weight"] = torch.ones(d, dtype=torch.bfloat16)
        for name in ("q", "k", "v", "o"):
            sd[p + f"attn.{name}.weight"] = rand(d, d)
        sd[p + "pos_embedding.embedding.weight"] = rand(buckets, heads)
        sd[p + "ffn.gate.0.weight"] = rand(d_ff, d)
        sd[p + "ffn.fc1.weight"] = rand(d_ff, d)
        sd[p + "ffn.fc2.weight"] = rand(d, d_ff)
    torch.save(sd, root / OFFICIAL_T5_FILE)
    print(f"umT5-XXL written ({time.perf_counter() - t0:.0f}s): {root}", flush=True)


def run(ckpt: Path, mode: str, frames: int, size: str, threads: int | None) -> dict:
    out = Path(tempfile.mkdtemp()) / f"{mode}.mp4"
    cmd = [sys.executable, "-m", "openwan", "generate", "--task", "t2v-1.3B", "--ckpt-dir",
           str(ckpt), "--size", size, "--frame-num", str(frames), "--sample-steps", "1",
           "--prompt", PROMPT, "--seed", "0", "--device", "cpu", "--quiet",
           "--save-file", str(out)] + (LEAN if mode == "lean" else [])  # fmt: skip
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    err = proc.stderr.read() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{mode} failed:\n{err[-2000:]}")
    return {"mode": mode, "seconds": seconds, "peak_mb": usage.ru_maxrss / 1024, "out": str(out)}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--setup", type=Path, help="write random official-layout weights here and stop")
    ap.add_argument("--ckpt-dir", type=Path)
    ap.add_argument("--modes", default="lean,plain")
    ap.add_argument("--frames", type=int, default=81)
    ap.add_argument("--size", default="832*480")
    ap.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of the children")
    args = ap.parse_args()
    if args.setup:
        setup(args.setup)
        return
    if args.ckpt_dir is None:
        ap.error("give --ckpt-dir (a folder written by --setup) or --setup")
    rows = [
        run(args.ckpt_dir, m, args.frames, args.size, args.threads) for m in args.modes.split(",")
    ]
    print(f"whole path, {args.size}, {args.frames} frames, 1 step with CFG")
    print(f"{'mode':8s} {'seconds':>9s} {'peak RSS MB':>12s} {'peak GiB':>9s}")
    for r in rows:
        print(f"{r['mode']:8s} {r['seconds']:9.1f} {r['peak_mb']:12.0f} {r['peak_mb'] / 1024:9.2f}")
    if len(rows) == 2:
        print(f"lean / plain peak: {rows[0]['peak_mb'] / rows[1]['peak_mb']:.2f}")


if __name__ == "__main__":
    main()
