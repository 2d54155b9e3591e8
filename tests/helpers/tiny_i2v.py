"""Tiny random-weight I2V / FLF2V / I2V-A14B checkpoints in the official and diffusers layouts
(the T2V helper's VAE, text encoder and tokenizer, an image-conditioned DiT and a CLIP tower)."""

import shutil
from pathlib import Path

import torch

from helpers.random_weights import randomize_
from helpers.tiny_ckpt import DIT, write_checkpoints
from openwan.checkpoint.clip_format import hf_to_official, vit_h14_config
from openwan.checkpoint.dit_format import save_dit
from openwan.models.dit import WanModel
from openwan.models.image import OFFICIAL_CLIP_FILE

# The DiT's image embedder is 1280 wide and FLF2V's emb_pos holds 2 x 257 tokens, so the tiny
# CLIP keeps width 1280 (16 heads of 80) and 257 tokens (32 px images in 2 px patches), but only
# 2 blocks with a narrow MLP.
CLIP = dict(
    hidden_size=1280,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=16,
    image_size=32,
    patch_size=2,
)


def tiny_clip(seed=0):
    from transformers import CLIPVisionModel

    torch.manual_seed(seed)
    return randomize_(CLIPVisionModel(vit_h14_config(**CLIP)), seed=seed, scale=0.05).eval()


def i2v_dit(model_type="i2v", seed=0, image_embedding=None):
    cfg = DIT.replace(model_type=model_type, in_dim=36, image_embedding=image_embedding)
    return randomize_(WanModel(cfg), seed=seed).eval()


def write_i2v_checkpoints(root: Path, kind="i2v", seed=0):
    """kind: "i2v" (Wan2.1 I2V), "flf2v" or "a14b" (two experts, no CLIP). Returns both roots."""
    official, diffusers = write_checkpoints(root, seed=seed)
    for stale in ("config.json", "diffusion_pytorch_model.safetensors"):
        (official / stale).unlink()
    shutil.rmtree(diffusers / "transformer")
    if kind == "a14b":
        low = i2v_dit(seed=seed + 10, image_embedding=False)
        high = i2v_dit(seed=seed + 11, image_embedding=False)
        save_dit(low, official / "low_noise_model", format="official")
        save_dit(high, official / "high_noise_model", format="official")
        save_dit(high, diffusers / "transformer", format="diffusers")
        save_dit(low, diffusers / "transformer_2", format="diffusers")
        return official, diffusers
    dit = i2v_dit(kind, seed=seed + 10)
    with torch.no_grad():
        if kind == "flf2v":  # zeros at init: give the position embedding a value that matters
            dit.img_emb.emb_pos.normal_(0, 0.5, generator=torch.Generator().manual_seed(seed))
    save_dit(dit, official, format="official")
    save_dit(dit, diffusers / "transformer", format="diffusers")
    clip = tiny_clip(seed + 20)
    torch.save(hf_to_official(clip.state_dict()), official / OFFICIAL_CLIP_FILE)
    clip.save_pretrained(str(diffusers / "image_encoder"))
    return official, diffusers
