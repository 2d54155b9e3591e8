"""First-frame latent conditioning (Wan2.2 TI2V): sizing rule, image fitting, and what the model
sees at every step of a real (tiny, random-weight) generation."""

import numpy as np
import pytest
import torch
from PIL import Image

from helpers.tiny_ckpt import write_checkpoints
from openwan.io.video import MediaError
from openwan.pipelines.image_cond import best_output_size, fit_image, load_image
from openwan.pipelines.request import GenerationRequest
from openwan.pipelines.t2v import WanT2V


def test_best_output_size_follows_the_official_rule():
    # 1280x720 image, TI2V-5B steps of 32 px, area 1280*704:
    # width-first gives 1248x704 (ratio 1.773), height-first 1280x704 (1.818); the first is
    # closer to 16:9, so it wins
    assert best_output_size(1280, 720, 32, 32, 1280 * 704) == (1248, 704)
    # a square image in a square area keeps it exactly
    assert best_output_size(500, 500, 16, 16, 256 * 256) == (256, 256)
    rng = np.random.default_rng(0)
    for _ in range(200):
        h = int(rng.integers(64, 2000))
        w = int(h * rng.uniform(0.3, 3.0))  # aspect ratios up to 1:3.3 / 3:1
        dw, dh = 16 * int(rng.integers(1, 3)), 16 * int(rng.integers(1, 3))
        area = int(rng.integers(64 * 64, 1280 * 720))
        ow, oh = best_output_size(w, h, dw, dh, area)
        assert ow % dw == 0 and oh % dh == 0 and 0 < ow * oh <= area
    with pytest.raises(ValueError, match="too small"):
        best_output_size(4000, 10, 32, 32, 32 * 32)


def test_fit_image_covers_then_centre_crops():
    pixels = np.zeros((20, 60, 3), np.uint8)
    pixels[:, 20:40] = 255  # only the middle third is white
    t = fit_image(Image.fromarray(pixels), (10, 10))
    assert t.shape == (3, 1, 10, 10)
    assert t[:, 0, :, 2:8].min() > 0.95  # the crop is the white middle (edges: Lanczos ringing)
    assert t.min() >= -1.2 and t.max() <= 1.2


def test_unreadable_image_is_a_clear_error(tmp_path):
    with pytest.raises(MediaError, match="not found"):
        load_image(tmp_path / "nope.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(MediaError, match="cannot read image"):
        load_image(bad)


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    official, _ = write_checkpoints(tmp_path_factory.mktemp("ckpt"))
    return WanT2V.from_pretrained(official, device="cpu")


def test_generation_keeps_the_image_latent_and_gives_its_tokens_t0(pipe):
    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 255, (30, 60, 3), dtype=np.uint8))  # 2:1
    seen = []
    forward = pipe.dit.forward

    def record(x, t, context, **kw):
        seen.append((x.clone(), t.clone()))
        return forward(x, t, context, **kw)

    pipe.dit.forward = record
    try:
        req = GenerationRequest(
            prompt="a red circle", size=(32, 32), frame_num=5, steps=3, guide_scale=2.0, seed=3
        )
        result = pipe.generate(req, image=image)
    finally:
        del pipe.dit.forward
    # area 32*32 in 16 px steps at 2:1: width first 45.3 -> 32, 1024/32 = 32 -> 32x32 (ratio 1);
    # height first 22.6 -> 16, 1024/16 = 64 -> 64x16 (ratio 4); |log| distances tie at 2x, so
    # the official rule picks the height-first candidate
    w, h = best_output_size(60, 30, 16, 16, 32 * 32)
    assert (w, h) == (64, 16)
    assert result.request.size == (w, h) and result.video.shape == (3, 5, h, w)
    with torch.no_grad():
        z0 = pipe.vae.encode(fit_image(image, (w, h)).unsqueeze(0))[0]
    per_frame = (h // 16) * (w // 16)  # latent stride 8, patch 2
    assert len(seen) == 6  # 3 steps x (cond, uncond)
    for x, t in seen:
        assert torch.equal(x[0, :, :1], z0)  # the clean image latent at every call
        assert t.shape == (1, x.shape[2] * per_frame)
        assert torch.all(t[0, :per_frame] == 0) and torch.all(t[0, per_frame:] == t[0, -1])
        assert float(t[0, -1]) > 0
    # the decoded first frame is the image's own reconstruction
    with torch.no_grad():
        first = pipe.vae.decode(z0.unsqueeze(0))[0, :, 0]
    assert torch.allclose(result.video[:, 0], first, atol=1e-5)


def test_models_with_extra_input_channels_refuse_first_frame_conditioning(pipe, monkeypatch):
    import dataclasses

    monkeypatch.setattr(pipe.dit, "config", dataclasses.replace(pipe.dit.config, in_dim=36))
    req = GenerationRequest(prompt="x", size=(32, 32), frame_num=5, steps=1, seed=0)
    with pytest.raises(ValueError, match="extra input channels"):
        pipe.generate(req, image=Image.new("RGB", (32, 32)))


def test_matches_diffusers_ti2v_pipeline(tmp_path):
    """diffusers' WanImageToVideoPipeline with expand_timesteps (its Wan2.2 TI2V-5B mode) on the
    same weights, image, noise and sigma table. diffusers re-imposes the image latent only on
    the model input while openwan (like the official code) also resets the solver state; the
    solvers act elementwise, so both give the same video."""
    diffusers = pytest.importorskip("diffusers")
    from transformers import AutoTokenizer, UMT5EncoderModel

    from helpers.random_weights import rel_err
    from helpers.tiny_ckpt import diffusers_model, official_unipc
    from openwan.pipelines import stages

    official, root = write_checkpoints(tmp_path)
    pipe = WanT2V.from_pretrained(official, device="cpu")
    rng = np.random.default_rng(5)
    image = Image.fromarray(rng.integers(0, 255, (32, 48, 3), dtype=np.uint8))  # exact size
    noise = stages.initial_noise((16, 2, 4, 6), seed=9, device=torch.device("cpu"))
    req = GenerationRequest(
        prompt="a red circle", negative_prompt="blue", size=(48, 32), frame_num=5, steps=4,
        shift=3.0, guide_scale=4.0, solver="unipc", seed=9,
    )  # fmt: skip
    ours = pipe.generate(req, image=image, noise=noise).video

    ref = diffusers.WanImageToVideoPipeline(
        tokenizer=AutoTokenizer.from_pretrained(str(root / "tokenizer")),
        text_encoder=UMT5EncoderModel.from_pretrained(str(root / "text_encoder")),
        transformer=diffusers_model(diffusers.WanTransformer3DModel, root / "transformer"),
        vae=diffusers_model(diffusers.AutoencoderKLWan, root / "vae"),
        scheduler=official_unipc(diffusers, 4, 3.0),
        expand_timesteps=True,
    )
    with torch.no_grad():
        latents = ref(
            image=image, prompt="a red circle", negative_prompt="blue", height=32, width=48,
            num_frames=5, num_inference_steps=4, guidance_scale=4.0, latents=noise[None],
            output_type="latent",
        ).frames  # fmt: skip
        mean = torch.tensor(ref.vae.config.latents_mean).view(1, 16, 1, 1, 1)
        std = torch.tensor(ref.vae.config.latents_std).view(1, 16, 1, 1, 1)
        video_ref = ref.vae.decode(latents * std + mean).sample[0]
    assert rel_err(ours, video_ref) < 1e-4
