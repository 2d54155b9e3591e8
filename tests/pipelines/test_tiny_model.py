"""The embedded wan-tiny model: loads with no download, generates, and matches its registered task."""

import pytest
import torch

from openwan.assets import tiny_model_dir
from openwan.configs.tasks import TINY_DIT, TINY_VAE, get_task
from openwan.pipelines.t2v import WanT2V


@pytest.fixture(scope="module")
def pipe():
    return WanT2V.from_pretrained()


def test_embedded_model_is_the_registered_architecture(pipe):
    assert pipe.task.name == "t2v-tiny"
    assert pipe.dit.config == TINY_DIT
    shipped = pipe.vae.config
    assert (
        shipped.replace(latent_mean=TINY_VAE.latent_mean, latent_std=TINY_VAE.latent_std)
        == TINY_VAE
    )
    assert shipped.latent_std != TINY_VAE.latent_std  # measured statistics were written at export
    assert (tiny_model_dir() / "tokenizer").is_dir()
    total = sum(p.stat().st_size for p in tiny_model_dir().rglob("*") if p.is_file())
    assert total < 30 * 2**20


def test_generation_is_deterministic_in_the_seed(pipe):
    a = pipe("a red circle moving from left to right on a black background", steps=4, seed=1)
    b = pipe("a red circle moving from left to right on a black background", steps=4, seed=1)
    c = pipe("a red circle moving from left to right on a black background", steps=4, seed=2)
    assert a.shape == (3, 17, 64, 64)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert float(a.min()) >= -1 and float(a.max()) <= 1


def test_text_to_image_and_chinese_prompts(pipe):
    img = pipe("红色的圆形在黑色背景上从左向右移动", frame_num=1, steps=3, seed=0)
    assert img.shape == (3, 1, 64, 64)


def test_tiny_task_limits(pipe):
    spec = get_task("t2v-tiny")
    assert spec.text_len == pipe.text_encoder.text_len == 48
    with pytest.raises(ValueError, match="the limit is 48"):
        pipe("red circle " * 40, steps=1)
    with pytest.raises(ValueError, match="multiples of 8"):
        pipe("a red circle", size=(60, 64), steps=1)


def test_shipped_vae_reconstructs_held_out_clips(pipe):
    from openwan.data.shapes import ShapesWorld, to_tensor

    world = ShapesWorld(seed=11, frames=17, size=64, split="heldout")
    video = torch.stack([to_tensor(world[i][0]) for i in range(4)])
    with torch.no_grad():
        recon = pipe.vae.decode(pipe.vae.encode(video))
    psnr = -10 * torch.log10(((recon - video) / 2).pow(2).mean(dim=(1, 2, 3, 4)))
    # these 4 clips: 31.92 dB (31.65 with the stage-2 decoder shipped before); on 32 / 64 held-out
    # clips 32.22 / 32.17 dB (28.6 before any decoder fine-tune; the aim: 32)
    assert float(psnr.mean()) > 31.8


def test_shapesbench_on_a_few_english_prompts(pipe):
    from openwan.eval.shapesbench import run_shapesbench
    from openwan.io.video import to_uint8_frames

    report = run_shapesbench(
        lambda prompt, seed: to_uint8_frames(pipe(prompt, seed=seed)),
        n_prompts_per_split=2,
        languages=("en",),
    )
    g = report["groups"]["all"]
    # measured on 18 EN prompts: colour 1.00, background 1.00 (chance: 1/8 and 1/3)
    assert g["color"] >= 0.75 and g["background"] >= 0.75, g


def test_embedded_i2v_model_starts_from_the_given_frame():
    from PIL import Image

    from openwan.configs.tasks import TINY_I2V_DIT
    from openwan.data import shapes
    from openwan.eval.metrics import psnr
    from openwan.pipelines.i2v import WanI2V

    i2v = WanI2V.from_pretrained()  # the embedded tiny I2V DiT, sharing wan-tiny's VAE and umT5
    assert i2v.task.name == "i2v-tiny" and i2v.dit.config == TINY_I2V_DIT and i2v.clip is None
    frames = {
        name: shapes.render(shapes.Scene(color, shape, "static", bg, x0=x, y0=0.5, radius=0.15))[0]
        for name, color, shape, bg, x in (
            ("a", "red", "circle", "black", 0.35),
            ("b", "cyan", "square", "gray", 0.65),
        )
    }

    out = i2v("a red circle staying still on a black background",
              image=Image.fromarray(frames["a"]), seed=0)  # fmt: skip
    assert out.shape == (3, 17, 64, 64)
    first = out[:, :1]
    own, other = (psnr(first, shapes.to_tensor(frames[k][None])) for k in ("a", "b"))
    assert own > 20.0 and own > other + 8.0, (own, other)  # measured: 35.5 dB mean on 36 prompts
    # the task pins the first latent frame to the image's: the decoded first frame is the VAE's
    # own reconstruction of the image (the causal decoder's frame 0 reads latent frame 0 alone)
    assert i2v.anchor_frames
    image = shapes.to_tensor(frames["a"][None])
    with torch.no_grad():
        recon = i2v.vae.decode(i2v.vae.encode(image[None]))[0]
    assert torch.allclose(first, recon, atol=1e-5)
    i2v.anchor_frames = False  # the official behaviour: the model redraws the first frame
    free = i2v("a red circle staying still on a black background",
               image=Image.fromarray(frames["a"]), seed=0, steps=10)  # fmt: skip
    assert (free[:, :1] - recon).abs().max() > 1e-2


def test_embedded_i2v_model_moves_the_shape_as_the_prompt_says():
    from PIL import Image

    from openwan.data import shapes
    from openwan.eval.shapesbench import analyze
    from openwan.io.video import to_uint8_frames
    from openwan.pipelines.i2v import WanI2V

    i2v = WanI2V.from_pretrained()
    got = []
    for motion, color, shape, bg in (
        ("right", "red", "circle", "black"),
        ("left", "yellow", "square", "navy"),
        ("up", "green", "triangle", "gray"),
        ("down", "cyan", "circle", "black"),
    ):
        scene = shapes.Scene(color, shape, motion, bg)
        first = shapes.render(scene)[0]
        prompt = shapes.caption(scene, "en", 0)
        out = to_uint8_frames(i2v(prompt, image=Image.fromarray(first), seed=0))
        det = analyze(out)
        got.append(det.objects[0].motion if det.objects else None)
    # the round-1 I2V DiT (trained with 3% of its steps above sigma 0.95) got 2 of these 4
    # ("down", "left", "right", "down"); the shipped round 2 moves all four the prompt's way
    assert got == ["right", "left", "up", "down"]
