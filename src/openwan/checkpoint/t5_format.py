"""umT5 encoder key layouts: the official ``models_t5_umt5-xxl-enc-bf16.pth`` <-> transformers
``UMT5EncoderModel`` (WAN_SPEC §4)."""

from __future__ import annotations

import re

import torch

from openwan.checkpoint.io import CheckpointError

# official per-block suffix -> transformers suffix under ``encoder.block.{i}.``
_BLOCK_MAP = {
    "norm1.weight": "layer.0.layer_norm.weight",
    "attn.q.weight": "layer.0.SelfAttention.q.weight",
    "attn.k.weight": "layer.0.SelfAttention.k.weight",
    "attn.v.weight": "layer.0.SelfAttention.v.weight",
    "attn.o.weight": "layer.0.SelfAttention.o.weight",
    "pos_embedding.embedding.weight": "layer.0.SelfAttention.relative_attention_bias.weight",
    "norm2.weight": "layer.1.layer_norm.weight",
    "ffn.gate.0.weight": "layer.1.DenseReluDense.wi_0.weight",
    "ffn.fc1.weight": "layer.1.DenseReluDense.wi_1.weight",
    "ffn.fc2.weight": "layer.1.DenseReluDense.wo.weight",
}
_BLOCK_MAP_INV = {v: k for k, v in _BLOCK_MAP.items()}
_OFFICIAL_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")
_HF_BLOCK = re.compile(r"^encoder\.block\.(\d+)\.(.+)$")


def official_to_hf(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official keys -> ``UMT5EncoderModel`` keys (the tied input embedding under both names)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key == "token_embedding.weight":
            out["shared.weight"] = value
            out["encoder.embed_tokens.weight"] = value
        elif key == "norm.weight":
            out["encoder.final_layer_norm.weight"] = value
        elif (m := _OFFICIAL_BLOCK.match(key)) and m.group(2) in _BLOCK_MAP:
            out[f"encoder.block.{m.group(1)}.{_BLOCK_MAP[m.group(2)]}"] = value
        else:
            raise CheckpointError(f"unexpected key in umT5 checkpoint: {key}")
    return out


def hf_to_official(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key in ("shared.weight", "encoder.embed_tokens.weight"):
            out["token_embedding.weight"] = value
        elif key == "encoder.final_layer_norm.weight":
            out["norm.weight"] = value
        elif (m := _HF_BLOCK.match(key)) and m.group(2) in _BLOCK_MAP_INV:
            out[f"blocks.{m.group(1)}.{_BLOCK_MAP_INV[m.group(2)]}"] = value
        else:
            raise CheckpointError(f"unexpected key in UMT5EncoderModel state dict: {key}")
    return out


def umt5_config_from_official(sd: dict[str, torch.Tensor]):  # -> transformers.UMT5Config
    """Infer the encoder config from tensor shapes of an official state dict."""
    try:
        vocab, d_model = sd["token_embedding.weight"].shape
        num_layers = 1 + max(int(m.group(1)) for k in sd if (m := _OFFICIAL_BLOCK.match(k)))
        buckets, heads = sd["blocks.0.pos_embedding.embedding.weight"].shape
        inner = sd["blocks.0.attn.q.weight"].shape[0]
        d_ff = sd["blocks.0.ffn.fc1.weight"].shape[0]
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"not an official umT5 encoder state dict (missing {e})") from None
    return umt5_config(
        vocab_size=int(vocab),
        d_model=int(d_model),
        d_kv=int(inner) // int(heads),
        d_ff=int(d_ff),
        num_layers=int(num_layers),
        num_heads=int(heads),
        buckets=int(buckets),
    )


def umt5_config(
    *,
    vocab_size: int,
    d_model: int,
    d_kv: int,
    d_ff: int,
    num_layers: int,
    num_heads: int,
    buckets: int = 32,
):  # -> transformers.UMT5Config
    """An encoder config with the umT5 conventions Wan uses (WAN_SPEC §4)."""
    from transformers import UMT5Config

    return UMT5Config(
        vocab_size=vocab_size,
        d_model=d_model,
        d_kv=d_kv,
        d_ff=d_ff,
        num_layers=num_layers,
        num_heads=num_heads,
        relative_attention_num_buckets=buckets,
        relative_attention_max_distance=128,
        feed_forward_proj="gated-gelu",  # gelu_new = tanh approximation, as the official FFN
        layer_norm_epsilon=1e-6,
        dropout_rate=0.0,
        is_encoder_decoder=False,
        use_cache=False,
        tie_word_embeddings=False,
        pad_token_id=0,
        eos_token_id=1,
    )
