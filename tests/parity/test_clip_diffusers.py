"""CLIP vision tower: openwan's encoder vs diffusers' use of transformers ``CLIPVisionModel``
(``hidden_states[-2]``) on the same random weights, loaded from both formats."""

import pytest
import torch
from transformers import CLIPVisionModel

from helpers.random_weights import randomize_, rel_err
from openwan.checkpoint.clip_format import hf_to_official, official_to_hf, vit_h14_config
from openwan.checkpoint.io import CheckpointError
from openwan.models.image import CLIP_MEAN, CLIP_STD, CLIPImageEncoder, preprocess

TINY = dict(
    hidden_size=160,  # 2 heads of the ViT-H/14 head width 80
    intermediate_size=96,
    num_hidden_layers=3,
    num_attention_heads=2,
    image_size=28,
    patch_size=14,
)


@pytest.fixture(scope="module")
def reference():
    torch.manual_seed(0)
    return randomize_(CLIPVisionModel(vit_h14_config(**TINY)), seed=3, scale=0.2).eval()


def official_file(reference, path):
    """The official file layout: the visual tower plus text-tower keys openwan must ignore."""
    sd = hf_to_official(reference.state_dict())
    sd["visual.head"] = torch.randn(160, 1024)
    sd["textual.token_embedding.weight"] = torch.randn(10, 8)
    sd["log_scale"] = torch.tensor(4.6)
    torch.save(sd, path)
    return path


def test_penultimate_block_matches_diffusers_in_both_formats(reference, tmp_path):
    pixels = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        want = reference(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]
    assert want.shape == (2, 5, 160)  # 2x2 patches + class token

    reference.save_pretrained(str(tmp_path / "image_encoder"))
    from_hf = CLIPImageEncoder.from_pretrained(tmp_path / "image_encoder")
    from_official = CLIPImageEncoder.from_pretrained(official_file(reference, tmp_path / "c.pth"))
    assert from_official.model.config.num_attention_heads == 2  # width / 80
    assert from_official.image_size == 28 and from_official.dim == 160
    with torch.no_grad():
        for enc in (from_hf, from_official):
            got = enc(pixels)
            assert rel_err(got, want) <= 1e-5, rel_err(got, want)
        # the output is not the last block nor the post-LayerNorm one
        last = reference(pixel_values=pixels).last_hidden_state
    assert rel_err(from_official(pixels), last) > 0.05


def test_key_round_trip_and_fused_qkv_order(reference):
    sd = reference.state_dict()
    official = hf_to_official(sd)
    assert official["visual.cls_embedding"].shape == (1, 1, 160)
    assert official["visual.pos_embedding"].shape == (1, 5, 160)
    qkv = official["visual.transformer.1.attn.to_qkv.weight"]
    assert torch.equal(qkv[160:320], sd["encoder.layers.1.self_attn.k_proj.weight"])
    back = official_to_hf(official)
    assert set(back) == set(sd) and all(torch.equal(back[k], sd[k]) for k in sd)


def test_a_file_without_visual_weights_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="no visual"):
        official_to_hf({"textual.x": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="unexpected key"):
        official_to_hf({"visual.transformer.0.attn.bogus": torch.zeros(1)})


def test_official_preprocessing():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 28, 28, generator=g) * 2 - 1
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    # at the model's own size the bicubic resize is the identity: only the normalisation acts
    assert torch.allclose(preprocess(x, 28), ((x + 1) / 2 - mean) / std, atol=1e-6)
    # any other size is resized straight to S x S (no crop): a left/right split image stays split
    half = torch.cat([-torch.ones(1, 3, 40, 30), torch.ones(1, 3, 40, 30)], dim=3)  # 60 wide
    out = preprocess(half, 28)
    assert out.shape == (1, 3, 28, 28)
    assert torch.allclose(out[..., :12], ((0 - mean) / std).expand(1, 3, 28, 12), atol=1e-5)
    assert torch.allclose(out[..., 16:], ((1 - mean) / std).expand(1, 3, 28, 12), atol=1e-5)
