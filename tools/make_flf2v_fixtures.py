"""Write the FLF2V reference fixture from the OFFICIAL Wan2.1 modules at a tiny random config.

Run by a developer, never by CI (the tests read only the stored file). Takes an export of the
official Wan-Video/Wan2.1 repository; no official code enters this repository:

    git --git-dir=<Wan2.1 clone>/.git archive HEAD | tar -x -C /tmp/wan21
    python tools/make_flf2v_fixtures.py --wan21 /tmp/wan21/wan --commit <hash> \
        --out tests/fixtures/flf2v/flf2v_tiny.safetensors

Two parts, in plain fp32 on the CPU (see /work/shared/OFFICIAL_REFERENCE_NOTES.md §2, §6):
- ``WanModel(model_type="flf2v")``: one forward with two CLIP token sets, the FLF2V mask and a
  random conditioning latent;
- the CLIP ``VisionTransformer`` (open-clip ViT layout): ``forward(use_31_block=True)``.
Weights and large inputs are rounded to fp16 for storage (the reference ran on the rounded values),
outputs are stored in fp32.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import types
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

DIT = dict(
    model_type="flf2v", patch_size=(1, 2, 2), text_len=512, in_dim=36, dim=64, ffn_dim=128,
    freq_dim=256, text_dim=32, out_dim=16, num_heads=2, num_layers=2, window_size=(-1, -1),
    qk_norm=True, cross_attn_norm=True, eps=1e-6,
)  # fmt: skip
CLIP = dict(
    image_size=28, patch_size=14, dim=160, mlp_ratio=0.6, out_dim=32, num_heads=2, num_layers=3,
    pool_type="token", pre_norm=True, post_norm=False, activation="gelu", norm_eps=1e-5,
)  # fmt: skip
FRAMES, LAT_H, LAT_W = 3, 4, 6  # latent grid; 4 * (3 - 1) + 1 = 9 pixel frames


def sdpa_attention(q, k, v, q_lens=None, k_lens=None, dropout_p=0.0, softmax_scale=None,
                   q_scale=None, causal=False, window_size=(-1, -1), deterministic=False,
                   dtype=None, version=None):  # fmt: skip
    """fp32 stand-in for the CUDA-only flash attention: [B, L, heads, d] in and out, keys masked
    by k_lens (query rows are never masked)."""
    out_dtype = q.dtype
    q, k, v = (t.float().transpose(1, 2) for t in (q, k, v))  # [B, heads, L, d]
    if q_scale is not None:
        q = q * q_scale
    mask = None
    if k_lens is not None:
        keep = torch.arange(k.shape[2])[None, :] < k_lens[:, None]  # [B, Lk]
        mask = keep[:, None, None, :]
    out = F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, is_causal=causal, scale=softmax_scale
    )
    return out.transpose(1, 2).to(out_dtype)


def import_official(wan_dir: Path) -> tuple[types.ModuleType, types.ModuleType]:
    """Import ``modules.model`` and ``modules.clip`` without the package ``__init__`` files."""
    for name, path in (("wan21", wan_dir), ("wan21.modules", wan_dir / "modules")):
        pkg = types.ModuleType(name)
        pkg.__path__ = [str(path)]
        sys.modules[name] = pkg
    attention = importlib.import_module("wan21.modules.attention")
    attention.flash_attention = sdpa_attention  # bound by name at import of model/clip
    model = importlib.import_module("wan21.modules.model")  # imports diffusers: before the stub
    try:
        import torchvision.transforms  # noqa: F401
    except ImportError:  # clip.py imports it for its preprocessing, which is not run here
        tv = types.ModuleType("torchvision")
        tv.transforms = types.ModuleType("torchvision.transforms")  # type: ignore[attr-defined]
        sys.modules["torchvision"] = tv
        sys.modules["torchvision.transforms"] = tv.transforms  # type: ignore[attr-defined]
    return model, importlib.import_module("wan21.modules.clip")


def randomize(module: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Every floating entry from one seeded generator in sorted-key order, rounded to fp16."""
    g = torch.Generator().manual_seed(seed)
    sd = module.state_dict()
    out = {}
    for key in sorted(sd):
        noise = torch.randn(sd[key].shape, generator=g)
        is_scale = key.endswith("weight") and ("norm" in key.split(".")[-2])
        value = 1 + 0.1 * noise if is_scale else 0.05 * noise
        out[key] = value.half().float()
    module.load_state_dict(out, strict=True)
    return out


def flf2v_mask(pixel_frames: int) -> torch.Tensor:
    """The FLF2V mask as the official pipeline builds it (ones at the first and last frame)."""
    m = torch.ones(1, pixel_frames, LAT_H, LAT_W)
    m[:, 1:-1] = 0
    m = torch.cat([m[:, :1].repeat_interleave(4, dim=1), m[:, 1:]], dim=1)
    return m.view(1, m.shape[1] // 4, 4, LAT_H, LAT_W).transpose(1, 2)[0]  # [4, T, h, w]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wan21", type=Path, required=True, help="the official wan/ package folder")
    ap.add_argument("--commit", required=True, help="official commit the export was taken from")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    model_mod, clip_mod = import_official(args.wan21)
    torch.manual_seed(0)
    tensors: dict[str, torch.Tensor] = {}

    with torch.no_grad():
        dit = model_mod.WanModel(**DIT).eval()
        tensors |= {f"dit.{k}": v for k, v in randomize(dit, seed=1).items()}
        g = torch.Generator().manual_seed(2)
        x = torch.randn(16, FRAMES, LAT_H, LAT_W, generator=g)
        latent = torch.randn(16, FRAMES, LAT_H, LAT_W, generator=g)
        y = torch.cat([flf2v_mask(4 * (FRAMES - 1) + 1), latent])
        clip_fea = torch.randn(2, 257, 1280, generator=g).half().float()  # first, last frame
        context = torch.randn(7, 32, generator=g)
        t = torch.tensor([700.0])
        seq_len = FRAMES * LAT_H * LAT_W // 4
        out = dit([x], t=t, context=[context], seq_len=seq_len, clip_fea=clip_fea, y=[y])[0]
        tensors |= {"in.x": x, "in.y": y, "in.clip_fea": clip_fea, "in.context": context}
        tensors |= {"in.t": t, "out.dit": out.float()}

        vit = clip_mod.VisionTransformer(**CLIP).eval()
        tensors |= {f"clip.visual.{k}": v for k, v in randomize(vit, seed=3).items()}
        pixels = torch.randn(2, 3, 28, 28, generator=g)
        tensors |= {"in.pixels": pixels, "out.clip": vit(pixels, use_31_block=True).float()}

    stored = {
        k: v.half() if k.startswith(("dit.", "clip.", "in.clip_fea")) else v
        for k, v in tensors.items()
    }
    meta = {
        "dit_config": json.dumps(DIT),
        "clip_config": json.dumps(CLIP),
        "seq_len": str(seq_len),
        "official": f"Wan-Video/Wan2.1@{args.commit}",
        "torch": torch.__version__,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in stored.items()}, str(args.out), metadata=meta)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
