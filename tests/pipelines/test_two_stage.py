"""Two-stage text-to-video (the embedded t2v-tiny): the first stage's image is the frame the
second stage animates; one frame is the first stage alone; the CLI's switch and its errors."""

import numpy as np
import pytest
import torch

from openwan.cli.main import main
from openwan.io.video import read_metadata, read_video, to_uint8_frames
from openwan.pipelines.request import GenerationRequest
from openwan.pipelines.t2v import WanT2V
from openwan.pipelines.two_stage import WanTwoStageT2V, missing_stages, wants_two_stage

PROMPT = "a red circle moving from left to right on a black background"


@pytest.fixture(scope="module")
def pipe():
    return WanTwoStageT2V.from_pretrained()


def test_the_video_stage_animates_the_image_stage_frame(pipe):
    assert pipe.task.name == "t2v-tiny"
    assert [s.task.name for s in pipe.stages] == ["t2i-tiny", "i2v-tiny"]
    # the first stage reads its own umT5 (text_encoder_t2i/), the second the shared one
    own, shared = (s.text_encoder.encode([PROMPT])[0] for s in pipe.stages)
    assert own.shape == shared.shape and not torch.allclose(own, shared, atol=1e-3)
    image = pipe(PROMPT, frame_num=1, steps=6, seed=3)
    assert torch.equal(image, pipe.image_stage(PROMPT, frame_num=1, steps=6, seed=3))
    handed = []
    generate = pipe.video_stage.generate

    def spy(request, *, image, **kw):
        handed.append((request, np.asarray(image)))
        return generate(request, image=image, **kw)

    pipe.video_stage.generate = spy
    try:
        result = pipe.generate(GenerationRequest(PROMPT, steps=6, seed=3))
    finally:
        del pipe.video_stage.generate
    ((request, frame),) = handed
    assert request.seed == 3 and request.steps == 6
    assert np.array_equal(frame, to_uint8_frames(image)[0])
    video = result.video
    assert video.shape == (3, 17, 64, 64) and result.request.task == "t2v-tiny"
    # i2v-tiny pins its first latent frame: the video starts on the VAE's reconstruction of
    # the handed frame
    handed_t = torch.from_numpy(frame).permute(2, 0, 1)[:, None].float() / 127.5 - 1
    with torch.no_grad():
        recon = pipe.video_stage.vae.decode(pipe.video_stage.vae.encode(handed_t[None]))[0]
    assert torch.allclose(video[:, :1], recon, atol=1e-5)


def test_the_embedded_folder_has_both_stages_and_others_fall_back(tmp_path):
    from openwan.configs.tasks import get_task

    assert missing_stages(None, get_task("t2v-tiny")) == []
    assert wants_two_stage(None, None) and not wants_two_stage(None, None, "off")
    assert not wants_two_stage(None, "t2v-1.3B")
    (tmp_path / "transformer").mkdir()
    assert missing_stages(tmp_path, get_task("t2v-tiny")) == [
        "transformer_t2i/",
        "transformer_i2v/",
    ]
    assert not wants_two_stage(tmp_path, "t2v-tiny")  # a retrained one-stage folder
    with pytest.raises(ValueError, match="no transformer_t2i/ or transformer_i2v/"):
        wants_two_stage(tmp_path, "t2v-tiny", "on")


def test_cli_default_is_two_stage_and_off_is_the_t2v_dit(tmp_path, capsys):
    args = ["generate", "--prompt", PROMPT, "--sample-steps", "4", "--seed", "5", "--quiet"]
    two, one = tmp_path / "two.mp4", tmp_path / "one.mp4"
    assert main([*args, "--save-file", str(two)]) == 0
    assert main([*args, "--two-stage", "off", "--save-file", str(one)]) == 0
    assert read_metadata(two)["task"] == read_metadata(one)["task"] == "t2v-tiny"
    direct = to_uint8_frames(WanT2V.from_pretrained()(PROMPT, steps=4, seed=5))
    d_one, d_two = (np.abs(read_video(f)[0].astype(float) - direct).mean() for f in (one, two))
    assert d_one < 3.0 and d_two > 2 * d_one  # off: the t2v DiT's video, up to H.264
    capsys.readouterr()
    assert main([*args, "--task", "t2i-tiny", "--frame-num", "1", "--two-stage", "on"]) == 2
    assert "--two-stage on is for text-to-video with t2v-tiny" in capsys.readouterr().err


def test_the_embedded_two_stage_model_moves_the_shape_as_the_prompt_says(pipe):
    from openwan.data import shapes
    from openwan.eval.shapesbench import analyze

    got, want = [], []
    for motion, color, shape, bg in (
        ("right", "red", "circle", "black"),
        ("left", "yellow", "square", "navy"),
        ("up", "green", "triangle", "gray"),
        ("down", "cyan", "circle", "black"),
    ):
        prompt = shapes.caption(shapes.Scene(color, shape, motion, bg), "en", 0)
        for seed in (0, 1):
            det = analyze(to_uint8_frames(pipe(prompt, seed=seed)))
            got.append(det.objects[0].motion if det.objects else None)
            want.append(motion)
    # measured: all 8 (and 16 of 18 over seeds 0-2 with static and growing added); the
    # one-stage t2v DiT scores motion 0.22 on ShapesBench
    assert sum(g == w for g, w in zip(got, want)) >= 7, got
