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
