"""A whole tiny VACE generation (R2V, control video, MV2V and their combination): official layout
vs diffusers layout vs diffusers' WanVACEPipeline, from identical initial noise."""

import numpy as np
import pytest
import torch
from PIL import Image

from helpers.random_weights import rel_err
from helpers.tiny_ckpt import DIT, diffusers_model, official_unipc, write_checkpoints
from openwan.pipelines import stages
from openwan.pipelines.request import GenerationRequest
from openwan.pipelines.vace import WanVACE
from openwan.pipelines.vace_inputs import read_sources

PROMPT = "a red circle moving from left to right"
NEG = "a blue square"
SIZE, FRAMES, STEPS, SHIFT, GUIDE = (32, 32), 5, 4, 3.0, 4.0
VACE_DIT = DIT.replace(vace_layers=(0, 1), vace_in_dim=96)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    return write_checkpoints(tmp_path_factory.mktemp("vace"), dit_config=VACE_DIT)


def _video(seed=0):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (1, 32, 32, 3))
    drift = rng.integers(-20, 21, (FRAMES, 1, 1, 3))  # a slowly changing control video
    return np.clip(base + np.cumsum(drift, axis=0), 0, 255).astype(np.uint8)


def _mask():
    m = np.zeros((FRAMES, 32, 32, 3), np.uint8)
    m[:, 8:24, 4:20] = 255  # regenerate a box (inpainting)
    m[3:, :, 24:] = 255  # and the right edge of the last frames (outpainting)
    return m


def _refs():
    rng = np.random.default_rng(5)
    wide = Image.fromarray(rng.integers(0, 256, (24, 40, 3), dtype=np.uint8))  # 40x24: fitted
    same = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    return [wide, same]


CASES = {
    "r2v": dict(src_ref_images=_refs()),
    "control": dict(src_video=_video()),
    "mv2v": dict(src_video=_video(1), src_mask=_mask()),
    "all": dict(src_video=_video(2), src_mask=_mask(), src_ref_images=_refs()[:1]),
}


def _noise(n_ref):
    return stages.initial_noise((16, 2 + n_ref, 4, 4), seed=7, device=torch.device("cpu"))


def _run(path, case, scale=1.0):
    pipe = WanVACE.from_pretrained(path, device="cpu")
    req = GenerationRequest(
        prompt=PROMPT,
        negative_prompt=NEG,
        size=SIZE,
        frame_num=FRAMES,
        steps=STEPS,
        shift=SHIFT,
        guide_scale=GUIDE,
        seed=7,
    )
    sources = read_sources(**CASES[case])
    n_ref = len(sources.refs)
    return pipe.generate(req, sources=sources, context_scale=scale, noise=_noise(n_ref))


def test_both_layouts_give_the_same_video(ckpts):
    official, diffusers_dir = ckpts
    a = _run(official, "all")
    b = _run(diffusers_dir, "all")
    assert a.video.shape == (3, 5, 32, 32)
    assert rel_err(a.video, b.video) < 1e-5


def _frames_pil(video):
    return [Image.fromarray(f) for f in video]


@pytest.mark.parametrize(
    "case, scale", [("r2v", 1.0), ("control", 1.0), ("mv2v", 1.0), ("all", 0.7)]
)
def test_generation_matches_diffusers_vace_pipeline(ckpts, case, scale):
    diffusers = pytest.importorskip("diffusers")
    from transformers import AutoTokenizer, UMT5EncoderModel

    official, root = ckpts
    ours = _run(official, case, scale)
    inputs = CASES[case]
    refs = inputs.get("src_ref_images")
    ref = diffusers.WanVACEPipeline(
        tokenizer=AutoTokenizer.from_pretrained(str(root / "tokenizer")),
        text_encoder=UMT5EncoderModel.from_pretrained(str(root / "text_encoder")),
        transformer=diffusers_model(diffusers.WanVACETransformer3DModel, root / "transformer"),
        vae=diffusers_model(diffusers.AutoencoderKLWan, root / "vae"),
        scheduler=official_unipc(diffusers, STEPS, SHIFT),
    )
    n_ref = len(refs or [])
    with torch.no_grad():
        latents = ref(
            prompt=PROMPT,
            negative_prompt=NEG,
            video=_frames_pil(inputs["src_video"]) if "src_video" in inputs else None,
            mask=_frames_pil(inputs["src_mask"]) if "src_mask" in inputs else None,
            # diffusers prepends each reference in front of the previous ones (last first); the
            # official order is first first, so diffusers gets them reversed
            reference_images=list(reversed(refs)) if refs else None,
            conditioning_scale=scale,
            height=SIZE[1],
            width=SIZE[0],
            num_frames=FRAMES,
            num_inference_steps=STEPS,
            guidance_scale=GUIDE,
            latents=_noise(n_ref)[None],
            output_type="latent",
        ).frames[:, :, n_ref:]
        mean = torch.tensor(ref.vae.config.latents_mean).view(1, 16, 1, 1, 1)
        std = torch.tensor(ref.vae.config.latents_std).view(1, 16, 1, 1, 1)
        video_ref = ref.vae.decode(latents * std + mean).sample[0]
    assert ours.video.shape == video_ref.shape == (3, 5, 32, 32)
    # measured ~2e-6; a reference-order mix-up gives ~1e-4 at this tiny scale
    assert rel_err(ours.video, video_ref) < 1e-5


@pytest.mark.parametrize("case", sorted(CASES))
def test_vace_context_matches_diffusers_preprocessing(ckpts, case):
    """The 96-channel context itself, against diffusers' condition preprocessing on the same VAE."""
    diffusers = pytest.importorskip("diffusers")
    from openwan.checkpoint.vae_format import load_vae
    from openwan.pipelines.vace_inputs import encode_context, prepare_frames

    official, root = ckpts
    sources = read_sources(**CASES[case])
    cond = prepare_frames(sources, SIZE, FRAMES, (4, 8, 8), (1, 2, 2))
    ours = encode_context(load_vae(official / "Wan2.1_VAE.pth"), cond)
    ref = diffusers.WanVACEPipeline(
        tokenizer=None,
        text_encoder=None,
        transformer=diffusers_model(diffusers.WanVACETransformer3DModel, root / "transformer"),
        vae=diffusers_model(diffusers.AutoencoderKLWan, root / "vae"),
        scheduler=None,
    )
    inputs = CASES[case]
    refs = inputs.get("src_ref_images")
    with torch.no_grad():
        video, mask, ref_images = ref.preprocess_conditions(
            _frames_pil(inputs["src_video"]) if "src_video" in inputs else None,
            _frames_pil(inputs["src_mask"]) if "src_mask" in inputs else None,
            list(reversed(refs)) if refs else None,
            1,
            SIZE[1],
            SIZE[0],
            FRAMES,
            torch.float32,
            torch.device("cpu"),
        )
        latents = ref.prepare_video_latents(video, mask, ref_images, device=torch.device("cpu"))
        expect = torch.cat([latents, ref.prepare_masks(mask, ref_images)], dim=1)[0]
    assert ours.shape == expect.shape == (96, 2 + len(refs or []), 4, 4)
    assert rel_err(ours, expect) < 1e-5


def test_conditions_and_scale_change_the_result(ckpts):
    official, _ = ckpts
    a = _run(official, "mv2v")
    b = _run(official, "mv2v", scale=0.0)
    c = _run(official, "control")
    assert rel_err(b.video, a.video) > 1e-3
    assert rel_err(c.video, a.video) > 1e-3


def test_a_t2v_checkpoint_is_refused(tmp_path):
    official, _ = write_checkpoints(tmp_path)
    with pytest.raises(ValueError, match="not a VACE model"):
        WanVACE.from_pretrained(official, device="cpu")
