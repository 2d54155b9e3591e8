"""Tiny random-weight Wan checkpoints written in the official and the diffusers layouts."""

import json
import shutil
from pathlib import Path

import torch

from helpers.random_weights import randomize_
from openwan.checkpoint.dit_format import save_dit
from openwan.checkpoint.t5_format import hf_to_official
from openwan.checkpoint.vae_format import save_vae
from openwan.configs.dit import DiTConfig
from openwan.configs.vae import WAN21_VAE
from openwan.models.dit import WanModel
from openwan.models.text import tiny_umt5_config, train_tokenizer
from openwan.models.vace import VaceWanModel
from openwan.models.vae import WanVAE

CAPTIONS = [
    "a red circle moving from left to right on a black background",
    "a blue square moving up on a gray background",
    "a green triangle growing on a navy background",
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量",
] * 4

DIT = DiTConfig(dim=64, ffn_dim=96, num_heads=2, num_layers=2, text_dim=32, text_len=512)
VAE = WAN21_VAE.replace(dim=8, dec_dim=8)


def build_models(seed=0):
    from transformers import UMT5EncoderModel

    dit = randomize_(WanModel(DIT), seed=seed).eval()
    vae = randomize_(WanVAE(VAE), seed=seed + 1, scale=0.05).eval()
    return dit, vae, UMT5EncoderModel


def write_checkpoints(root: Path, seed=0, dit_config: DiTConfig = DIT) -> tuple[Path, Path]:
    """Write the same random weights as <root>/official and <root>/diffusers; return both paths."""
    from transformers import AutoTokenizer, UMT5EncoderModel

    tok_dir = train_tokenizer(CAPTIONS, root / "tok", vocab_size=150)
    vocab = len(AutoTokenizer.from_pretrained(str(tok_dir)))
    t5 = randomize_(
        UMT5EncoderModel(tiny_umt5_config(vocab, d_model=32, num_heads=4, d_ff=48)),
        seed=seed + 2,
        scale=0.2,
    )
    t5.config.openwan_text_len = 512
    dit_cls = VaceWanModel if dit_config.is_vace else WanModel
    dit = randomize_(dit_cls(dit_config), seed=seed).eval()
    vae = randomize_(WanVAE(VAE), seed=seed + 1, scale=0.05).eval()

    official = root / "official"
    save_dit(dit, official, format="official")
    save_vae(vae, official / "Wan2.1_VAE.pth", format="official")
    torch.save(hf_to_official(t5.state_dict()), official / "models_t5_umt5-xxl-enc-bf16.pth")
    shutil.copytree(tok_dir, official / "google" / "umt5-xxl")

    diffusers = root / "diffusers"
    save_dit(dit, diffusers / "transformer", format="diffusers")
    save_vae(vae, diffusers / "vae", format="diffusers")
    t5.save_pretrained(str(diffusers / "text_encoder"))
    shutil.copytree(tok_dir, diffusers / "tokenizer")
    (diffusers / "model_index.json").write_text(json.dumps({"_class_name": "WanPipeline"}))
    return official, diffusers


def diffusers_model(cls, folder: Path):
    """A diffusers model built directly (from_pretrained would need accelerate), loaded strictly."""
    import json

    from safetensors.torch import load_file

    config = json.loads((folder / "config.json").read_text())
    config = {k: v for k, v in config.items() if not k.startswith("_") and k != "clip_output"}
    model = cls(**config)
    model.load_state_dict(
        load_file(str(folder / "diffusion_pytorch_model.safetensors")), strict=True
    )
    return model.eval()


def official_unipc(diffusers, steps: int, shift: float):
    """diffusers' UniPC (flow, bh2) forced onto the official sigma table.

    diffusers' own flow table starts at sigma 0.999999 where the official one starts at 0.999.
    """
    from openwan.sampling.schedules import make_schedule

    sched = diffusers.UniPCMultistepScheduler(
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        flow_shift=shift,
        solver_order=2,
        solver_type="bh2",
        lower_order_final=True,
        final_sigmas_type="zero",
    )
    table = make_schedule("unipc", steps, shift)
    original = sched.set_timesteps

    def official_table(num_inference_steps, device=None, **kw):
        original(num_inference_steps, device=device, **kw)
        sched.sigmas, sched.timesteps = table.sigmas.clone(), table.timesteps.clone()

    sched.set_timesteps = official_table
    return sched
