"""``openwan eval shapesbench``: ground truth scores 1, an I2V model is also scored on its first frame."""

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
    # zero condition channels: the model ignores the image, so its first frame is far from it
    assert 5.0 < report["first_frame_psnr_db"] < 25.0
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
    assert "worst joint" in capsys.readouterr().out
