"""A whole tiny T2V generation: official layout vs diffusers layout vs diffusers' WanPipeline,
from identical initial noise."""

import pytest
import torch

from helpers.random_weights import rel_err
from helpers.tiny_ckpt import diffusers_model, official_unipc, write_checkpoints
from openwan.pipelines import stages
from openwan.pipelines.request import GenerationRequest
from openwan.pipelines.t2v import WanT2V

PROMPT = "a red circle moving from left to right"
NEG = "a blue square"
SIZE, FRAMES, STEPS = (32, 32), 5, 4


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    return write_checkpoints(tmp_path_factory.mktemp("ckpt"))


def _noise():
    return stages.initial_noise((16, 2, 4, 4), seed=7, device=torch.device("cpu"))


def _run(path, solver="unipc"):
    pipe = WanT2V.from_pretrained(path, device="cpu")
    req = GenerationRequest(
        prompt=PROMPT,
        negative_prompt=NEG,
        size=SIZE,
        frame_num=FRAMES,
        steps=STEPS,
        shift=3.0,
        guide_scale=4.0,
        solver=solver,
        seed=7,
    )
    return pipe, pipe.generate(req, noise=_noise())


def test_both_layouts_give_the_same_video(ckpts):
    official, diffusers_dir = ckpts
    pipe, a = _run(official)
    _, b = _run(diffusers_dir)
    assert pipe.task.name == "custom"
    assert a.video.shape == (3, 5, 32, 32)
    assert rel_err(a.video, b.video) < 1e-5


def test_generation_matches_diffusers_wan_pipeline(ckpts):
    diffusers = pytest.importorskip("diffusers")
    from transformers import AutoTokenizer, UMT5EncoderModel

    official, root = ckpts
    pipe, ours = _run(official)
    sched = official_unipc(diffusers, STEPS, 3.0)
    ref = diffusers.WanPipeline(
        tokenizer=AutoTokenizer.from_pretrained(str(root / "tokenizer")),
        text_encoder=UMT5EncoderModel.from_pretrained(str(root / "text_encoder")),
        transformer=diffusers_model(diffusers.WanTransformer3DModel, root / "transformer"),
        vae=diffusers_model(diffusers.AutoencoderKLWan, root / "vae"),
        scheduler=sched,
    )
    with torch.no_grad():
        latents = ref(
            prompt=PROMPT,
            negative_prompt=NEG,
            height=SIZE[1],
            width=SIZE[0],
            num_frames=FRAMES,
            num_inference_steps=STEPS,
            guidance_scale=4.0,
            latents=_noise()[None],
            output_type="latent",
        ).frames
        mean = torch.tensor(ref.vae.config.latents_mean).view(1, 16, 1, 1, 1)
        std = torch.tensor(ref.vae.config.latents_std).view(1, 16, 1, 1, 1)
        video_ref = ref.vae.decode(latents * std + mean).sample[0]
    assert rel_err(ours.video, video_ref) < 1e-4


@pytest.mark.parametrize("solver", ["dpm++", "euler"])
def test_other_solvers_run_and_differ(ckpts, solver):
    official, _ = ckpts
    _, a = _run(official, "unipc")
    _, b = _run(official, solver)
    assert b.video.shape == a.video.shape
    assert 1e-4 < rel_err(b.video, a.video) < 1.0


def test_prompt_too_long_is_refused(ckpts):
    official, _ = ckpts
    pipe = WanT2V.from_pretrained(official, device="cpu")
    with pytest.raises(ValueError, match="the limit is 512"):
        pipe("red " * 600, size=SIZE, frame_num=FRAMES, steps=1)
