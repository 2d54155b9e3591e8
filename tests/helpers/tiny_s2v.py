"""A tiny random Wan2.2-S2V checkpoint folder (official layout) and small media files."""

import contextlib
import shutil
from pathlib import Path

import numpy as np
import torch

from helpers.random_weights import randomize_
from helpers.tiny_ckpt import CAPTIONS
from openwan.checkpoint.s2v_format import save_s2v_dit
from openwan.checkpoint.t5_format import hf_to_official
from openwan.checkpoint.vae_format import save_vae
from openwan.configs.dit import DiTConfig
from openwan.configs.s2v import S2VConfig
from openwan.configs.vae import WAN21_VAE
from openwan.models.s2v import WanModelS2V
from openwan.models.text import tiny_umt5_config, train_tokenizer
from openwan.models.vae import WanVAE

S2V = S2VConfig(
    dit=DiTConfig(model_type="s2v", dim=64, ffn_dim=96, num_heads=2, num_layers=2, text_dim=32),
    audio_dim=32,
    audio_inject_layers=(0, 1),
)
VAE = WAN21_VAE.replace(dim=4, dec_dim=4)  # small: 73 history frames are re-encoded per clip
WAV2VEC = dict(
    vocab_size=8,
    hidden_size=32,
    num_hidden_layers=24,
    num_attention_heads=2,
    intermediate_size=48,
    conv_dim=[8] * 7,
    conv_bias=True,
    feat_extract_norm="layer",
    do_stable_layer_norm=True,
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=4,
)


def s2v_model() -> WanModelS2V:
    """The tiny S2V DiT with small random weights, in eval mode."""
    return randomize_(WanModelS2V(S2V).eval(), seed=3, scale=0.1)


def s2v_kwargs(seed: int, first: bool) -> tuple:
    """(x, the S2V forward's keyword inputs, a conditional and an unconditional text) for
    :func:`s2v_model`; ``first``: the first clip (no motion frames)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 16, 2, 8, 8, generator=g)
    kw = dict(
        ref_latents=torch.randn(1, 16, 1, 8, 8, generator=g),
        motion_latents=torch.randn(1, 16, 19, 8, 8, generator=g),
        cond_states=torch.zeros_like(x),
        audio_input=torch.randn(1, 25, 32, 8, generator=g),
        drop_motion_frames=first,
    )
    return x, kw, torch.randn(5, 32, generator=g), torch.randn(7, 32, generator=g)


def write_s2v_checkpoint(root: Path, seed: int = 0) -> Path:
    from transformers import (
        AutoTokenizer,
        UMT5EncoderModel,
        Wav2Vec2Config,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2ForCTC,
    )

    root.mkdir(parents=True, exist_ok=True)
    save_s2v_dit(randomize_(WanModelS2V(S2V), seed=seed), root)
    save_vae(randomize_(WanVAE(VAE), seed=seed + 1), root / "Wan2.1_VAE.pth", format="official")
    tok_dir = train_tokenizer(CAPTIONS, root / "tok", vocab_size=150)
    vocab = len(AutoTokenizer.from_pretrained(str(tok_dir)))
    t5 = randomize_(
        UMT5EncoderModel(tiny_umt5_config(vocab, d_model=32, num_heads=4, d_ff=48)),
        seed=seed + 2,
        scale=0.2,
    )
    torch.save(hf_to_official(t5.state_dict()), root / "models_t5_umt5-xxl-enc-bf16.pth")
    shutil.move(str(tok_dir), str(root / "google" / "umt5-xxl"))
    w2v_dir = root / "wav2vec2-large-xlsr-53-english"
    w2v = randomize_(Wav2Vec2ForCTC(Wav2Vec2Config(**WAV2VEC)), seed=seed + 3)
    w2v.save_pretrained(str(w2v_dir))
    Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True
    ).save_pretrained(str(w2v_dir))
    return root


def write_wav(path: Path, samples: np.ndarray, rate: int) -> Path:
    """int16 PCM wav; ``samples`` [n] (mono) or [channels, n] in [-1, 1]."""
    import av

    data = np.atleast_2d(samples)
    layout = {1: "mono", 2: "stereo"}.get(data.shape[0], f"{data.shape[0]}c")
    pcm = (np.clip(data, -1, 1) * 32767).astype(np.int16)
    with av.open(str(path), "w", format="wav") as c:
        stream = c.add_stream("pcm_s16le", rate=rate)
        stream.layout = layout
        frame = av.AudioFrame.from_ndarray(pcm.T.reshape(1, -1).copy(), format="s16", layout=layout)
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            c.mux(packet)
        for packet in stream.encode():
            c.mux(packet)
    return path


def speech_like(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    """A voiced tone with a syllable-rate envelope plus a little noise."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)
    return (0.3 * env * np.sin(2 * np.pi * 180 * t) + 0.02 * rng.standard_normal(t.size)).astype(
        np.float32
    )


class StopAfterFirstClip(Exception):
    """Raised by :func:`stop_after_first_clip`, an ``on_clip`` callback: an interrupted job."""


def stop_after_first_clip(r: int, n: int) -> None:
    if r == 0:
        raise StopAfterFirstClip


@contextlib.contextmanager
def counted_calls(module: torch.nn.Module):
    """A list that gets one item per forward call of ``module`` inside the block."""
    calls: list[int] = []
    hook = module.register_forward_hook(lambda *a: calls.append(1))
    try:
        yield calls
    finally:
        hook.remove()
