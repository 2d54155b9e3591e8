"""Wan-VAE 2.1 and 2.2 against diffusers' AutoencoderKLWan in fp32 at tiny random-weight configs,
through both checkpoint formats. 9 frames, so the chunk caches are exercised."""

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from helpers.random_weights import randomize_, rel_err  # noqa: E402
from openwan.checkpoint.vae_format import (  # noqa: E402
    config_to_diffusers,
    diffusers_to_official,
    load_vae,
    official_to_diffusers,
    save_vae,
)
from openwan.configs.vae import WAN21_VAE, WAN22_VAE  # noqa: E402
from openwan.models.vae import WanVAE  # noqa: E402

CONFIGS = {
    "2.1": WAN21_VAE.replace(dim=8, dec_dim=8),
    "2.2": WAN22_VAE.replace(dim=8, dec_dim=12),
}


def _pair(cfg):
    # weights small enough that >95% of decoded values stay inside [-1, 1]: diffusers always clamps
    ours = randomize_(WanVAE(cfg), seed=0, scale=0.05).eval()
    kwargs = {k: v for k, v in config_to_diffusers(cfg).items() if not k.startswith("_")}
    kwargs.pop("clip_output", None)
    ref = diffusers.AutoencoderKLWan(**kwargs).eval()
    ref.load_state_dict(official_to_diffusers(ours.state_dict(), cfg), strict=True)
    return ours, ref


@pytest.mark.parametrize("version", ["2.1", "2.2"])
@pytest.mark.parametrize("fmt", ["official", "diffusers"])
def test_encode_decode_match_diffusers(tmp_path, version, fmt):
    cfg = CONFIGS[version]
    ours, ref = _pair(cfg)
    target = tmp_path / ("vae.pth" if fmt == "official" else "vae")
    save_vae(ours, target, format=fmt)
    vae = load_vae(target)
    assert vae.config == cfg
    s = cfg.stride[1]
    g = torch.Generator().manual_seed(1)
    video = torch.rand(1, 3, 9, 2 * s, 3 * s, generator=g) * 2 - 1
    with torch.no_grad():
        z = vae.encode(video)
        mean = torch.tensor(cfg.latent_mean).view(1, -1, 1, 1, 1)
        std = torch.tensor(cfg.latent_std).view(1, -1, 1, 1, 1)
        z_ref = (ref.encode(video).latent_dist.mean - mean) / std
        assert z.shape == (1, cfg.z_dim, 3, 2, 3)
        assert rel_err(z, z_ref) < 1e-5
        latent = torch.randn(z.shape, generator=g)
        out = vae.decode(latent)
        out_ref = ref.decode(latent * std + mean).sample
    assert out.shape == (1, 3, 9, 2 * s, 3 * s)
    assert (out.abs() < 1).float().mean() > 0.95  # the comparison is not hidden by the clamp
    assert rel_err(out, out_ref) < 1e-5


@pytest.mark.parametrize("version", ["2.1", "2.2"])
def test_key_adapter_round_trip(version):
    cfg = CONFIGS[version]
    sd = WanVAE(cfg).state_dict()
    conv = official_to_diffusers(sd, cfg)
    assert "quant_conv.weight" in conv and "decoder.mid_block.attentions.0.to_qkv.weight" in conv
    back = diffusers_to_official(conv, cfg)
    assert back.keys() == sd.keys()


def test_chunked_decode_is_causal():
    # frames decoded from the first latents do not depend on later latents
    cfg = CONFIGS["2.1"]
    vae = randomize_(WanVAE(cfg), seed=2, scale=0.05).eval()
    z = torch.randn(1, 16, 3, 2, 2)
    z2 = z.clone()
    z2[:, :, 2] += 1.0
    with torch.no_grad():
        a, b = vae.decode(z, clamp=False), vae.decode(z2, clamp=False)
    assert torch.allclose(a[:, :, :5], b[:, :, :5], atol=1e-6)
    assert not torch.allclose(a[:, :, 5:], b[:, :, 5:], atol=1e-3)


def test_backward_through_encode_and_decode():
    vae = randomize_(
        WanVAE(CONFIGS["2.1"].replace(dim_mult=(1, 2, 4), temperal_downsample=(True, True)))
    )
    assert vae.config.stride == (4, 4, 4)
    x = torch.rand(1, 3, 5, 8, 8) * 2 - 1
    mu, logvar = vae.encode_moments(x)
    assert mu.shape == (1, 16, 2, 2, 2)
    loss = (vae.decode(mu, clamp=False, normalized=False) - x).abs().mean() + logvar.mean()
    loss.backward()
    assert vae.encoder.conv1.weight.grad is not None and vae.decoder.head[2].weight.grad is not None


def test_bad_inputs():
    vae = WanVAE(CONFIGS["2.1"])
    with pytest.raises(ValueError, match="4n\\+1"):
        vae.encode(torch.zeros(1, 3, 6, 16, 16))
    with pytest.raises(ValueError, match="divisible by the VAE stride 8"):
        vae.encode(torch.zeros(1, 3, 5, 20, 16))
    with pytest.raises(ValueError, match="latent"):
        vae.decode(torch.zeros(1, 4, 2, 2, 2))
