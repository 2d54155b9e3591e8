"""Where the parts of a model live in a checkpoint folder (official or diffusers layout)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from openwan.checkpoint.io import CheckpointError
from openwan.configs.tasks import TaskSpec


@dataclass(frozen=True)
class ModelFiles:
    layout: str  # "official" | "diffusers"
    dit: Path  # single DiT folder, or the low-noise expert for A14B
    dit_high: Path | None  # high-noise expert folder (A14B) else None
    vae: Path  # official .pth file or diffusers vae/ folder
    text: Path  # folder T5TextEncoder.from_pretrained understands


def is_diffusers_layout(root: Path) -> bool:
    return (root / "model_index.json").is_file() or (root / "transformer" / "config.json").is_file()


def has_experts(root: Path) -> bool:
    """True for a two-expert (A14B) checkpoint in either layout."""
    if is_diffusers_layout(root):
        return (root / "transformer_2" / "config.json").is_file()
    return (root / "high_noise_model").is_dir() and (root / "low_noise_model").is_dir()


def locate(root: str | Path, task: TaskSpec | None = None) -> ModelFiles:
    """Find the DiT(s), VAE and text encoder of a checkpoint folder, with a clear error if absent."""
    root = Path(root)
    if not root.is_dir():
        raise CheckpointError(f"checkpoint folder not found: {root} (pass --ckpt-dir <folder>)")
    if is_diffusers_layout(root):
        experts = has_experts(root)
        # diffusers: `transformer` is the high-noise expert, `transformer_2` the low-noise one
        dit_dir = "transformer_2" if experts else "transformer"
        if not experts and task is not None and task.dit_dir and (root / task.dit_dir).is_dir():
            dit_dir = task.dit_dir
        text = root
        if task is not None and task.text_dir and (root / task.text_dir / "config.json").is_file():
            text = root / task.text_dir
        files = ModelFiles(
            layout="diffusers",
            dit=root / dit_dir,
            dit_high=root / "transformer" if experts else None,
            vae=root / "vae",
            text=text,
        )
    else:
        experts = has_experts(root)
        vae_names = [task.vae_file] if task else ["Wan2.1_VAE.pth", "Wan2.2_VAE.pth"]
        vae = next((root / n for n in vae_names if (root / n).is_file()), root / vae_names[0])
        low, high = (
            task.expert_dirs
            if task and task.expert_dirs
            else ("low_noise_model", "high_noise_model")
        )
        files = ModelFiles(
            layout="official",
            dit=root / low if experts else root,
            dit_high=root / high if experts else None,
            vae=vae,
            text=root,
        )
    _require(files.dit / "config.json", "DiT config")
    if files.dit_high is not None:
        _require(files.dit_high / "config.json", "high-noise expert config")
    if not files.vae.exists():
        raise CheckpointError(
            f"VAE not found at {files.vae}; the checkpoint folder looks incomplete"
        )
    if task is not None and task.is_moe and files.dit_high is None:
        raise CheckpointError(
            f"task {task.name} needs two experts (high_noise_model/ and low_noise_model/) in {root}"
        )
    return files


def _require(path: Path, what: str) -> None:
    if not path.is_file():
        raise CheckpointError(f"{what} not found: {path}; the checkpoint folder looks incomplete")
