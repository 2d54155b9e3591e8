"""Memory / communication model of Wan 14B at 720P x 81 frames under FSDP2 x Ulysses x Ring.

    python benchmarks/parallel_model.py                 # 8 and 64 GPUs, every (U, R) layout
    python benchmarks/parallel_model.py --gpus 16       # another GPU count
    python benchmarks/parallel_model.py --measure       # + the NCCL section (needs >= 2 GPUs)

Per GPU, per DiT call (one CFG branch of one denoising step), openwan's layouts:

* parameters: the DiT in its compute dtype (bf16 on CUDA), divided by the world size under
  FSDP, plus two unsharded blocks (the one running and the prefetched next); the umT5-XXL
  encoder (bf16) likewise with --t5-fsdp.
* activations: the fp32 residual stream and the attention working set of one block for this
  rank's ``ceil(L / (U R))`` tokens (flash/SDPA kernels: linear in tokens), the replicated text
  keys, and the gathered head output. The ring steps of openwan's current reference kernel
  materialise an fp32 score block of ``H/U x 2048 query rows x L/R keys`` (column "ring S").
* communication (bytes each rank sends): Ulysses 4 all-to-alls per block (q, k, v, out),
  ring ``R - 1`` K/V hand-offs per block, FSDP all-gathers of every block (bf16), the head
  gather.

Parameter counts come from a closed formula and are checked against the model built on the
``meta`` device (no memory allocated).
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from openwan.configs.dit import WAN21_T2V_14B, DiTConfig  # noqa: E402
from openwan.runtime.parallel.context import QUERY_CHUNK  # noqa: E402

GiB = 2**30
BF16, FP32 = 2, 4


def dit_params_formula(cfg: DiTConfig) -> tuple[int, int]:
    """(total, per block) parameter counts of WanModel(cfg) from the architecture alone."""
    d, f = cfg.dim, cfg.ffn_dim
    lin = d * d + d
    block = 4 * lin + 2 * d  # self-attention q k v o + qk norms
    block += 4 * lin + 2 * d + 2 * d  # cross-attention + qk norms + norm3 (affine)
    if cfg.has_image_embedding:
        block += 2 * lin + d  # k_img v_img norm_k_img
    block += d * f + f + f * d + d + 6 * d  # ffn + modulation
    patch = math.prod(cfg.patch_size)
    rest = cfg.in_dim * patch * d + d  # patch embedding
    rest += cfg.text_dim * d + d + lin  # text embedding
    rest += cfg.freq_dim * d + d + lin  # time embedding
    rest += d * 6 * d + 6 * d  # time projection
    rest += d * patch * cfg.out_dim + patch * cfg.out_dim + 2 * d  # head + modulation
    if cfg.has_image_embedding:
        c = 1280
        rest += 2 * c + c * c + c + c * d + d + 2 * d  # MLPProj
        if cfg.model_type == "flf2v":
            rest += 514 * c
    return rest + cfg.num_layers * block, block


def meta_params(cfg: DiTConfig) -> tuple[int, int]:
    from openwan.models.dit import WanModel

    with torch.device("meta"):
        model = WanModel(cfg)
    return sum(p.numel() for p in model.parameters()), sum(
        p.numel() for p in model.blocks[0].parameters()
    )


def umt5_xxl_params() -> int:
    from transformers import UMT5EncoderModel

    from openwan.checkpoint.t5_format import umt5_config

    config = umt5_config(
        vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64
    )
    with torch.device("meta"):
        model = UMT5EncoderModel(config)
    return sum(p.numel() for p in model.parameters())


@dataclass(frozen=True)
class Workload:
    cfg: DiTConfig
    tokens: int  # L
    dit_params: int
    block_params: int
    t5_params: int
    text_len: int = 512


def tokens_720p_81(cfg: DiTConfig) -> int:
    f, h, w = 1 + (81 - 1) // 4, 720 // 8, 1280 // 8  # VAE stride (4, 8, 8)
    pt, ph, pw = cfg.patch_size
    return (f // pt) * (h // ph) * (w // pw)


def layouts(gpus: int, heads: int) -> list[tuple[int, int]]:
    return [(u, gpus // u) for u in range(1, gpus + 1) if gpus % u == 0 and heads % u == 0]


def per_gpu(w: Workload, gpus: int, u: int, r: int, fsdp: bool, t5_fsdp: bool) -> dict:
    cfg, d = w.cfg, w.cfg.dim
    p = u * r
    ls = math.ceil(w.tokens / p)
    dit = w.dit_params * BF16 / (gpus if fsdp else 1) + (2 * w.block_params * BF16 if fsdp else 0)
    t5 = w.t5_params * BF16 / (gpus if t5_fsdp else 1)
    # one block's live tensors per token: residual + modulated input (fp32), q k v (bf16), rope'd
    # q k (fp32), all-to-all send/recv buffers (bf16), attention out (bf16)
    per_token = (4 + 4) * d + 3 * BF16 * d + 2 * FP32 * d + 2 * 2 * BF16 * d + BF16 * d
    act = ls * per_token + 2 * w.text_len * d * BF16  # + text K/V of one block
    act += w.tokens * math.prod(cfg.patch_size) * cfg.out_dim * FP32  # gathered head output
    ring_kv = 2 * 2 * ls * d * BF16 if r > 1 else 0  # K/V chunk held + the one arriving
    # ring steps: one fp32 score block of QUERY_CHUNK query rows x the K chunk
    ring_scores = (cfg.num_heads // u) * min(QUERY_CHUNK, ls * u) * ls * u * FP32 if r > 1 else 0
    layers = cfg.num_layers
    a2a = 4 * ls * d * BF16 * (u - 1) / u * layers
    ring = (r - 1) * 2 * ls * d * BF16 * layers
    fsdp_comm = w.dit_params * BF16 * (gpus - 1) / gpus if fsdp else 0
    gather = ls * math.prod(cfg.patch_size) * cfg.out_dim * FP32 * (p - 1)
    return {
        "layout": f"U{u} x R{r}" + (" +fsdp" if fsdp else ""),
        "params_gib": (dit + t5) / GiB,
        "act_gib": (act + ring_kv) / GiB,
        "ring_scores_gib": ring_scores / GiB,
        "comm_gib": (a2a + ring + fsdp_comm + gather) / GiB,
        "a2a_gib": a2a / GiB,
        "ring_gib": ring / GiB,
        "fsdp_gib": fsdp_comm / GiB,
    }


def official_check(w: Workload) -> None:
    """Wan2.1 README, T2V-14B 720P on H100/H800 (WAN_SPEC 9.1): peak GiB at 2/4/8 GPUs with
    --ulysses_size N --dit_fsdp --t5_fsdp. Fit peak = A + B / N on N = 2, 4, predict N = 8, and
    compare B with what the official run shards: the DiT kept in fp32 (loaded in fp32, FSDP
    mixed precision gathers in bf16) plus umT5 in bf16."""
    peaks = {2: 53.9, 4: 37.9, 8: 29.9}
    b = (peaks[2] - peaks[4]) / (1 / 2 - 1 / 4)
    a = peaks[2] - b / 2
    sharded = (w.dit_params * FP32 + w.t5_params * BF16) / GiB
    print("\ncross-check with the official multi-GPU memory (T2V-14B 720P, H100):")
    print(f"  fit A + B/N on N=2,4: A = {a:.1f} GiB fixed, B = {b:.1f} GiB sharded")
    print(f"  predicted N=8: {a + b / 8:.1f} GiB (official {peaks[8]})")
    print(f"  model of the official sharded part (DiT fp32 + umT5 bf16): {sharded:.1f} GiB "
          f"({sharded / b:.3f} x the fit)")  # fmt: skip
    ours = (w.dit_params * BF16 + w.t5_params * BF16) / GiB
    print(f"  openwan shards the DiT in bf16: {ours:.1f} GiB, i.e. {(sharded - ours) / 8:.1f} GiB "
          "less per GPU at N=8")  # fmt: skip


def measure_nccl() -> None:
    """Run a 2-block 14B-width DiT at 480P on every layout of the visible GPUs (NCCL)."""
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n < 2:
        print(f"\nGPU section skipped: {n} CUDA device(s) visible, NCCL needs at least 2")
        return
    import torch.multiprocessing as mp

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import socket

    from parallel_gpu import worker

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(worker, args=(n, port), nprocs=n, join=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpus", type=int, nargs="+", default=[8, 64])
    ap.add_argument("--measure", action="store_true", help="also run the NCCL section")
    args = ap.parse_args()
    cfg = WAN21_T2V_14B
    total, block = dit_params_formula(cfg)
    meta_total, meta_block = meta_params(cfg)
    assert (total, block) == (meta_total, meta_block), (total, block, meta_total, meta_block)
    t5 = umt5_xxl_params()
    w = Workload(cfg, tokens_720p_81(cfg), total, block, t5)
    print(f"Wan2.1 T2V-14B: {total / 1e9:.3f} B DiT parameters ({block / 1e6:.1f} M per block, "
          f"formula == meta device), umT5-XXL encoder {t5 / 1e9:.3f} B; "
          f"720P x 81 frames = {w.tokens} tokens")  # fmt: skip
    for gpus in args.gpus:
        print(f"\n{gpus} GPUs, per GPU per DiT call (GiB; comm = bytes sent):")
        print(f"{'layout':18s} {'params':>7s} {'activ':>7s} {'ring S':>8s} {'comm':>7s} "
              f"{'a2a':>7s} {'ring':>7s} {'fsdp':>7s}")  # fmt: skip
        for u, r in layouts(gpus, cfg.num_heads):
            for fsdp in (False, True):
                row = per_gpu(w, gpus, u, r, fsdp, t5_fsdp=fsdp)
                print(f"{row['layout']:18s} {row['params_gib']:7.2f} {row['act_gib']:7.2f} "
                      f"{row['ring_scores_gib']:8.2f} {row['comm_gib']:7.2f} {row['a2a_gib']:7.2f} "
                      f"{row['ring_gib']:7.2f} {row['fsdp_gib']:7.2f}")  # fmt: skip
    official_check(w)
    if args.measure:
        measure_nccl()
    else:
        print("\n(--measure runs the NCCL section when several CUDA devices are present)")


if __name__ == "__main__":
    main()
