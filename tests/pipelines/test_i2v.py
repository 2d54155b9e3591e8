"""Wan2.1 I2V / FLF2V and Wan2.2 I2V-A14B on tiny random weights: the official sizing rule and
mask, and whole generations against diffusers' WanImageToVideoPipeline with identical noise."""

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from helpers.random_weights import rel_err
from helpers.tiny_ckpt import diffusers_model, official_unipc
from helpers.tiny_i2v import write_i2v_checkpoints
from openwan.configs.tasks import get_task
from openwan.io.video import MediaError
from openwan.models.image import preprocess
from openwan.pipelines import stages
from openwan.pipelines.i2v import WanFLF2V, WanI2V
from openwan.pipelines.image_cond import (
    i2v_output_size,
    image_to_pixels,
    known_frame_mask,
    match_frame,
    resize_frame,
)
from openwan.pipelines.request import GenerationRequest, RequestError

diffusers = pytest.importorskip("diffusers")


def test_output_size_follows_the_official_formula():
    # WAN_SPEC §7.2: a 1280x720 image at the 720P area gives 160x90 latents -> 1280x720
    assert i2v_output_size(1280, 720, 1280 * 720) == (1280, 720)
    assert i2v_output_size(720, 1280, 1280 * 720) == (720, 1280)
    # 1000x800 at 832*480: sqrt(399360*0.8) = 565.2 -> 70 latents (even) -> 560;
    # sqrt(399360/0.8) = 706.5 -> 88 -> 704
    assert i2v_output_size(1000, 800, 832 * 480) == (704, 560)
    # 4:3 at 832*480: sqrt(399360*0.75) = 547.3 -> 68 -> 544; sqrt(399360/0.75) = 729.7 -> 91 -> 90 -> 720
    assert i2v_output_size(640, 480, 832 * 480) == (720, 544)
    rng = np.random.default_rng(0)
    for _ in range(200):
        w, h = int(rng.integers(64, 3000)), int(rng.integers(64, 3000))
        area = int(rng.integers(64 * 64, 1280 * 720))
        ow, oh = i2v_output_size(w, h, area)
        assert ow % 16 == 0 and oh % 16 == 0 and ow * oh <= area
    with pytest.raises(ValueError, match="too small"):
        i2v_output_size(4000, 10, 32 * 32)


def test_resize_is_bicubic_without_crop_and_last_frame_matching_covers():
    x = torch.linspace(-1, 1, 3 * 20 * 40).reshape(3, 20, 40)
    assert resize_frame(x, (40, 20)) is x
    small = resize_frame(x, (20, 16))
    want = torch.nn.functional.interpolate(x[None], size=(16, 20), mode="bicubic")[0]
    assert torch.equal(small, want)
    half = torch.cat([-torch.ones(3, 30, 30), torch.ones(3, 30, 30)], dim=2)  # 60x30, split
    crop = match_frame(half, (30, 30))  # cover 30x30 = 60x30 itself, then the centre 30 columns
    assert crop.shape == (3, 30, 30)
    assert torch.equal(crop[:, :, :15], -torch.ones(3, 30, 15))
    assert torch.equal(crop[:, :, 15:], torch.ones(3, 30, 15))


def test_masks_of_i2v_flf2v_and_continuation():
    m = known_frame_mask(81, [0], (2, 3))
    assert m.shape == (4, 21, 2, 3)
    assert torch.all(m[:, 0] == 1) and torch.all(m[:, 1:] == 0)
    f = known_frame_mask(81, [0, 80], (2, 3))
    assert torch.all(f[:, 0] == 1) and torch.all(f[:, 1:20] == 0)
    assert torch.all(f[:3, 20] == 0) and torch.all(f[3, 20] == 1)
    c = known_frame_mask(9, range(5), (1, 1))  # 5 given frames fill latent frames 0 and 1
    assert c[:, :, 0, 0].tolist() == [[1, 1, 0], [1, 1, 0], [1, 1, 0], [1, 1, 0]]


@pytest.fixture(scope="module")
def i2v(tmp_path_factory):
    return write_i2v_checkpoints(tmp_path_factory.mktemp("i2v"), "i2v")


def _image(seed, w=48, h=32, mode="RGB"):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).convert(mode)


REQ = dict(
    prompt="a red circle", negative_prompt="blue", size=(48, 32), frame_num=5, steps=4,
    shift=3.0, guide_scale=4.0, solver="unipc", seed=9,
)  # fmt: skip


def _reference(root, steps, shift, **kw):
    from transformers import AutoTokenizer, CLIPVisionModel, UMT5EncoderModel

    parts = dict(
        tokenizer=AutoTokenizer.from_pretrained(str(root / "tokenizer")),
        text_encoder=UMT5EncoderModel.from_pretrained(str(root / "text_encoder")),
        transformer=diffusers_model(diffusers.WanTransformer3DModel, root / "transformer"),
        vae=diffusers_model(diffusers.AutoencoderKLWan, root / "vae"),
        scheduler=official_unipc(diffusers, steps, shift),
    )
    if (root / "image_encoder").is_dir():
        parts["image_encoder"] = CLIPVisionModel.from_pretrained(str(root / "image_encoder"))
        parts["image_processor"] = OfficialPreprocessing()
    return diffusers.WanImageToVideoPipeline(**parts, **kw)


def _decode(ref, latents):
    mean = torch.tensor(ref.vae.config.latents_mean).view(1, 16, 1, 1, 1)
    std = torch.tensor(ref.vae.config.latents_std).view(1, 16, 1, 1, 1)
    return ref.vae.decode(latents * std + mean).sample[0]


class OfficialPreprocessing:
    """Stands in for diffusers' CLIPImageProcessor (shortest-side resize + centre crop, unlike the
    official whole-image bicubic resize), so that diffusers' own CLIP call (hidden_states[-2])
    sees the official pixels."""

    def __call__(self, images, return_tensors="pt"):
        from transformers import BatchFeature

        images = images if isinstance(images, list) else [images]
        pixels = torch.cat([preprocess(image_to_pixels(im)[None], 32) for im in images])
        return BatchFeature({"pixel_values": pixels})


def test_i2v_matches_diffusers_from_both_formats(i2v):
    official, root = i2v
    image = _image(5)  # already at the output size (48x32 fits the area exactly)
    noise = stages.initial_noise((16, 2, 4, 6), seed=9, device=torch.device("cpu"))
    ref = _reference(root, 4, 3.0)
    with torch.no_grad():
        latents = ref(
            image=image, prompt="a red circle", negative_prompt="blue", height=32, width=48,
            num_frames=5, num_inference_steps=4, guidance_scale=4.0, latents=noise[None],
            output_type="latent",
        ).frames  # fmt: skip
        want = _decode(ref, latents)
    for folder in (official, root):
        pipe = WanI2V.from_pretrained(folder, device="cpu")
        got = pipe.generate(GenerationRequest(**REQ), image=image, noise=noise)
        assert got.request.size == (48, 32) and got.video.shape == (3, 5, 32, 48)
        assert rel_err(got.video, want) <= 1e-4, rel_err(got.video, want)


def test_model_sees_the_mask_image_latent_and_clip_tokens(i2v):
    official, _ = i2v
    pipe = WanI2V.from_pretrained(official, device="cpu")
    image = _image(6, w=60, h=40)  # resized to the area of 48x32: 48x32 (3:2 kept)
    seen = []
    forward = pipe.dit.forward

    def record(x, t, context, **kw):
        seen.append(kw)
        return forward(x, t, context, **kw)

    pipe.dit.forward = record
    try:
        result = pipe.generate(GenerationRequest(**{**REQ, "steps": 2}), image=image)
    finally:
        del pipe.dit.forward
    assert result.request.size == (48, 32)
    pixels = resize_frame(image_to_pixels(image), (48, 32))
    video = torch.cat([pixels[:, None], torch.zeros(3, 4, 32, 48)], dim=1)
    with torch.no_grad():
        latent = pipe.vae.encode(video[None])[0]
        tokens = pipe.clip.encode(image_to_pixels(image)[None])  # the image at its own size
    assert len(seen) == 4
    for kw in seen:
        y = kw["y"][0]
        assert y.shape == (20, 2, 4, 6)
        assert torch.all(y[:4, 0] == 1) and torch.all(y[:4, 1] == 0)
        assert torch.allclose(y[4:], latent, atol=1e-6)
        assert kw["clip_fea"].shape == (1, 257, 1280)
        assert torch.allclose(kw["clip_fea"], tokens, atol=1e-6)


def test_official_task_defaults():
    i2v = get_task("i2v-14B")
    assert (i2v.steps, i2v.shift, i2v.guide_scale, i2v.dit.in_dim) == (40, 5.0, 5.0, 36)
    assert i2v.negative_prompt.startswith("镜头晃动，色调艳丽")
    flf = get_task("flf2v-14B")
    assert (flf.steps, flf.shift, flf.dit.model_type) == (50, 16.0, "flf2v")
    assert flf.negative_prompt.startswith("镜头切换，镜头晃动，色调艳丽")
    a14 = get_task("i2v-A14B")
    assert (a14.steps, a14.shift, a14.guide_scale, a14.boundary) == (40, 5.0, (3.5, 3.5), 0.9)
    assert a14.is_moe and not a14.dit.has_image_embedding
    assert a14.negative_prompt.startswith("色调艳丽")


def test_480p_shift_default_and_bad_inputs(i2v, tmp_path):
    official, _ = i2v
    pipe = WanI2V.from_pretrained(official, device="cpu")
    custom, pipe.task = pipe.task, get_task("i2v-14B")  # the official defaults, tiny weights
    assert pipe.resolve(GenerationRequest(prompt="x", size=(832, 480))).shift == 3.0
    assert pipe.resolve(GenerationRequest(prompt="x", size=(480, 832))).shift == 3.0
    assert pipe.resolve(GenerationRequest(prompt="x", size=(1280, 720))).shift == 5.0
    assert pipe.resolve(GenerationRequest(prompt="x", size=(832, 480), shift=7.0)).shift == 7.0
    assert pipe.resolve(GenerationRequest(prompt="x")).steps == 40
    pipe.task = custom
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    req = GenerationRequest(**REQ)
    with pytest.raises(MediaError, match="cannot read image"):
        pipe.generate(req, image=bad)
    with pytest.raises(RequestError, match="flf2v-14B"):
        pipe.generate(req, image=_image(1), last_image=_image(2))


def test_rgba_and_grayscale_images_are_converted(i2v):
    official, _ = i2v
    pipe = WanI2V.from_pretrained(official, device="cpu")
    req = GenerationRequest(**{**REQ, "steps": 1})
    gray = _image(3, mode="L")
    a = pipe.generate(req, image=gray).video
    b = pipe.generate(req, image=gray.convert("RGB")).video
    assert torch.equal(a, b)
    assert pipe.generate(req, image=_image(3, mode="RGBA")).video.shape == (3, 5, 32, 48)


def test_flf2v_matches_diffusers_and_handles_a_last_frame_of_another_size(tmp_path, caplog):
    official, root = write_i2v_checkpoints(tmp_path, "flf2v")
    first, last = _image(7), _image(8)
    noise = stages.initial_noise((16, 3, 4, 6), seed=4, device=torch.device("cpu"))
    ref = _reference(root, 4, 3.0)
    with torch.no_grad():
        latents = ref(
            image=first, last_image=last, prompt="a red circle", negative_prompt="blue",
            height=32, width=48, num_frames=9, num_inference_steps=4, guidance_scale=4.0,
            latents=noise[None], output_type="latent",
        ).frames  # fmt: skip
        want = _decode(ref, latents)
    req = GenerationRequest(**{**REQ, "frame_num": 9})
    for folder in (official, root):
        pipe = WanFLF2V.from_pretrained(folder, device="cpu")
        got = pipe.generate(req, image=first, last_image=last, noise=noise).video
        assert rel_err(got, want) <= 1e-4, rel_err(got, want)
    # a last frame twice as large with extra columns: covered + centre-cropped back to 48x32
    wide = np.zeros((64, 128, 3), np.uint8)
    wide[:, 16:112] = np.asarray(last.resize((96, 64), Image.Resampling.NEAREST))
    with caplog.at_level("WARNING"):
        pipe.generate(req, image=first, last_image=Image.fromarray(wide), noise=noise)
    assert "centre-cropping" in caplog.text
    with pytest.raises(RequestError, match="needs a last frame"):
        pipe.generate(req, image=first)


def test_i2v_a14b_matches_diffusers(tmp_path):
    official, root = write_i2v_checkpoints(tmp_path, "a14b")
    image = _image(9)
    noise = stages.initial_noise((16, 2, 4, 6), seed=2, device=torch.device("cpu"))
    ref = _reference(
        root, 6, 3.0, boundary_ratio=0.9,
        transformer_2=diffusers_model(diffusers.WanTransformer3DModel, root / "transformer_2"),
    )  # fmt: skip
    with torch.no_grad():
        latents = ref(
            image=image, prompt="a red circle", negative_prompt="blue", height=32, width=48,
            num_frames=5, num_inference_steps=6, guidance_scale=4.0, guidance_scale_2=2.5,
            latents=noise[None], output_type="latent",
        ).frames  # fmt: skip
        want = _decode(ref, latents)
    req = GenerationRequest(**{**REQ, "steps": 6, "guide_scale": (2.5, 4.0)})  # (low, high)
    for folder in (official, root):
        pipe = WanI2V.from_pretrained(folder, device="cpu")
        assert pipe.clip is None and pipe.dit_high is not None
        pipe.task = dataclasses.replace(pipe.task, boundary=0.9)  # custom task: official I2V value
        got = pipe.generate(req, image=image, noise=noise).video
        assert rel_err(got, want) <= 1e-4, rel_err(got, want)


@pytest.mark.parametrize("frame_num,cond_frames", [(5, 1), (9, 5)])
def test_continuation_conditions_each_round_on_the_last_frames_so_far(i2v, frame_num, cond_frames):
    """What is guaranteed: round r+1 is conditioned (mask + VAE latent in y) on exactly the last
    ``cond_frames`` frames of the decoded video after round r, and the joined video keeps those
    frames (the new clip is appended without its conditioned part)."""
    official, _ = i2v
    pipe = WanI2V.from_pretrained(official, device="cpu")
    g = torch.Generator().manual_seed(0)
    start = torch.rand(3, 5, 32, 48, generator=g) * 2 - 1
    seen = []
    forward = pipe.dit.forward

    def record(x, t, context, **kw):
        if not any(kw["y"] is s for s in seen):
            seen.append(kw["y"])
        return forward(x, t, context, **kw)

    pipe.dit.forward = record
    try:
        req = GenerationRequest(**{**REQ, "frame_num": frame_num, "steps": 2})
        result = pipe.extend(req, start, num_rounds=3, cond_frames=cond_frames, blend=False)
    finally:
        del pipe.dit.forward
    step = frame_num - cond_frames
    video = result.video
    assert video.shape == (3, 5 + 3 * step, 32, 48)
    assert torch.equal(video[:, :5], start)
    assert len(seen) == 3  # one condition per round, shared by every call of that round
    lat_known = (cond_frames - 1) // 4 + 1  # latent frames whose 4 sub-frames are all given
    for r, y in enumerate(seen):
        end = 5 + r * step  # frames of the joined video before round r
        tail = video[:, end - cond_frames : end]
        cond = torch.cat([tail, torch.zeros(3, frame_num - cond_frames, 32, 48)], dim=1)
        with torch.no_grad():
            latent = pipe.vae.encode(cond[None])[0]
        assert torch.allclose(y[0, 4:], latent, atol=1e-5)
        assert torch.all(y[0, :4, :lat_known] == 1) and torch.all(y[0, :4, lat_known:] == 0)
    assert result.joints == tuple(5 + r * step for r in range(3))
    # the default blends the frames either side of each joint and nothing else
    blended = pipe.extend(req, start, num_rounds=3, cond_frames=cond_frames).video
    touched = {i for j in result.joints for i in (j - 1, j)}
    kept = [i for i in range(video.shape[1]) if i not in touched]
    assert torch.equal(blended[:, kept], video[:, kept])
    for j in result.joints:
        i = j - 1
        expect = 0.25 * video[:, i - 1] + 0.5 * video[:, i] + 0.25 * video[:, i + 1]
        assert torch.allclose(blended[:, i], expect, atol=1e-6)
    with pytest.raises(RequestError, match="cond_frames"):
        pipe.extend(req, start, cond_frames=frame_num)


def test_official_image_configs_are_recognised():
    from openwan.configs.tasks import infer_task

    for name, experts in (("i2v-14B", False), ("flf2v-14B", False), ("i2v-A14B", True)):
        spec = get_task(name)
        # the loader resolves image_embedding from the weights (True for Wan2.1 I2V/FLF2V)
        loaded = spec.dit.replace(image_embedding=spec.dit.has_image_embedding)
        assert infer_task(loaded, spec.vae, has_experts=experts).name == name
