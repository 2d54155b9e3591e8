"""Datasets on disk: folder / metadata.csv / JSONL, broken or uncaptioned items skipped and counted,
and both trainers running on one."""

import dataclasses
import json
import logging

import numpy as np
import pytest
import torch

from openwan.checkpoint.vae_format import save_vae
from openwan.data.files import DatasetError, open_dataset, resize_clip
from openwan.io.video import save_video
from openwan.models.vae import WanVAE
from openwan.training import common
from openwan.training.flow import DiTTrainConfig, latent_cache
from openwan.training.vae_trainer import VAETrainConfig, train_vae, vae_config

COLORS = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 30)}


def solid(color, frames=6, h=24, w=32):
    return np.broadcast_to(np.array(color, np.uint8), (frames, h, w, 3)).copy()


@pytest.fixture()
def folder(tmp_path):
    root = tmp_path / "clips"
    (root / "sub").mkdir(parents=True)
    for name, color in COLORS.items():
        save_video(solid(color), root / "sub" / f"{name}.mp4", fps=8)
        (root / "sub" / f"{name}.txt").write_text(f"a {name} screen\n", encoding="utf-8")
    save_video(solid((200, 200, 0)), root / "nocaption.mp4", fps=8)  # no .txt: skipped
    (root / "broken.mp4").write_bytes(b"\x00\x01 not a video" * 50)
    (root / "broken.txt").write_text("a broken file", encoding="utf-8")
    save_video(solid((9, 9, 9), frames=2), root / "short.mp4", fps=8)  # too few frames
    (root / "short.txt").write_text("too short", encoding="utf-8")
    return root


def test_resize_clip_centre_crops_and_scales():
    frames = np.zeros((2, 20, 40, 3), np.uint8)
    frames[:, :, 10:30] = 255  # the centre square is white, the sides black
    clip = resize_clip(frames, 10)
    assert clip.shape == (3, 2, 10, 10)
    assert torch.allclose(clip, torch.ones_like(clip))


def test_folder_dataset_reads_clips_and_skips_bad_items(folder, caplog):
    with caplog.at_level(logging.WARNING):
        data = open_dataset(folder, frames=4, size=16)
        clips = list(data)
    assert sorted(p for _, p in clips) == ["a blue screen", "a green screen", "a red screen"]
    for clip, prompt in clips:
        assert clip.shape == (3, 4, 16, 16)
        want = torch.tensor(COLORS[prompt.split()[1]], dtype=torch.float32) / 127.5 - 1
        # H.264 4:2:0 of a flat colour: within a few code values
        assert (clip.mean(dim=(1, 2, 3)) - want).abs().max() < 0.05
    reasons = {p.split("/")[-1]: r for p, r in data.skipped}
    assert set(reasons) == {"nocaption.mp4", "broken.mp4", "short.mp4"}
    assert reasons["nocaption.mp4"] == "missing caption"
    assert "2 frames, 4 needed" in reasons["short.mp4"]
    assert "broken.mp4" in caplog.text and "nocaption.mp4" in caplog.text


def test_csv_and_jsonl_index_files(folder):
    (folder / "metadata.csv").write_text(
        "video,prompt\nsub/red.mp4,crimson\nsub/blue.mp4,\nbroken.mp4,bad\n", encoding="utf-8"
    )
    data = open_dataset(folder, frames=3, size=8)  # the folder holding metadata.csv
    assert [i.prompt for i in data.items] == ["crimson", "bad"]
    assert [p for _, p in data] == ["crimson"]
    assert len(data.skipped) == 2  # the empty prompt and the unreadable video

    lines = [
        json.dumps({"video": "sub/green.mp4", "prompt": "verdant 绿色"}),
        "{not json",
        json.dumps({"prompt": "no video"}),
    ]
    (folder / "index.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    data = open_dataset(folder / "index.jsonl", frames=3, size=8)
    assert [p for _, p in data] == ["verdant 绿色"]
    assert {r for _, r in data.skipped} == {"bad JSON line", "missing video path"}


def test_unusable_dataset_paths_are_clear_errors(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        open_dataset(tmp_path / "nope")
    (tmp_path / "m.csv").write_text("file,text\na.mp4,x\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="'video,prompt'"):
        open_dataset(tmp_path / "m.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no usable"):
        open_dataset(tmp_path / "empty")


TINY = dict(batch_size=2, frames=5, size=16, dim=4, dec_dim=4, warmup=1, log_every=1)


def test_vae_trains_on_a_folder(folder, tmp_path):
    cfg = VAETrainConfig(run_dir=str(tmp_path / "vae"), dataset=str(folder), steps=2, **TINY)
    train_vae(cfg, show_progress=False)
    assert len(list(common.MetricsLog(tmp_path / "vae").records())) == 2


def test_dit_latent_cache_keeps_dataset_prompts(folder, tmp_path):
    vae = WanVAE(vae_config(VAETrainConfig(**TINY)))
    save_vae(vae, tmp_path / "vae", format="diffusers")
    cfg = DiTTrainConfig(
        vae=str(tmp_path / "vae"), dataset=str(folder), frames=5, size=16, latent_clips=10
    )
    latents, captions = latent_cache(cfg, tmp_path / "run")
    assert latents.shape == (3, 16, 2, 4, 4)
    assert sorted(captions) == ["a blue screen", "a green screen", "a red screen"]
    # cached on disk: a second call reads the same tensors back without the dataset
    again, captions2 = latent_cache(dataclasses.replace(cfg, vae=None), tmp_path / "run")
    assert torch.equal(again, latents) and captions2 == captions
