"""The image-conditioned part of ``openwan generate``: I2V, FLF2V and video continuation.

Chosen when the task is an I2V-type task, when ``--first_frame``/``--last_frame``/``--extend_video``
is given, or when the checkpoint's DiT takes the I2V input channels (mask + image latent).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

IMAGE_TASKS = ("i2v-14B", "flf2v-14B", "i2v-A14B", "i2v-tiny")
I2V_IN_DIM = 36  # 16 noise + 4 mask + 16 image-latent channels


def add_image_args(p: argparse.ArgumentParser, flag: Callable[..., None]) -> None:
    flag(p, "first_frame", default=None, help="FLF2V: the first frame (same as --image)")
    flag(p, "last_frame", default=None, help="FLF2V: the last frame")
    flag(
        p,
        "extend_video",
        default=None,
        help="continue this video (I2V models): condition on its last --cond-frames frames",
    )
    flag(
        p,
        "num_rounds",
        type=int,
        default=1,
        help="I2V continuation: clips to generate, each conditioned on the end of the previous",
    )
    flag(
        p,
        "cond_frames",
        type=int,
        default=1,
        help="continuation: frames of the previous clip each new clip starts from (4n+1 keeps "
        "whole latent frames; default 1 = plain I2V from the last frame)",
    )
    flag(
        p,
        "blend_joints",
        choices=("on", "off"),
        default="on",
        help="continuation: soften each joint by averaging the frame either side of it with its "
        "neighbours (1-2-1); off keeps every conditioning frame exactly",
    )
    flag(
        p,
        "anchor_frames",
        choices=("on", "off"),
        default=None,
        help="pin the given leading frames to their latents while sampling, so the video starts "
        "exactly on the image (default: on for i2v-tiny, off for the official models)",
    )


def wants_image_pipeline(args: argparse.Namespace) -> bool:
    if args.task in IMAGE_TASKS or args.first_frame or args.last_frame or args.extend_video:
        return True
    if args.ckpt_dir is None or args.task is not None:
        return False
    from openwan.checkpoint.layout import locate
    from openwan.configs.dit import DiTConfig

    config = DiTConfig.from_json(locate(args.ckpt_dir).dit / "config.json")
    return config.in_dim == I2V_IN_DIM


def read_inputs(args: argparse.Namespace) -> dict[str, Any]:
    """Read every input file before any model is loaded (an unreadable one fails first)."""
    import torch

    from openwan.pipelines.image_cond import load_image

    if args.image and args.first_frame:
        raise ValueError("give the first frame once: --image or --first-frame, not both")
    if args.num_rounds < 1:
        raise ValueError(f"--num-rounds must be >= 1, got {args.num_rounds}")
    first = args.image or args.first_frame
    video = None
    if args.extend_video:
        if first or args.last_frame:
            raise ValueError("--extend-video continues a video; do not give images with it")
        from openwan.io.video import read_video

        frames, _ = read_video(args.extend_video)  # [F, H, W, 3] uint8
        video = torch.from_numpy(frames).permute(3, 0, 1, 2).float().div(127.5).sub(1.0)
    elif first is None:
        raise ValueError(
            "this task starts from an image: pass --image FILE (or --first-frame/--last-frame)"
        )
    return {
        "image": load_image(first) if first else None,
        "last": load_image(args.last_frame) if args.last_frame else None,
        "video": video,
    }


def run_image_task(
    pipe: Any, args: argparse.Namespace, request: Any, inputs: dict[str, Any], on_step: Any
) -> Any:
    """Generate with a WanI2V pipeline; several rounds continue the video from its last frames."""
    if args.anchor_frames is not None:
        pipe.anchor_frames = args.anchor_frames == "on"
    if inputs["video"] is not None:
        return pipe.extend(
            request,
            inputs["video"],
            num_rounds=args.num_rounds,
            cond_frames=args.cond_frames,
            blend=args.blend_joints == "on",
            callback=on_step,
        )
    result = pipe.generate(
        request, image=inputs["image"], last_image=inputs["last"], callback=on_step
    )
    if args.num_rounds == 1:
        return result
    # later rounds continue the first clip (its size is a valid size within the same area), with
    # seeds following the first clip's
    more = replace(request, seed=result.request.seed + 1)
    return pipe.extend(
        more,
        result.video,
        num_rounds=args.num_rounds - 1,
        cond_frames=args.cond_frames,
        blend=args.blend_joints == "on",
        callback=on_step,
    )


def input_metadata(args: argparse.Namespace) -> dict[str, str]:
    meta = {}
    for name in ("image", "first_frame", "last_frame", "extend_video"):
        value = getattr(args, name)
        if value is not None:
            meta[name] = str(Path(value))
    if args.num_rounds > 1 or args.extend_video:
        meta["num_rounds"] = str(args.num_rounds)
        meta["cond_frames"] = str(args.cond_frames)
        meta["blend_joints"] = args.blend_joints
    return meta
