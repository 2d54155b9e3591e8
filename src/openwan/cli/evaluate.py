"""``openwan eval shapesbench`` (score a model on shapes-world prompts), ``openwan eval continuation``
(seams of I2V continuation), ``openwan eval vae`` (reconstruction of held-out shapes clips) and
``openwan eval s2v`` (lip sync, identity, seams and A/V sync on held-out talking audio)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def _guide_flag(
    parser: argparse.ArgumentParser, text: str = "CFG scale (default: the task's)"
) -> None:
    parser.add_argument("--guide-scale", "--sample_guide_scale", dest="guide_scale", type=float,
                        default=None, help=text)  # fmt: skip


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("eval", help="evaluate a model")
    ev = p.add_subparsers(dest="bench", metavar="BENCH", required=True)
    sb = ev.add_parser(
        "shapesbench", help="colour/shape/motion/background accuracy on shapes prompts"
    )
    sb.add_argument("--ckpt-dir", "--ckpt_dir", dest="ckpt_dir", default=None,
                    help="model folder (default: the embedded tiny model)")  # fmt: skip
    sb.add_argument("--task", default=None)
    sb.add_argument("--two-stage", "--two_stage", dest="two_stage", choices=("on", "off"),
                    default=None, help="t2v-tiny: two stages (first frame, then I2V; the default "
                    "where the folder has both DiTs) or the t2v DiT alone (off)")  # fmt: skip
    sb.add_argument("--prompts", type=int, default=10, help="prompts per split (seen / held-out)")
    sb.add_argument(
        "--two-shape-prompts",
        "--two_shape_prompts",
        dest="two_shape_prompts",
        type=int,
        default=0,
        help="two-shape prompts per split (seen-2 / held-out-2), scored apart",
    )
    sb.add_argument("--languages", default="en,zh")
    sb.add_argument("--steps", type=int, default=None)
    _guide_flag(sb)
    sb.add_argument("--seed", type=int, default=0)
    sb.add_argument("--ground-truth", action="store_true",
                    help="score rendered ground-truth videos instead (validates the analyzer)")  # fmt: skip
    sb.add_argument("--out", default=None, help="save the full report as JSON")
    sb.set_defaults(func=run_shapesbench_cmd)
    ct = ev.add_parser(
        "continuation",
        help="I2V video continuation: how visible the joints between rounds are",
    )
    ct.add_argument("--ckpt-dir", "--ckpt_dir", dest="ckpt_dir", default=None,
                    help="I2V model folder (default: the embedded tiny I2V model)")  # fmt: skip
    ct.add_argument("--task", default="i2v-tiny")
    ct.add_argument("--prompts", type=int, default=6, help="shapes prompts (held-out combos)")
    ct.add_argument(
        "--rounds", type=int, default=3, help="continuation rounds after the first clip"
    )
    ct.add_argument("--cond-frames", "--cond_frames", dest="cond_frames", type=int, default=1,
                    help="frames of the video so far each round conditions on")  # fmt: skip
    ct.add_argument("--steps", type=int, default=None)
    _guide_flag(ct)
    ct.add_argument("--seed", type=int, default=0)
    ct.add_argument("--out", default=None, help="save the per-video ratios as JSON")
    ct.set_defaults(func=run_continuation_cmd)

    va = ev.add_parser("vae", help="VAE reconstruction PSNR / SSIM on held-out shapes clips")
    va.add_argument("--vae", default=None,
                    help="a diffusers vae/ folder, a model folder holding vae/, or an official "
                         "Wan2.1_VAE.pth (default: the embedded tiny VAE)")  # fmt: skip
    va.add_argument("--clips", type=int, default=32, help="held-out clips to reconstruct")
    va.add_argument("--frames", type=int, default=17, help="frames per clip (4k+1)")
    va.add_argument("--two-shapes", "--two_shapes", dest="two_shapes", type=float, default=0.0,
                    help="share of two-shape clips")  # fmt: skip
    va.add_argument(
        "--world",
        choices=("shapes", "talking"),
        default="shapes",
        help="held-out clips of the shapes world, or talking faces (adds the lip "
        "sync of the reconstructions: the S2V VAE's ceiling)",
    )
    va.add_argument("--seed", type=int, default=11)
    va.add_argument("--out", default=None, help="save the per-clip scores as JSON")
    va.set_defaults(func=run_vae_cmd)

    s2 = ev.add_parser(
        "s2v",
        help="lip sync, identity, clip seams and A/V sync of an S2V model on held-out talking audio",
    )
    s2.add_argument(
        "--ckpt-dir",
        "--ckpt_dir",
        dest="ckpt_dir",
        default=None,
        help="S2V folder; default: the embedded s2v-tiny",
    )
    s2.add_argument("--items", type=int, default=8, help="held-out audio tracks")
    s2.add_argument("--clips", type=int, default=3, help="clips per video")
    s2.add_argument(
        "--infer-frames",
        "--infer_frames",
        dest="infer_frames",
        type=int,
        default=16,
        help="frames per clip",
    )
    s2.add_argument("--steps", type=int, default=None)
    _guide_flag(
        s2, "CFG scale (prompt + audio vs negative prompt + zero audio); default: official 4.5"
    )
    s2.add_argument("--seed", type=int, default=0)
    s2.add_argument(
        "--keep-dir",
        "--keep_dir",
        dest="keep_dir",
        default=None,
        help="keep the references, audio and generated mp4s here",
    )
    s2.add_argument("--out", default=None, help="save the per-video scores as JSON")
    s2.set_defaults(func=run_s2v_cmd)


def run_s2v_cmd(args: argparse.Namespace) -> int:
    """Held-out talking-shapes audio -> S2V videos -> sync / identity / seams / A/V offset."""
    import json

    from openwan.assets import tiny_model_dir
    from openwan.checkpoint.io import atomic_path
    from openwan.eval.talking import evaluate_s2v
    from openwan.pipelines.s2v import WanS2V

    pipe = WanS2V.from_pretrained(args.ckpt_dir or tiny_model_dir("s2v"))
    report = evaluate_s2v(
        pipe,
        items=args.items,
        clips=args.clips,
        clip_frames=args.infer_frames,
        steps=args.steps,
        guide_scale=args.guide_scale,
        seed=args.seed,
        keep_dir=Path(args.keep_dir) if args.keep_dir else None,
    )
    print(f"{'item':>4s} {'sync':>6s} {'identity':>8s} {'worst joint':>11s} {'A/V frames':>10s}")
    for r in report["items"]:
        worst = max(r["joint_ratios"]) if r["joint_ratios"] else 0.0
        print(
            f"{r['item']:4d} {r['sync']:6.3f} {r['identity']:8.3f} {worst:11.2f} "
            f"{r['av_offset_frames']:10.2f}"
        )
    print(
        f"sync mean {report['sync_mean']:.3f} (min {report['sync_min']:.3f}); identity "
        f"{report['identity_mean']:.3f}; seamless videos {report['share_seamless']:.2f}; "
        f"largest A/V offset {report['max_av_offset_frames']:.2f} frames"
    )
    if args.out:
        with atomic_path(args.out) as tmp:
            tmp.write_text(json.dumps(report, indent=1))
        print(f"saved {args.out}")
    return 0


def run_continuation_cmd(args: argparse.Namespace) -> int:
    """Per prompt: the ground truth's first frame -> one I2V clip -> ``--rounds`` continuation
    rounds; each joint's frame change over the median change inside the clips (<= 2: no seam),
    for the raw joined video and for the blended one (``blend_joints``, what ``extend`` returns
    by default), where the largest change within one frame of the joint is taken."""
    import json

    import numpy as np
    from PIL import Image
    from tqdm import tqdm

    from openwan.checkpoint.io import atomic_path
    from openwan.data import shapes
    from openwan.eval.metrics import continuation_joints, seam_ratios
    from openwan.pipelines.i2v import WanI2V, blend_joints
    from openwan.pipelines.request import GenerationRequest

    pipe = WanI2V.from_pretrained(args.ckpt_dir, task=args.task)
    world = shapes.ShapesWorld(seed=args.seed + 1000, split="heldout")
    rows: list[dict[str, Any]] = []
    worst: list[tuple[float, float]] = []
    for k in tqdm(range(args.prompts), desc="continuation", unit="video", file=sys.stderr):
        video, _, scene = world[k]
        prompt = shapes.caption(scene, "en", k)
        first = pipe(prompt, image=Image.fromarray(video[0]), steps=args.steps,
                     guide_scale=args.guide_scale, seed=args.seed + k)  # fmt: skip
        request = GenerationRequest(
            prompt, steps=args.steps, guide_scale=args.guide_scale, seed=args.seed + k + 1
        )
        result = pipe.extend(
            request, first, num_rounds=args.rounds, cond_frames=args.cond_frames, blend=False
        )
        long = result.video
        joints = continuation_joints(first.shape[1], args.rounds, args.cond_frames)
        assert list(result.joints) == joints
        raw = seam_ratios(long, joints)
        blended = seam_ratios(blend_joints(long, joints), joints, window=1)
        rows.append({"prompt": prompt, "frames": int(long.shape[1]), "joint_ratios": raw,
                     "blended_joint_ratios": blended})  # fmt: skip
        worst.append((max(raw), max(blended)))
    print(f"{'prompt':64s} {'worst joint / median':>20s} {'blended':>8s}")
    for r, (w_raw, w_blend) in zip(rows, worst):
        print(f"{r['prompt'][:64]:64s} {w_raw:20.2f} {w_blend:8.2f}")
    ok = float(np.mean([w <= 2.0 for w, _ in worst]))
    ok_blend = float(np.mean([w <= 2.0 for _, w in worst]))
    print(f"videos with every joint within 2x the median frame change: raw {ok:.2f}, blended "
          f"{ok_blend:.2f} (largest change within one frame of each joint)")  # fmt: skip
    if args.out:
        with atomic_path(args.out) as tmp:
            report = {"videos": rows, "share_seamless": ok, "share_seamless_blended": ok_blend}
            tmp.write_text(json.dumps(report, indent=1))
        print(f"saved {args.out}")
    return 0


def run_shapesbench_cmd(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm import tqdm

    from openwan.data import shapes
    from openwan.eval.shapesbench import format_table, run_shapesbench, save_report
    from openwan.io.video import to_uint8_frames

    def truth(prompt: str, seed: int) -> np.ndarray:
        """The rendered ground truth of a prompt (positions drawn from the seed)."""
        scene = shapes.parse_prompt(prompt)
        assert scene is not None
        return shapes.render(shapes.place(scene, np.random.default_rng(seed)))

    first_psnr: list[float] = []
    if args.ground_truth:
        generate = truth
    elif args.task is not None and args.task.startswith("i2v"):
        # image-to-video: the model gets the ground truth's first frame and the prompt; its own
        # first frame is also scored against that input (PSNR)
        from PIL import Image

        from openwan.eval.metrics import psnr
        from openwan.pipelines.i2v import WanI2V

        i2v = WanI2V.from_pretrained(args.ckpt_dir, task=args.task)

        def generate(prompt: str, seed: int) -> np.ndarray:
            first = truth(prompt, seed)[0]
            out = to_uint8_frames(
                i2v(
                    prompt,
                    image=Image.fromarray(first),
                    steps=args.steps,
                    guide_scale=args.guide_scale,
                    seed=seed,
                )
            )
            first_psnr.append(psnr(shapes.to_tensor(out[:1]), shapes.to_tensor(first[None])))
            return out

    else:
        from openwan.pipelines.t2v import WanT2V
        from openwan.pipelines.two_stage import WanTwoStageT2V, wants_two_stage

        two_stage = wants_two_stage(args.ckpt_dir, args.task, args.two_stage)
        pipe_cls: Any = WanTwoStageT2V if two_stage else WanT2V
        pipe = pipe_cls.from_pretrained(args.ckpt_dir, task=args.task)

        def generate(prompt: str, seed: int) -> np.ndarray:
            return to_uint8_frames(
                pipe(prompt, steps=args.steps, guide_scale=args.guide_scale, seed=seed)
            )

    langs = tuple(x.strip() for x in args.languages.split(",") if x.strip())
    bar = tqdm(
        total=2 * (args.prompts + args.two_shape_prompts) * len(langs),
        desc="shapesbench",
        unit="video",
        file=sys.stderr,
    )
    report = run_shapesbench(
        generate,
        n_prompts_per_split=args.prompts,
        n_two_shapes=args.two_shape_prompts,
        languages=langs,
        seed=args.seed,
        progress=lambda i, n: bar.update(1),
    )
    bar.close()
    print(format_table(report))
    if first_psnr:
        report["first_frame_psnr_db"] = float(np.mean(first_psnr))
        print(f"first frame vs the input image: {report['first_frame_psnr_db']:.2f} dB PSNR (mean)")
    if args.out:
        save_report(report, args.out)
        print(f"saved {args.out}")
    return 0


def _vae_path(arg: str | None) -> Path:
    from openwan.assets import tiny_model_dir

    path = tiny_model_dir() / "vae" if arg is None else Path(arg)
    if path.is_dir() and not (path / "config.json").is_file() and (path / "vae").is_dir():
        path = path / "vae"  # a whole model folder
    return path


def vae_reconstruction(
    vae: Any,
    clips: int,
    frames: int,
    two_shapes: float,
    seed: int,
    progress: Any = None,
    world: str = "shapes",
) -> list[dict[str, float]]:
    """Per held-out clip: PSNR and SSIM of ``decode(encode(clip))`` against the clip, and the
    PSNR of its first frame alone (the frame an I2V model is given). ``world="talking"``: talking
    faces instead of shapes, plus ``sync``, the lip sync of the reconstruction with the audio."""
    import torch

    from openwan.data import talking
    from openwan.data.shapes import ShapesWorld, to_tensor
    from openwan.eval.metrics import psnr, ssim
    from openwan.io.video import to_uint8_frames

    shapes = ShapesWorld(seed=seed, frames=frames, size=64, split="heldout", two_shapes=two_shapes)
    faces = talking.TalkingWorld(seed=seed, seconds=(frames - 1) / talking.FPS, split="heldout")
    rows = []
    with torch.no_grad():
        for i in range(clips):
            item = faces[i] if world == "talking" else None
            video = to_tensor(item.video if item is not None else shapes[i][0])
            recon = vae.decode(vae.encode(video[None]))[0].clamp(-1, 1)
            row = {
                "psnr_db": psnr(recon, video), "ssim": ssim(recon, video),
                "first_frame_psnr_db": psnr(recon[:, :1], video[:, :1]),
            }  # fmt: skip
            if item is not None:
                opening = talking.measure_mouth(to_uint8_frames(recon), item.face)
                row["sync"] = talking.sync_score(
                    opening, talking.audio_envelope(item.audio, frames)
                )
            rows.append(row)
            if progress is not None:
                progress()
    return rows


def run_vae_cmd(args: argparse.Namespace) -> int:
    import json

    import numpy as np
    from tqdm import tqdm

    from openwan.checkpoint.io import atomic_path
    from openwan.checkpoint.vae_format import load_vae

    if args.clips < 1:
        raise ValueError(f"--clips must be at least 1, got {args.clips}")
    if args.frames < 1 or (args.frames - 1) % 4:
        raise ValueError(f"--frames must be 4k+1 (1, 5, 9, 17, ...), got {args.frames}")
    path = _vae_path(args.vae)
    vae = load_vae(path).eval()
    bar = tqdm(total=args.clips, desc="eval vae", unit="clip", file=sys.stderr)
    rows = vae_reconstruction(
        vae, args.clips, args.frames, args.two_shapes, args.seed, lambda: bar.update(1), args.world
    )
    bar.close()
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    worst = float(min(r["psnr_db"] for r in rows))
    print(f"{path}: {args.clips} held-out {args.frames}-frame {args.world} clips (two-shape "
          f"share {args.two_shapes:g})")  # fmt: skip
    print(f"PSNR {mean['psnr_db']:.2f} dB (worst clip {worst:.2f}), SSIM {mean['ssim']:.4f}, "
          f"first frame {mean['first_frame_psnr_db']:.2f} dB")  # fmt: skip
    if "sync" in mean:
        low = min(r["sync"] for r in rows)
        print(f"lip sync of the reconstructions {mean['sync']:.3f} (worst clip {low:.3f})")
    if args.out:
        with atomic_path(args.out) as tmp:
            tmp.write_text(json.dumps({"vae": str(path), "mean": mean, "clips": rows}, indent=1))
        print(f"saved {args.out}")
    return 0
