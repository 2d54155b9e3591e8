"""Task presets: which models a task uses and its official sampling defaults (WAN_SPEC §1.4, §6.8)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from openwan.configs import dit as dit_cfg
from openwan.configs.dit import DiTConfig
from openwan.configs.vae import WAN21_VAE, WAN22_VAE, VAEConfig

# The official default negative prompt (shared by all Wan2.1 tasks and Wan2.2 T2V/I2V/TI2V).
DEFAULT_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，"
    "低质量，JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，"
    "毁容的，形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)

# "W*H" strings as the official CLI spells them.
SIZES_21_T2V_14B = ("720*1280", "1280*720", "480*832", "832*480")
SIZES_21_1_3B = ("480*832", "832*480")
SIZES_T2I = ("720*1280", "1280*720", "480*832", "832*480", "1024*1024")
SIZES_TI2V = ("704*1280", "1280*704")


@dataclass(frozen=True)
class TaskSpec:
    name: str
    dit: DiTConfig
    vae: VAEConfig
    sizes: tuple[str, ...]
    default_size: str
    frame_num: int = 81
    fps: int = 16
    steps: int = 50
    shift: float = 5.0
    # one scale, or (low-noise expert, high-noise expert) for the A14B MoE
    guide_scale: float | tuple[float, float] = 5.0
    solver: str = "unipc"
    boundary: float | None = None  # A14B expert switch, fraction of num_train_timesteps
    negative_prompt: str = DEFAULT_NEGATIVE_PROMPT
    text_len: int = 512
    num_train_timesteps: int = 1000
    # official checkpoint layout
    vae_file: str = "Wan2.1_VAE.pth"
    t5_file: str = "models_t5_umt5-xxl-enc-bf16.pth"
    tokenizer_dir: str = "google/umt5-xxl"
    expert_dirs: tuple[str, str] | None = None  # (low_noise, high_noise) subfolders
    # diffusers layout: a DiT subfolder used instead of transformer/ when present (the embedded
    # tiny I2V DiT lives beside the t2v one and shares its VAE and text encoder)
    dit_dir: str | None = None
    # diffusers layout: a text encoder folder (config.json, weights and tokenizer files) used
    # instead of text_encoder/ + tokenizer/ when present (the embedded first-frame DiT's own umT5)
    text_dir: str | None = None
    image_output: bool = False  # t2i: one frame written as PNG
    # I2V-type tasks: pin the leading given frames' latents while sampling
    # (``stages.anchor_known_frames``); the official models' reference does not
    anchor_known_frames: bool = False
    text_dtype: str = "bf16"  # umT5 compute dtype (official: bf16)
    # text-to-video in two stages (openwan.pipelines.two_stage): (text-to-image task, image-to-
    # video task) whose DiTs, both in the same model folder, draw the first frame and animate it
    two_stage: tuple[str, str] | None = None

    @property
    def is_moe(self) -> bool:
        return self.expert_dirs is not None

    @property
    def vae_stride(self) -> tuple[int, int, int]:
        return self.vae.stride

    @property
    def size_multiple(self) -> int:
        """Pixel sizes must be divisible by VAE stride x patch size."""
        return self.vae.stride[1] * self.dit.patch_size[1]


TASKS: dict[str, TaskSpec] = {}


def _register(spec: TaskSpec) -> None:
    TASKS[spec.name] = spec


_register(TaskSpec("t2v-1.3B", dit_cfg.WAN21_T2V_1_3B, WAN21_VAE, SIZES_21_1_3B, "832*480"))
_register(TaskSpec("t2v-14B", dit_cfg.WAN21_T2V_14B, WAN21_VAE, SIZES_21_T2V_14B, "1280*720"))
_register(
    TaskSpec(
        "t2i-14B",
        dit_cfg.WAN21_T2V_14B,
        WAN21_VAE,
        SIZES_T2I,
        "1280*720",
        frame_num=1,
        image_output=True,
    )
)
_register(
    TaskSpec(
        "t2v-A14B",
        dit_cfg.WAN22_T2V_A14B,
        WAN21_VAE,
        SIZES_21_T2V_14B,
        "1280*720",
        steps=40,
        shift=12.0,
        guide_scale=(3.0, 4.0),
        boundary=0.875,
        expert_dirs=("low_noise_model", "high_noise_model"),
    )
)
_register(
    TaskSpec(
        "ti2v-5B",
        dit_cfg.WAN22_TI2V_5B,
        WAN22_VAE,
        SIZES_TI2V,
        "1280*704",
        frame_num=121,
        fps=24,
        vae_file="Wan2.2_VAE.pth",
    )
)

# Wan2.1 VACE: T2V sampling with shift 16 (official generate.py); context_scale 1.0
_register(
    TaskSpec("vace-1.3B", dit_cfg.WAN21_VACE_1_3B, WAN21_VAE, SIZES_21_1_3B, "832*480", shift=16.0)
)
_register(
    TaskSpec(
        "vace-14B", dit_cfg.WAN21_VACE_14B, WAN21_VAE, SIZES_21_T2V_14B, "1280*720", shift=16.0
    )
)


# Image-conditioned tasks (WAN_SPEC §6.8, §7.2, §7.3). ``size`` is the maximum area; the output
# follows the image's aspect ratio. i2v-14B uses shift 3.0 at the 480P areas (pipelines/i2v.py).
I2V_NEGATIVE_PROMPT = "镜头晃动，" + DEFAULT_NEGATIVE_PROMPT
_register(
    TaskSpec(
        "i2v-14B",
        dit_cfg.WAN21_I2V_14B,
        WAN21_VAE,
        SIZES_21_T2V_14B,
        "1280*720",
        steps=40,
        negative_prompt=I2V_NEGATIVE_PROMPT,
    )
)
_register(
    TaskSpec(
        "flf2v-14B",
        dit_cfg.WAN21_FLF2V_14B,
        WAN21_VAE,
        SIZES_21_T2V_14B,
        "1280*720",
        shift=16.0,
        negative_prompt="镜头切换，" + I2V_NEGATIVE_PROMPT,
    )
)
_register(
    TaskSpec(
        "i2v-A14B",
        dit_cfg.WAN22_I2V_A14B,
        WAN21_VAE,
        SIZES_21_T2V_14B,
        "1280*720",
        steps=40,
        guide_scale=(3.5, 3.5),
        boundary=0.900,
        expert_dirs=("low_noise_model", "high_noise_model"),
    )
)

# The embedded tiny shapes-world model (src/openwan/assets/wan-tiny). Only the architecture matters
# here; the shipped vae/config.json carries the measured latent statistics.
TINY_DIT = DiTConfig(
    model_type="t2v", dim=128, ffn_dim=512, num_heads=2, num_layers=6, text_dim=64, text_len=48
)
TINY_VAE = VAEConfig(
    dim=16,
    dec_dim=16,
    dim_mult=(1, 2, 4),
    temperal_downsample=(True, True),
    latent_mean=(0.0,) * 16,
    latent_std=(1.0,) * 16,
)
# what the tiny models were trained with: 64x64, 17 frames, empty captions as the unconditional branch
_TINY_SETTINGS: dict[str, Any] = dict(
    sizes=(), default_size="64*64", frame_num=17, steps=30, shift=3.0, guide_scale=5.0,
    negative_prompt="", text_len=48, text_dtype="fp32",
)  # fmt: skip
# Its videos are made in two stages by default (openwan.pipelines.two_stage: the first frame by
# t2i-tiny, then i2v-tiny animates it); its own DiT alone is WanT2V / `--two-stage off`.
_register(TaskSpec("t2v-tiny", TINY_DIT, TINY_VAE, two_stage=("t2i-tiny", "i2v-tiny"),
                   **_TINY_SETTINGS))  # fmt: skip
# The embedded first-frame DiT: the t2v DiT fine-tuned on first frames alone (transformer_t2i/),
# with its own umT5 (text_encoder_t2i/), trained with it.
_register(TaskSpec("t2i-tiny", TINY_DIT, TINY_VAE, dit_dir="transformer_t2i",
                   text_dir="text_encoder_t2i", image_output=True,
                   **{**_TINY_SETTINGS, "frame_num": 1}))  # fmt: skip


# The embedded tiny I2V model (src/openwan/assets/wan-tiny-i2v): the Wan2.2 I2V layout without
# CLIP (in_dim 36: noisy latent + first-frame mask + first-frame latent), same VAE and umT5.
TINY_I2V_DIT = TINY_DIT.replace(model_type="i2v", in_dim=36, image_embedding=False)
# Its first frame is pinned to the given image's latent while sampling (measured on 36 prompts:
# first frame vs input 27.8 -> 33.1 dB PSNR, motion 0.389 -> 0.417).
# Its guide scale: 1.5 (held-out ShapesBench motion over six prompt sets of 18: 0.852, against 0.778
# at 5.0; all-correct 0.620 against 0.588; 1.0 gives the same motion on four sets, less all-correct).
_register(TaskSpec("i2v-tiny", TINY_I2V_DIT, TINY_VAE, dit_dir="transformer_i2v",
                   anchor_known_frames=True, **{**_TINY_SETTINGS, "guide_scale": 1.5}))  # fmt: skip


def infer_task(dit: DiTConfig, vae: VAEConfig, *, has_experts: bool = False) -> TaskSpec:
    """The official task whose architecture matches a checkpoint, else a custom T2V task.

    A custom task (e.g. a small model trained by the user) accepts any size divisible by the
    VAE stride x patch size and uses the Wan2.1 T2V sampling defaults.
    """
    for spec in TASKS.values():
        if spec.image_output or spec.is_moe != has_experts:
            continue
        if _same_arch(spec.dit, dit) and _same_vae_arch(spec.vae, vae):
            return spec
    return TaskSpec(
        name="custom",
        dit=dit,
        vae=vae,
        sizes=(),
        default_size="832*480",
        fps=24 if vae.version == "2.2" else 16,
        boundary=0.875 if has_experts else None,
        expert_dirs=("low_noise_model", "high_noise_model") if has_experts else None,
        text_dtype="fp32",
    )


def _same_arch(a: DiTConfig, b: DiTConfig) -> bool:
    """Equal configs, with ``image_embedding`` resolved (loaders fill it in from the weights)."""
    return a.replace(image_embedding=a.has_image_embedding) == b.replace(
        image_embedding=b.has_image_embedding
    )


def _same_vae_arch(a: VAEConfig, b: VAEConfig) -> bool:
    """Equal VAE architectures; the latent statistics are data (a retrained tiny VAE exports its
    measured ones), so they do not decide the task."""
    stats = {"latent_mean": (0.0,) * a.z_dim, "latent_std": (1.0,) * a.z_dim}
    return a.z_dim == b.z_dim and a.replace(**stats) == b.replace(**stats)


def parse_size(size: str) -> tuple[int, int]:
    """``"832*480"`` -> ``(832, 480)`` as (width, height)."""
    parts = size.lower().replace("x", "*").split("*")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"size must look like WIDTH*HEIGHT (e.g. 832*480), got {size!r}")
    return int(parts[0]), int(parts[1])


def get_task(name: str) -> TaskSpec:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(
            f"unknown task {name!r}; choose one of: {', '.join(sorted(TASKS))}"
        ) from None
