"""Reference numbers for Wan-S2V from the OFFICIAL Wan2.2 modules at a tiny random-weight config.

Run by hand, never by CI, in an environment that has what the official modules import
(torch, diffusers, einops; transformers 4.x, librosa and soundfile for the audio front end)::

    python tools/make_s2v_fixtures.py --wan22 <export of Wan-Video/Wan2.2> [--out tests/fixtures/s2v]

The official code is imported from the given path only (as isolated modules, not the ``wan``
package); nothing of it is stored, only numbers: inputs, the re-randomised weights in the official
state-dict layout, outputs, and metadata (tiny config, official commit, library versions).
Flash attention is replaced by an fp32 SDPA function with the same signature (the official fallback
casts to bf16 and drops the key mask), so the fixtures are the fp32 ideal of the official model.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import sys
import tempfile
import types
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

WAN22_COMMIT = "42bf4cfaa384bc21833865abc2f9e6c0e67233dc"
PKG = "wan22"

# Tiny WanModel_S2V: every switch as in the real S2V-14B config, small widths.
TINY = dict(
    cond_dim=16,
    audio_dim=32,
    num_audio_token=4,
    enable_adain=True,
    adain_mode="attn_norm",
    audio_inject_layers=[0, 1, 3],
    zero_init=True,
    zero_timestep=True,
    enable_motioner=False,
    add_last_motion=True,
    enable_tsm=False,
    trainable_token_pos_emb=False,
    enable_framepack=True,
    framepack_drop_mode="padd",
    model_type="s2v",
    patch_size=[1, 2, 2],
    text_len=512,
    in_dim=16,
    dim=64,
    ffn_dim=128,
    freq_dim=256,
    text_dim=32,
    out_dim=16,
    num_heads=2,
    num_layers=4,
    eps=1e-6,
)
REAL = dict(
    TINY,
    audio_dim=1024,
    audio_inject_layers=[0, 4, 8, 12, 16, 20, 24, 27, 30, 33, 36, 39],
    text_dim=4096,
    dim=5120,
    ffn_dim=13824,
    num_heads=40,
    num_layers=40,
)
T_LAT, LAT_H, LAT_W = 3, 8, 16  # latent frames / height / width of one tiny clip
MOTION_FRAMES = [73, 19]  # pixel / latent motion frames, as the pipeline passes them
TINY_WAV2VEC = dict(
    vocab_size=8,
    hidden_size=32,
    num_hidden_layers=24,
    num_attention_heads=2,
    intermediate_size=64,
    conv_dim=[16] * 7,
    conv_bias=True,
    feat_extract_norm="layer",
    do_stable_layer_norm=True,
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=4,
    hidden_act="gelu",
    feat_extract_activation="gelu",
)
FEATURE_EXTRACTOR = dict(
    feature_size=1,
    sampling_rate=16000,
    padding_value=0.0,
    do_normalize=True,
    return_attention_mask=True,
)


# ----------------------------------------------------------------------------- official imports
def sdpa_fp32(
    q,
    k,
    v,
    q_lens=None,
    k_lens=None,
    dropout_p=0.0,
    softmax_scale=None,
    q_scale=None,
    causal=False,
    window_size=(-1, -1),
    deterministic=False,
    dtype=torch.bfloat16,
    version=None,
):
    """fp32 stand-in for the official flash_attention: [B, L, H, D] in, [B, Lq, H, D] out."""
    assert q_lens is None and not causal and tuple(window_size) == (-1, -1)
    qf, kf, vf = (t.float().transpose(1, 2) for t in (q, k, v))
    if q_scale is not None:
        qf = qf * q_scale
    mask = None
    if k_lens is not None:
        keep = torch.arange(kf.shape[2])[None, :] < k_lens.to(torch.long)[:, None]  # [B, Lk]
        mask = keep[:, None, None, :]
    out = F.scaled_dot_product_attention(qf, kf, vf, attn_mask=mask, scale=softmax_scale)
    return out.transpose(1, 2).to(q.dtype)


def import_official(wan22: Path) -> dict[str, types.ModuleType]:
    root = wan22 / "wan" if (wan22 / "wan").is_dir() else wan22
    for name, sub in [
        (PKG, ""),
        (f"{PKG}.modules", "modules"),
        (f"{PKG}.modules.s2v", "modules/s2v"),
        (f"{PKG}.distributed", "distributed"),
        (f"{PKG}.utils", "utils"),
    ]:
        pkg = types.ModuleType(name)
        pkg.__path__ = [str(root / sub)]
        sys.modules[name] = pkg
    attn = importlib.import_module(f"{PKG}.modules.attention")
    attn.flash_attention = sdpa_fp32  # before model / model_s2v bind the name
    mods = {
        "model": importlib.import_module(f"{PKG}.modules.model"),
        "model_s2v": importlib.import_module(f"{PKG}.modules.s2v.model_s2v"),
        "unipc": importlib.import_module(f"{PKG}.utils.fm_solvers_unipc"),
    }
    assert mods["model_s2v"].flash_attention is sdpa_fp32
    return mods


def import_audio_encoder() -> types.ModuleType:
    return importlib.import_module(f"{PKG}.modules.s2v.audio_encoder")


# ----------------------------------------------------------------------------- helpers
def rerandomise(module: torch.nn.Module, seed: int) -> None:
    """Overwrite every floating state-dict entry (sorted keys) from one seeded generator.

    The official constructors zero many tensors (head, injector outputs, AdaLN, cond encoder,
    cond mask), which would leave whole branches dead in a fixture.
    """
    g = torch.Generator().manual_seed(seed)
    sd = module.state_dict()
    with torch.no_grad():
        for key in sorted(sd):
            t = sd[key]
            if not t.is_floating_point():
                continue
            noise = torch.randn(t.shape, generator=g, dtype=torch.float32)
            is_scale = key.endswith("norm_q.weight") or key.endswith("norm_k.weight")
            is_scale = is_scale or (key.endswith(".weight") and t.ndim == 1)
            t.copy_(1 + 0.1 * noise if is_scale else 0.05 * noise)


def versions() -> dict[str, str]:
    out = {"torch": torch.__version__, "python": sys.version.split()[0]}
    for name in ("diffusers", "transformers", "numpy", "librosa"):
        with contextlib.suppress(ImportError):
            out[name] = importlib.import_module(name).__version__
    return out


def write(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    flat = {k: v.detach().contiguous().clone() for k, v in tensors.items()}
    strings = {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}
    save_file(flat, str(path), metadata=strings)
    size = path.stat().st_size / 1e6
    print(f"wrote {path} ({len(flat)} tensors, {size:.2f} MB)")


def weights(prefix: str, module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {f"{prefix}{k}": v for k, v in module.state_dict().items()}


def rope_real(freqs: torch.Tensor) -> torch.Tensor:
    """complex128 rope multipliers [L, heads, D/2] (same for every head) -> float64 [L, D/2, 2]."""
    return torch.view_as_real(freqs[:, 0]).contiguous()


# ----------------------------------------------------------------------------- components
def build_model(mods: dict[str, types.ModuleType], seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = mods["model_s2v"].WanModel_S2V(**TINY).eval()
    rerandomise(model, seed)
    return model


def model_inputs(g: torch.Generator, batch: int) -> dict[str, Any]:
    c = TINY["in_dim"]
    return {
        "x": torch.randn(batch, c, T_LAT, LAT_H, LAT_W, generator=g),
        "t": torch.tensor([600.0, 250.0][:batch]),
        "context": [torch.randn(n, TINY["text_dim"], generator=g) for n in (7, 12)[:batch]],
        "ref_latents": torch.randn(batch, c, 1, LAT_H, LAT_W, generator=g),
        "motion_latents": torch.randn(batch, c, MOTION_FRAMES[1], LAT_H, LAT_W, generator=g),
        "cond_states": torch.randn(batch, c, T_LAT, LAT_H, LAT_W, generator=g),
        "audio_input": torch.randn(batch, 25, TINY["audio_dim"], 4 * T_LAT, generator=g),
    }


def run_model(model: torch.nn.Module, inp: dict[str, Any], drop: bool) -> torch.Tensor:
    out = model(
        list(inp["x"]),
        t=inp["t"],
        context=inp["context"],
        seq_len=None,
        ref_latents=inp["ref_latents"],
        motion_latents=inp["motion_latents"],
        cond_states=inp["cond_states"],
        audio_input=inp["audio_input"],
        motion_frames=MOTION_FRAMES,
        add_last_motion=2,
        drop_motion_frames=drop,
    )
    return torch.stack(out)


def model_case(model: torch.nn.Module, g: torch.Generator, batch: int, drop: bool, tag: str):
    inp = model_inputs(g, batch)
    tensors = {f"in.{k}": v for k, v in inp.items() if k != "context"}
    for i, c in enumerate(inp["context"]):
        tensors[f"in.context.{i}"] = c
    tensors[f"out.{tag}"] = run_model(model, inp, drop)
    return {f"{tag}.{k}" if k.startswith("in.") else k: v for k, v in tensors.items()}


def audio_encoder_case(model: torch.nn.Module, g: torch.Generator) -> dict[str, torch.Tensor]:
    feats = torch.randn(2, 25, TINY["audio_dim"], 4 * T_LAT + MOTION_FRAMES[0], generator=g)
    glob, local = model.casual_audio_encoder(feats)
    return {"in.features": feats, "out.global": glob, "out.local": local}


def injector_case(model: torch.nn.Module, g: torch.Generator) -> dict[str, torch.Tensor]:
    """One injection after block 1 (injector 1): noisy tokens, then 40 extra (ref/motion) tokens."""
    b, dim = 2, TINY["dim"]
    n = T_LAT * (LAT_H // 2) * (LAT_W // 2)
    hidden = torch.randn(b, n + 40, dim, generator=g)
    local = torch.randn(b, T_LAT, TINY["num_audio_token"] + 1, dim, generator=g)
    glob = torch.randn(b, T_LAT, 1, dim, generator=g)
    model.merged_audio_emb = local
    model.audio_emb_global = glob
    model.original_seq_len = n
    out = model.after_transformer_block(1, hidden.clone())
    return {
        "in.hidden": hidden,
        "in.audio_local": local,
        "in.audio_global": glob,
        "out.hidden": out,
        "meta.block": torch.tensor(1),
        "meta.injector": torch.tensor(model.audio_injector.injected_block_id[1]),
    }


def framepack_case(model: torch.nn.Module, g: torch.Generator) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    # fewer latents than the 19 buckets (zero-padded at the front), exactly 19, and more than 19
    for tm in (5, 19, 23):
        lat = torch.randn(2, 16, tm, LAT_H, LAT_W, generator=g)
        out[f"in.motion.{tm}"] = lat
        for add_last in (0, 1, 2):
            toks, rope = model.frame_packer(list(lat), add_last)
            out[f"out.tokens.{tm}.{add_last}"] = torch.cat(toks)
            out[f"out.rope.{tm}.{add_last}"] = rope_real(rope[0][0])
    return out


def sampling_case(mods, model: torch.nn.Module, g: torch.Generator, steps: int, shift: float):
    """One clip of the official sampling loop: UniPC, CFG with the zero-audio unconditional branch."""
    inp = model_inputs(g, 1)
    neg = torch.randn(9, TINY["text_dim"], generator=g)
    noise = torch.randn(16, T_LAT, LAT_H, LAT_W, generator=g)
    guide = 4.5
    sch = mods["unipc"].FlowUniPCMultistepScheduler(
        num_train_timesteps=1000, shift=1, use_dynamic_shifting=False
    )
    sch.set_timesteps(steps, device="cpu", shift=shift)
    out: dict[str, torch.Tensor] = {"in.noise": noise, "in.neg_context": neg}
    out.update({f"in.{k}": v for k, v in inp.items() if k != "context"})
    out["in.context"] = inp["context"][0]
    out["out.timesteps"] = sch.timesteps.clone()
    for drop in (True, False):
        latent = noise.clone()
        common = {
            "seq_len": None,
            "ref_latents": inp["ref_latents"],
            "motion_latents": inp["motion_latents"],
            "cond_states": inp["cond_states"],
            "motion_frames": MOTION_FRAMES,
            "drop_motion_frames": drop,
        }
        sch = mods["unipc"].FlowUniPCMultistepScheduler(
            num_train_timesteps=1000, shift=1, use_dynamic_shifting=False
        )
        sch.set_timesteps(steps, device="cpu", shift=shift)
        for t in sch.timesteps:
            ts = torch.stack([t])
            cond = model(
                [latent], t=ts, context=inp["context"], audio_input=inp["audio_input"], **common
            )[0]
            uncond = model(
                [latent], t=ts, context=[neg], audio_input=0.0 * inp["audio_input"], **common
            )[0]
            v = uncond + guide * (cond - uncond)
            latent = sch.step(v.unsqueeze(0), t, latent.unsqueeze(0), return_dict=False)[0][0]
        out[f"out.latent.drop{int(drop)}"] = latent
    return out, {"steps": steps, "shift": shift, "guide_scale": guide}


def real_manifest(mods) -> tuple[dict[str, list[int]], dict[str, Any]]:
    """Key shapes and the config.json (diffusers ConfigMixin) of the official model at the real
    S2V-14B config, built on meta."""
    with torch.device("meta"):
        model = mods["model_s2v"].WanModel_S2V(**REAL)
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    return shapes, json.loads(model.to_json_string())


def audio_frontend_case(out_dir: Path, seed: int) -> None:
    """Tiny Wav2Vec2ForCTC saved locally, run through the official AudioEncoder."""
    import soundfile
    import transformers

    enc_mod = import_audio_encoder()
    torch.manual_seed(seed)
    cfg = transformers.Wav2Vec2Config(**TINY_WAV2VEC)
    w2v = transformers.Wav2Vec2ForCTC(cfg).eval()
    rerandomise(w2v, seed)
    g = torch.Generator().manual_seed(seed + 1)
    sr = 16000
    tensors: dict[str, torch.Tensor] = {}
    tensors.update(weights("w2v.", w2v))
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        w2v.save_pretrained(d)
        (d / "preprocessor_config.json").write_text(
            json.dumps(dict(FEATURE_EXTRACTOR, feature_extractor_type="Wav2Vec2FeatureExtractor"))
        )
        vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, "a": 5, "b": 6, "c": 7}
        (d / "vocab.json").write_text(json.dumps(vocab))
        (d / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False}))
        encoder = enc_mod.AudioEncoder(device="cpu", model_id=str(d))
        # 1.3 s of a voiced-like signal plus noise (not silence: do_normalize divides by the std)
        n = int(1.3 * sr)
        tt = torch.arange(n) / sr
        wave = 0.3 * torch.sin(2 * torch.pi * 180 * tt) * (1 + torch.sin(2 * torch.pi * 3 * tt))
        wave = (wave + 0.05 * torch.randn(n, generator=g)).float()
        wav_path = d / "speech.wav"
        soundfile.write(str(wav_path), wave.numpy(), sr, subtype="FLOAT")
        with torch.no_grad():
            z = encoder.extract_audio_feat(str(wav_path), return_all_layers=True)
            tensors["in.wave"] = wave
            tensors["out.feat30"] = z
            for frames in (12, 80):
                bucket, num = encoder.get_audio_embed_bucket_fps(
                    z, fps=16, batch_frames=frames, m=0
                )
                tensors[f"out.bucket.{frames}"] = bucket
                tensors[f"out.num_clips.{frames}"] = torch.tensor(num)
    meta = {
        "wav2vec2_config": TINY_WAV2VEC,
        "feature_extractor": FEATURE_EXTRACTOR,
        "official_commit": WAN22_COMMIT,
        "versions": versions(),
        "seed": seed,
    }
    write(out_dir / "audio_frontend.safetensors", tensors, meta)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--wan22", type=Path, required=True, help="export of Wan-Video/Wan2.2")
    ap.add_argument("--out", type=Path, default=Path("tests/fixtures/s2v"))
    ap.add_argument("--manifest", type=Path, default=Path("tests/keys/manifests/dit_s2v_14B.json"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--commit", default=WAN22_COMMIT, help="official commit the export was made from"
    )
    ap.add_argument("--skip-audio", action="store_true", help="no transformers 4 / librosa here")
    args = ap.parse_args()
    commit = args.commit
    mods = import_official(args.wan22)
    meta = {"config": TINY, "official_commit": commit, "versions": versions(), "seed": args.seed}
    model = build_model(mods, args.seed)
    sd = weights("weights.", model)

    def sub(prefix: str) -> dict[str, torch.Tensor]:
        return {k: v for k, v in sd.items() if k.startswith(f"weights.{prefix}")}

    g = torch.Generator().manual_seed(args.seed + 100)
    with torch.no_grad():
        enc = {**sub("casual_audio_encoder."), **audio_encoder_case(model, g)}
        write(args.out / "audio_encoder.safetensors", enc, meta)
        inj = {**sub("audio_injector."), **injector_case(model, g)}
        write(args.out / "injector.safetensors", inj, meta)
        pack = {**sub("frame_packer."), **framepack_case(model, g)}
        write(args.out / "framepack.safetensors", pack, meta)
        forward = {**sd}
        forward.update(model_case(model, g, 1, True, "first_clip"))
        forward.update(model_case(model, g, 1, False, "later_clip"))
        forward.update(model_case(model, g, 2, False, "batch2"))
        write(args.out / "forward.safetensors", forward, meta)
        samp, samp_meta = sampling_case(mods, model, g, steps=4, shift=3.0)
        # same model as forward.safetensors (its weights are not stored twice)
        samp_meta = dict(samp_meta, weights="forward.safetensors")
        write(args.out / "sampling.safetensors", samp, dict(meta, sampling=samp_meta))
    args.manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest, config = real_manifest(mods)
    args.manifest.write_text(json.dumps(manifest, indent=0, sort_keys=True) + "\n")
    print(f"wrote {args.manifest} ({len(manifest)} keys)")
    (args.out / "official_config_14B.json").write_text(json.dumps(config, indent=2) + "\n")
    if not args.skip_audio:
        audio_frontend_case(args.out, args.seed)


if __name__ == "__main__":
    main()
