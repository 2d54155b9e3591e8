"""FSDP2 x CP training: same losses, gradients and weights as one process; DCP resume at 4 -> 2 -> 1."""

import pytest
import torch

from helpers import dist_launch, dist_train
from helpers.random_weights import rel_err

pytestmark = pytest.mark.dist
TOL = 1e-5


def _max_err(got: dict, ref: dict) -> float:
    assert got.keys() == ref.keys()
    return max(rel_err(got[k], ref[k]) for k in ref if ref[k].norm() > 0)


def test_train_steps_and_sharded_resume_on_other_world_sizes(tmp_path):
    dist_train.setup(tmp_path)  # the tokenizer, trained once before the processes start
    ref = dist_train.single_process(tmp_path, 5)

    def run(world, layout, steps, **kw):
        out = tmp_path / f"run{world}.pt"
        dist_launch.run(
            dist_train.parallel_run, world, layout, str(tmp_path), str(out), steps,
            kw.get("save_at"), kw.get("resume"), timeout=120,
        )  # fmt: skip
        return torch.load(out, weights_only=True)

    # world 4: data parallel 2 x Ulysses 2, FSDP over 4, activation checkpointing; save at step 3
    four = run(4, {"ulysses": 2, "ac": True}, 5, save_at=3)
    errors = {
        "loss": max(abs(a - b) / abs(b) for a, b in zip(four["loss"], ref["loss"])),
        "grads@3": _max_err(four["grads@3"], ref["grads@3"]),
        "params@5": _max_err(four["params@end"], ref["params@end"]),
    }
    print("world 4 (dp2 x ulysses2, fsdp4, ac) vs one process:", errors)
    assert len(four["loss"]) == 5 and max(errors.values()) < TOL, errors
    # resume the world-4 checkpoint on 2 processes (ring 2: a different layout) and on 1
    for world, layout in ((2, {"ring": 2}), (1, {})):
        cont = run(world, layout, 5, resume=str(tmp_path / "dcp"))
        assert cont["start"] == 3
        loss_err = max(abs(a - b) / abs(b) for a, b in zip(cont["loss"], four["loss"][3:]))
        param_err = _max_err(cont["params@end"], four["params@end"])
        print(f"resumed at world {world}: loss {loss_err:.2e} params {param_err:.2e}")
        assert loss_err < TOL, (world, loss_err)
        assert param_err < TOL
        assert _max_err(cont["ema@end"], four["ema@end"]) < TOL
        assert _max_err(cont["ema@end"], ref["ema@end"]) < TOL


def test_openwan_train_cli_on_two_processes_equals_one(tmp_path):
    """``openwan train --ulysses-size 2`` (FSDP2 x Ulysses, DCP checkpoints, rank-0 export)
    trains the same model as the single-process trainer."""
    import dataclasses
    import json

    from openwan.checkpoint.dit_format import load_dit
    from openwan.checkpoint.vae_format import save_vae
    from openwan.models.vae import WanVAE
    from openwan.training.flow import DiTTrainConfig, train_dit
    from openwan.training.vae_trainer import VAETrainConfig, vae_config

    torch.manual_seed(0)
    vae_dir = tmp_path / "vae"
    vae = WanVAE(vae_config(VAETrainConfig(frames=5, size=16, dim=4, dec_dim=4)))
    save_vae(vae, vae_dir, format="diffusers")
    cfg = DiTTrainConfig(
        steps=4, batch_size=2, frames=5, size=16, latent_clips=4, warmup=1, log_every=1,
        ckpt_every=2, dim=32, ffn_dim=64, num_heads=2, num_layers=2, text_len=16,
        t5_dim=16, t5_layers=1, t5_heads=2, t5_ff=32, image_prob=0.5, vae=str(vae_dir),
    )  # fmt: skip
    ref = train_dit(dataclasses.replace(cfg, run_dir=str(tmp_path / "one")), show_progress=False)

    conf = tmp_path / "train.json"
    conf.write_text(json.dumps({k: v for k, v in dataclasses.asdict(cfg).items() if k != "run_dir"}))
    run_dir, export = tmp_path / "two", tmp_path / "export"
    argv = ["train", "--config", str(conf), "--run-dir", str(run_dir), "--ulysses-size", "2"]
    argv += ["--export", str(export), "--quiet"]
    dist_launch.run(dist_train.cli_train, 2, argv, str(tmp_path / "code.json"), timeout=120)
    assert json.loads((tmp_path / "code.json").read_text())["code"] == 0
    assert sorted(p.name for p in run_dir.glob("dcp_*")) == ["dcp_0000002", "dcp_0000004"]
    got = load_dit(export / "transformer").state_dict()
    want = ref.dit.state_dict()
    err = max(rel_err(got[k], want[k]) for k in want if want[k].norm() > 0)
    print(f"openwan train on 2 processes vs 1: max rel err of the EMA DiT {err:.2e}")
    assert err < TOL
