"""umT5 text encoder: an independent reference written from the spec formulas (WAN_SPEC §4),
fed the official key layout, against openwan's transformers-based encoder."""

import math

import pytest
import torch
import torch.nn.functional as F

from openwan.checkpoint.io import CheckpointError
from openwan.checkpoint.t5_format import hf_to_official, official_to_hf
from openwan.models.text import T5TextEncoder, clean_prompt, train_tokenizer

CORPUS = [
    "a red circle moving from left to right on a black background",
    "a blue square moving up on a gray background",
    "a green triangle growing on a navy background",
    "红色的圆形在黑色背景上从左向右移动",
    "蓝色的正方形在灰色背景上向上移动",
] * 4


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    return train_tokenizer(CORPUS, tmp_path_factory.mktemp("tok"), vocab_size=120)


def random_official_sd(vocab, d=32, heads=4, d_ff=48, layers=2, seed=0):
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=0.2):
        return torch.randn(*shape, generator=g) * scale

    sd = {"token_embedding.weight": r(vocab, d, scale=1.0), "norm.weight": 1 + r(d, scale=0.1)}
    for i in range(layers):
        p = f"blocks.{i}."
        sd[p + "norm1.weight"] = 1 + r(d, scale=0.1)
        sd[p + "norm2.weight"] = 1 + r(d, scale=0.1)
        for n in "qkvo":
            sd[p + f"attn.{n}.weight"] = r(d, d)
        sd[p + "pos_embedding.embedding.weight"] = r(32, heads, scale=1.0)
        sd[p + "ffn.gate.0.weight"] = r(d_ff, d)
        sd[p + "ffn.fc1.weight"] = r(d_ff, d)
        sd[p + "ffn.fc2.weight"] = r(d, d_ff)
    return sd


def rel_bucket(rel):
    # bidirectional: 16 buckets per direction, exact below 8, log-spaced up to distance 128
    bucket = (rel > 0).long() * 16
    a = rel.abs()
    large = 8 + (torch.log(a.float().clamp(min=1) / 8) / math.log(128 / 8) * 8).long()
    large = large.clamp(max=15)
    return bucket + torch.where(a < 8, a, large)


def reference_encoder(sd, ids, mask, heads=4, layers=2, eps=1e-6):
    def rms(x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w

    x = sd["token_embedding.weight"][ids]  # [B, L, d]
    b, length, d = x.shape
    pos = torch.arange(length)
    buckets = rel_bucket(pos[None, :] - pos[:, None])  # key - query
    key_mask = torch.where(mask[:, None, None, :].bool(), 0.0, torch.finfo(x.dtype).min)
    for i in range(layers):
        p = f"blocks.{i}."
        h = rms(x, sd[p + "norm1.weight"])
        q, k, v = (
            (h @ sd[p + f"attn.{n}.weight"].T).view(b, length, heads, -1).transpose(1, 2)
            for n in "qkv"
        )
        bias = sd[p + "pos_embedding.embedding.weight"][buckets].permute(2, 0, 1)  # [H, L, L]
        logits = q @ k.transpose(-1, -2) + bias[None] + key_mask  # no 1/sqrt(d) scaling
        attn = (logits.softmax(-1) @ v).transpose(1, 2).reshape(b, length, d)
        x = x + attn @ sd[p + "attn.o.weight"].T
        h = rms(x, sd[p + "norm2.weight"])
        gate = F.gelu(h @ sd[p + "ffn.gate.0.weight"].T, approximate="tanh")
        x = x + ((h @ sd[p + "ffn.fc1.weight"].T) * gate) @ sd[p + "ffn.fc2.weight"].T
    return rms(x, sd["norm.weight"])


def make_official_dir(tmp_path, tokenizer_dir):
    import shutil

    from transformers import AutoTokenizer

    vocab = len(AutoTokenizer.from_pretrained(str(tokenizer_dir)))
    sd = random_official_sd(vocab)
    torch.save(sd, tmp_path / "models_t5_umt5-xxl-enc-bf16.pth")
    shutil.copytree(tokenizer_dir, tmp_path / "google" / "umt5-xxl")
    return sd


def test_encoder_matches_spec_reference(tmp_path, tokenizer_dir):
    sd = make_official_dir(tmp_path, tokenizer_dir)
    enc = T5TextEncoder.from_pretrained(tmp_path, text_len=24)
    prompts = ["a red circle moving from left to right", "蓝色的正方形"]
    out = enc.encode(prompts)
    ids, mask = enc.tokenize(prompts)
    ref = reference_encoder(sd, ids, mask)
    assert [o.shape[0] for o in out] == mask.sum(1).tolist()
    assert out[0].shape[0] != out[1].shape[0]  # different lengths: masking matters
    for o, r, n in zip(out, ref, mask.sum(1).tolist()):
        assert (o - r[:n]).norm() / r[:n].norm() < 1e-5
    # an EOS token ends every prompt
    assert ids[0, mask[0].sum() - 1] == enc.tokenizer.eos_token_id == 1


def test_diffusers_layout_gives_the_same_features(tmp_path, tokenizer_dir):
    import shutil

    official = tmp_path / "official"
    official.mkdir()
    make_official_dir(official, tokenizer_dir)
    enc = T5TextEncoder.from_pretrained(official, text_len=24)
    diff = tmp_path / "diffusers"
    enc.model.save_pretrained(str(diff / "text_encoder"))
    shutil.copytree(tokenizer_dir, diff / "tokenizer")
    enc2 = T5TextEncoder.from_pretrained(diff, text_len=24)
    a, b = enc.encode(["a green triangle"])[0], enc2.encode(["a green triangle"])[0]
    assert torch.equal(a, b)


def test_key_adapter_round_trip():
    sd = random_official_sd(50)
    hf = official_to_hf(sd)
    assert hf["shared.weight"] is hf["encoder.embed_tokens.weight"]
    assert "encoder.block.1.layer.1.DenseReluDense.wi_0.weight" in hf
    back = hf_to_official(hf)
    assert back.keys() == sd.keys() and all(torch.equal(back[k], sd[k]) for k in sd)
    with pytest.raises(CheckpointError, match="unexpected key"):
        official_to_hf({**sd, "blocks.0.attn.bias": torch.zeros(1)})


def test_clean_prompt():
    assert clean_prompt("  a &amp;amp; b\n\t c  ") == "a & b c"
    assert clean_prompt("caf\u00c3\u00a9") == "café"  # mojibake repaired by ftfy


def test_tokenizer_handles_chinese_and_unknown_characters(tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    ids = tok("红色的圆形 😀 ÿ")["input_ids"]
    assert ids[-1] == 1 and 2 in ids  # EOS last; unseen characters become <unk>, no crash
    assert tok.decode(tok("a red circle")["input_ids"], skip_special_tokens=True) == "a red circle"


def test_count_tokens_and_missing_folder(tmp_path, tokenizer_dir):
    make_official_dir(tmp_path, tokenizer_dir)
    enc = T5TextEncoder.from_pretrained(tmp_path, text_len=8)
    long = "a red circle moving from left to right on a black background"
    assert enc.count_tokens(long) > 8
    assert enc.encode([long])[0].shape[0] == 8  # truncated like the official tokenizer call
    with pytest.raises(CheckpointError, match="no text encoder"):
        T5TextEncoder.from_pretrained(tmp_path / "nothing")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_streamed_encoder_reads_blocks_from_the_file_and_gives_the_same_features(
    tmp_path, tokenizer_dir, dtype
):
    import shutil

    official = tmp_path / "official"
    official.mkdir()
    make_official_dir(official, tokenizer_dir)
    resident = T5TextEncoder.from_pretrained(official, text_len=24, dtype=dtype)
    diff = tmp_path / "diffusers"
    resident.model.save_pretrained(str(diff / "text_encoder"))
    shutil.copytree(tokenizer_dir, diff / "tokenizer")
    prompts = ["a red circle moving from left to right", "蓝色的正方形"]
    want = resident.encode(prompts)
    for folder in (official, diff):
        enc = T5TextEncoder.from_pretrained(folder, text_len=24, dtype=dtype, stream=True)
        assert enc.streamed and not resident.streamed
        blocks = enc.model.encoder.block
        assert all(p.is_meta for p in blocks.parameters())  # nothing read yet
        enc.to("cpu")  # a no-op, not an error on the meta weights
        got = enc.encode(prompts)
        assert all(torch.equal(a, b) and a.dtype == dtype for a, b in zip(want, got))
        assert all(p.is_meta for p in blocks.parameters())  # each block dropped after use
        assert got[0].shape[0] != got[1].shape[0]


def test_streamed_encoder_refuses_a_block_missing_a_weight_before_any_encode(
    tmp_path, tokenizer_dir
):
    from openwan.checkpoint.io import CheckpointError

    sd = make_official_dir(tmp_path, tokenizer_dir)
    torch.save(
        {k: v for k, v in sd.items() if k != "blocks.1.ffn.fc2.weight"},
        tmp_path / "models_t5_umt5-xxl-enc-bf16.pth",
    )
    with pytest.raises(CheckpointError, match="umT5 encoder layout"):
        T5TextEncoder.from_pretrained(tmp_path, text_len=24, stream=True)
