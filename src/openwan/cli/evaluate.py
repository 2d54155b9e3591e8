"""``openwan eval shapesbench``: score a model on shapes-world prompts."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("eval", help="evaluate a model")
    ev = p.add_subparsers(dest="bench", metavar="BENCH", required=True)
    sb = ev.add_parser(
        "shapesbench", help="colour/shape/motion/background accuracy on shapes prompts"
    )
    sb.add_argument("--ckpt-dir", "--ckpt_dir", dest="ckpt_dir", default=None,
                    help="model folder (default: the embedded tiny model)")  # fmt: skip
    sb.add_argument("--task", default=None)
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
    sb.add_argument("--seed", type=int, default=0)
    sb.add_argument("--ground-truth", action="store_true",
                    help="score rendered ground-truth videos instead (validates the analyzer)")  # fmt: skip
    sb.add_argument("--out", default=None, help="save the full report as JSON")
    sb.set_defaults(func=run_shapesbench_cmd)


def run_shapesbench_cmd(args: argparse.Namespace) -> int:
    import numpy as np
    import torch
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
                i2v(prompt, image=Image.fromarray(first), steps=args.steps, seed=seed)
            )
            a, b = (
                torch.from_numpy(f).permute(2, 0, 1)[:, None] / 127.5 - 1 for f in (out[0], first)
            )
            first_psnr.append(psnr(a, b))
            return out

    else:
        from openwan.pipelines.t2v import WanT2V

        pipe = WanT2V.from_pretrained(args.ckpt_dir, task=args.task)

        def generate(prompt: str, seed: int) -> np.ndarray:
            return to_uint8_frames(pipe(prompt, steps=args.steps, seed=seed))

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
