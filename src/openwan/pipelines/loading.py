"""Loading the components every Wan pipeline shares: DiT (+ the A14B high-noise expert), VAE and
umT5, from an official or diffusers folder, with the task recognised when not given."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from openwan.checkpoint.layout import ModelFiles, locate
from openwan.configs.tasks import TaskSpec, get_task, infer_task

log = logging.getLogger(__name__)


@dataclass
class Components:
    spec: TaskSpec
    files: ModelFiles
    device: torch.device  # where the pipeline runs
    load_device: torch.device  # where the weights were put (the CPU when offloading)
    dit: nn.Module
    dit_high: nn.Module | None
    vae: nn.Module
    text_encoder: nn.Module


def load_components(
    path: str | Path,
    *,
    task: str | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    text_dtype: torch.dtype | None = None,
    offload_model: bool = False,
    text_stream: bool = False,
) -> Components:
    """``dtype`` is the DiT weight dtype (fp32 on CPU by default, bf16 on CUDA); the VAE runs in
    fp32 and the text encoder (kept on the CPU until used) in ``text_dtype``, by default the
    task's (bf16 for the official umT5-XXL, as the reference). ``text_stream`` leaves the text
    encoder's weights in its file, read one block at a time per prompt (about 1 GB of RAM instead
    of 11 GB for umT5-XXL)."""
    from openwan.checkpoint.dit_format import load_dit
    from openwan.checkpoint.vae_format import load_vae
    from openwan.models.text import T5TextEncoder

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    spec = get_task(task) if task else None
    files = locate(path, spec)
    if dtype is None:
        dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    load_dev = torch.device("cpu") if offload_model else dev
    dit = load_dit(files.dit, dtype=dtype, device=load_dev)
    dit_high = load_dit(files.dit_high, dtype=dtype, device=load_dev) if files.dit_high else None
    vae = load_vae(files.vae, dtype=torch.float32, device=load_dev)
    if spec is None:
        spec = infer_task(dit.config, vae.config, has_experts=dit_high is not None)
        log.info("checkpoint recognised as task %s", spec.name)
    if text_dtype is None:
        text_dtype = torch.bfloat16 if spec.text_dtype == "bf16" else torch.float32
    text_encoder = T5TextEncoder.from_pretrained(
        files.text, dtype=text_dtype, device="cpu", stream=text_stream
    )
    return Components(spec, files, dev, load_dev, dit, dit_high, vae, text_encoder)
