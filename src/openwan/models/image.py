"""CLIP image encoder of Wan2.1 I2V / FLF2V: the open-clip XLM-RoBERTa ViT-H/14 vision tower
(WAN_SPEC §5), built with transformers' ``CLIPVisionModel``.

The architectures match: pre-norm blocks, a class token, learned position embeddings, a LayerNorm
(``pre_layrnorm``) after adding them, exact GELU (set in the config; CLIP's default is
quick-GELU), a bias-free patch convolution. Wan uses the hidden states after block 31 of 32 (the
penultimate block), without the final LayerNorm or the projection: ``[N, 257, 1280]``; the last
block is therefore never run here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from openwan.checkpoint.io import CheckpointError, load_state_dict

# The official preprocessing: bicubic resize of the whole image (no crop), CLIP mean/std.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
OFFICIAL_CLIP_FILE = "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"


def preprocess(images: torch.Tensor, image_size: int) -> torch.Tensor:
    """Images ``[N, 3, H, W]`` in [-1, 1] at any size -> normalised ``[N, 3, S, S]`` pixels.

    As the official ``CLIPModel.visual``: bicubic resize straight to S x S (the aspect ratio is not
    kept, nothing is cropped, no clamp), map to [0, 1], normalise with the CLIP mean/std.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images [N, 3, H, W], got {tuple(images.shape)}")
    x = F.interpolate(
        images.float(), size=(image_size, image_size), mode="bicubic", align_corners=False
    )
    x = x.mul(0.5).add(0.5)
    mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


class CLIPImageEncoder(nn.Module):
    """``encode(images in [-1, 1])`` -> image tokens ``[N, 257, 1280]`` (fp32)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model  # a transformers CLIPVisionModel

    @property
    def image_size(self) -> int:
        return int(self.model.config.image_size)

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Normalised pixels ``[N, 3, S, S]`` -> hidden states after the penultimate block."""
        m = self.model
        param = m.embeddings.patch_embedding.weight
        h = m.pre_layrnorm(m.embeddings(pixel_values.to(param.device, param.dtype)))
        for layer in m.encoder.layers[:-1]:
            h = layer(h, None)
        return h.float()

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images ``[N, 3, H, W]`` in [-1, 1] -> ``[N, tokens, dim]``."""
        with torch.no_grad():
            return self(preprocess(images, self.image_size))

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> CLIPImageEncoder:
        """Load the official ``.pth`` (``visual.*`` keys; the text tower is ignored) or a transformers
        ``CLIPVisionModel`` folder (config.json + weights, e.g. diffusers' ``image_encoder/``)."""
        from transformers import CLIPVisionConfig, CLIPVisionModel

        from openwan.checkpoint.clip_format import official_to_hf, vision_config_from_official
        from openwan.checkpoint.io import assign_strict, find_weights

        path = Path(path)
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise CheckpointError(
                    f"CLIP image encoder config not found: {path / 'config.json'}"
                )
            config: Any = CLIPVisionConfig.from_json_file(str(path / "config.json"))
            sd = load_state_dict(find_weights(path, stem="model"))
            sd = {k.removeprefix("vision_model."): v for k, v in sd.items()}
            sd.pop("embeddings.position_ids", None)
            # CLIPVisionModelWithProjection folders carry the (unused) image projection
            sd = {k: v for k, v in sd.items() if not k.startswith("visual_projection.")}
        else:
            official = load_state_dict(path)
            config = vision_config_from_official(official)
            sd = official_to_hf(official)
        config._attn_implementation = "sdpa"
        with torch.device("meta"):
            model = CLIPVisionModel(config)
        assign_strict(model, sd, what=f"CLIP image encoder {path}", dtype=dtype, device=device)
        # the only non-persistent buffer: the position index, left on meta by the build
        emb = model.embeddings
        emb.register_buffer(
            "position_ids",
            torch.arange(emb.num_positions, device=device).expand(1, -1),
            persistent=False,
        )
        return cls(model.eval())
