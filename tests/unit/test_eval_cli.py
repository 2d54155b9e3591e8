"""``openwan eval``: shapesbench (ground truth scores 1, an I2V model is also scored on its first
frame), continuation seams, and VAE reconstruction."""

import json
import shutil

import pytest

from openwan.cli.main import main


def test_ground_truth_run_scores_every_field(tmp_path, capsys):
    out = tmp_path / "gt.json"
    args = ["eval", "shapesbench", "--ground-truth", "--prompts", "2", "--two-shape-prompts", "2"]
    assert main([*args, "--out", str(out)]) == 0
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["groups"]["all"]["n"] == 16 and report["groups"]["all"]["all"] == 1.0
    assert report["groups"]["heldout-2/zh"]["n"] == 2
    assert "heldout-2/en" in capsys.readouterr().out


@pytest.fixture(scope="module")
def i2v_folder(tmp_path_factory):
    """The shipped tiny t2v model as an I2V one with zero condition channels."""
    from openwan.assets import tiny_model_dir
    from openwan.checkpoint.dit_format import load_dit, save_dit
    from openwan.configs.tasks import TINY_I2V_DIT
    from openwan.models.dit import WanModel
    from openwan.training.flow import _as_i2v

    folder = tmp_path_factory.mktemp("i2v") / "model"
    shutil.copytree(tiny_model_dir("t2v"), folder, ignore=shutil.ignore_patterns("transformer_*"))
    i2v = _as_i2v(load_dit(folder / "transformer"), WanModel(TINY_I2V_DIT))
    shutil.rmtree(folder / "transformer")
    save_dit(i2v, folder / "transformer", format="official")
    return folder


def test_i2v_task_gets_the_first_frame_and_reports_its_psnr(tmp_path, capsys, i2v_folder):
    folder = i2v_folder
    out = tmp_path / "r.json"
    args = ["eval", "shapesbench", "--ckpt-dir", str(folder), "--task", "i2v-tiny", "--prompts", "1",
            "--languages", "en", "--steps", "4", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["groups"]["all"]["n"] == 2
    # zero condition channels: the model ignores the image, but i2v-tiny pins the first latent
    # frame to the image's, so the first frame is the VAE's reconstruction of the input
    # (not the input itself: finite)
    assert 28.0 < report["first_frame_psnr_db"] < 60.0
    assert "first frame vs the input image" in capsys.readouterr().out


def test_continuation_reports_one_ratio_per_joint(tmp_path, capsys, i2v_folder):
    out = tmp_path / "c.json"
    args = ["eval", "continuation", "--ckpt-dir", str(i2v_folder), "--prompts", "1", "--rounds",
            "2", "--steps", "2", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    report = json.loads(out.read_text(encoding="utf-8"))
    (video,) = report["videos"]
    assert video["frames"] == 17 + 2 * 16 and len(video["joint_ratios"]) == 2
    assert all(r > 0 for r in video["joint_ratios"])
    assert report["share_seamless"] == float(max(video["joint_ratios"]) <= 2.0)
    assert len(video["blended_joint_ratios"]) == 2
    assert report["share_seamless_blended"] == float(max(video["blended_joint_ratios"]) <= 2.0)
    assert "worst joint" in capsys.readouterr().out
    # --guide-scale reaches every round (1.0: no unconditional branch, another video)
    assert main([*args[:-1], str(tmp_path / "g.json"), "--guide-scale", "1.0"]) == 0
    other = json.loads((tmp_path / "g.json").read_text(encoding="utf-8"))["videos"][0]
    assert other["joint_ratios"] != video["joint_ratios"]


def test_eval_vae_scores_the_reconstruction_of_held_out_clips(tmp_path, capsys):
    import torch

    from openwan.assets import tiny_model_dir
    from openwan.checkpoint.vae_format import load_vae
    from openwan.data.shapes import ShapesWorld, to_tensor
    from openwan.eval.metrics import psnr

    out = tmp_path / "vae.json"
    # a whole model folder is accepted too: its vae/ is used
    args = ["eval", "vae", "--vae", str(tiny_model_dir()), "--clips", "2", "--frames", "5"]
    assert main([*args, "--out", str(out)]) == 0
    report = json.loads(out.read_text(encoding="utf-8"))
    assert "PSNR" in capsys.readouterr().out
    vae = load_vae(tiny_model_dir() / "vae").eval()
    clip = to_tensor(ShapesWorld(seed=11, frames=5, split="heldout")[1][0])
    with torch.no_grad():
        recon = vae.decode(vae.encode(clip[None]))[0].clamp(-1, 1)
    row = report["clips"][1]
    assert row["psnr_db"] == pytest.approx(psnr(recon, clip), abs=1e-6)
    assert row["first_frame_psnr_db"] == pytest.approx(psnr(recon[:, :1], clip[:, :1]), abs=1e-6)
    assert report["mean"]["psnr_db"] == pytest.approx(
        (report["clips"][0]["psnr_db"] + row["psnr_db"]) / 2
    )
    assert 20 < row["psnr_db"] < 60 and 0.5 < row["ssim"] <= 1.0


def test_eval_vae_refuses_a_frame_count_the_vae_cannot_take(capsys):
    assert main(["eval", "vae", "--frames", "6", "--clips", "1"]) == 2
    assert "--frames must be 4k+1" in capsys.readouterr().err


def test_eval_vae_talking_world_scores_lip_sync_of_the_reconstruction():
    from openwan.cli.evaluate import vae_reconstruction

    class Identity:  # a perfect autoencoder: the ground truth's own sync comes back
        def encode(self, x):
            return x

        def decode(self, z):
            return z

    class Still(Identity):  # loses the mouth: every frame is the first
        def decode(self, z):
            return z[:, :, :1].expand_as(z)

    perfect = vae_reconstruction(Identity(), 2, 17, 0.0, 11, world="talking")
    assert all(r["sync"] > 0.95 and r["psnr_db"] > 60 for r in perfect)
    still = vae_reconstruction(Still(), 2, 17, 0.0, 11, world="talking")
    assert all(r["sync"] == 0.0 for r in still)
    assert "sync" not in vae_reconstruction(Identity(), 1, 5, 0.0, 11)[0]
