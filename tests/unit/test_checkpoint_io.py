"""Atomic writes: a finished file has ordinary permissions, a failed one leaves nothing behind."""

import os
import stat

import pytest
import torch

from openwan.checkpoint.io import atomic_path, load_state_dict, save_state_dict


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_written_files_get_the_permissions_of_a_plain_open(tmp_path):
    old = os.umask(0o022)
    try:
        plain = tmp_path / "plain.bin"
        plain.write_bytes(b"x")
        weights = tmp_path / "w.safetensors"
        save_state_dict({"a": torch.arange(3.0)}, weights)  # safetensors itself writes 0600
        with atomic_path(tmp_path / "c.json") as tmp:
            tmp.write_text("{}")
    finally:
        os.umask(old)
    assert _mode(weights) == _mode(plain) == _mode(tmp_path / "c.json") == 0o644
    assert torch.equal(load_state_dict(weights)["a"], torch.arange(3.0))


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]
