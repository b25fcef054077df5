r"""Times D3DP's training step beside the reference's, in one process, on one device.

The reference side is one training step of D3DP's ``main.py`` (paTRICK-swk/D3DP,
imported at run time from the checkout given, nothing copied): ``D3DP(is_train=True)``
(MixSTE2 at the denoiser's width and depth, its fixed 8 heads, drop-path 0.1), the
per-frame MPJPE backpropagated, ``loss.item()`` read, AdamW. pose_jax's side is
``launch.benchmark --mode=train``'s step (the paper config's loss, optimizer and
gradient mode, state donated) at 8 heads; the reference's AdamW takes the config's
learning rate. Both take the same random batches
(``launch.benchmarks.training.train_batch``) of ``--clips`` clips of ``--frames``
frames; the sides' steps alternate (``pose_jax.benchmarking.time_interleaved``) after
the first call and ``--warmup`` untimed ones, and the median of ``--repeats`` is
reported. This
times the step at the paper batch, not the loop (``compare_reference_training.py``
times the loops with their input pipelines on the CPU).

``--device=cuda``: both on one GPU, float32 matmuls in TF32 on both sides (XLA's
default there), XLA given 45% of the GPU memory, peak memory of each side reported
(XLA's plan of the compiled step; ``torch.cuda.max_memory_allocated``)::

  python scripts/compare_reference_train_step.py --reference_dir=/src/D3DP --device=cuda
  python scripts/compare_reference_train_step.py --reference_dir=/src/D3DP \
      --denoiser=d3dp_tiny --clips=2 --frames=27 --repeats=3

Needs ``torch``, ``einops`` and ``scipy`` in the same Python as pose_jax.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import sys

_SCRIPTS_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _SCRIPTS_DIR)
sys.path.insert(0, os.path.dirname(_SCRIPTS_DIR))

from launch import host_memory  # noqa: E402

if __name__ == "__main__":  # both sides under the same malloc setting (launch/host_memory.py)
    host_memory.ensure_hugepage_malloc("compare_reference_train_step.py")

import compare_reference_speed as speed  # noqa: E402  (device, reference import helpers)
import compare_reference_training as training_compare  # noqa: E402  (the reference step)

REFERENCE_HEADS = training_compare.REFERENCE_HEADS


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="compare_reference_train_step.py", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--reference_dir", required=True, help="A checkout of paTRICK-swk/D3DP.")
    ap.add_argument("--device", default="cpu", choices=speed.DEVICES)
    ap.add_argument("--denoiser", default="d3dp", help="MixSTE denoiser (d3dp, d3dp_tiny).")
    ap.add_argument(
        "--clips", type=int, default=None, help="Clips per step (default: the paper batch, 4)."
    )
    ap.add_argument("--frames", type=int, default=243, help="Frames per clip.")
    ap.add_argument("--warmup", type=int, default=2, help="Untimed steps after the first.")
    ap.add_argument("--repeats", type=int, default=10, help="Timed steps per side (median).")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="Directory for the JSON and markdown reports.")
    return ap


def parse_args(argv=None) -> argparse.Namespace:
    ap = build_parser()
    args = ap.parse_args(argv)
    for name in ("clips", "frames", "repeats"):
        value = getattr(args, name)
        if value is not None and value < 1:
            ap.error(f"--{name}={value}; expected an integer >= 1.")
    if args.warmup < 0:
        ap.error(f"--warmup={args.warmup}; expected >= 0.")
    return args


def _pose_jax_side(args):
    """pose_jax's compiled step (``launch.benchmarks.training.StepCall``)."""
    from launch.benchmarks import training

    return training.step_call(
        "d3dp", args.clips, profile_name=speed.PROFILE_OF_DEVICE[args.device],
        frames=args.frames, denoiser=args.denoiser, seed=args.seed,
        model_kwargs={"num_heads": REFERENCE_HEADS},
    )  # fmt: skip


def _reference_side(args, root: str, ours):
    """``call(i)``: the reference's step on the batches pose_jax's step ``i`` takes."""
    from pose_jax import models

    module = models.get_model(args.denoiser)
    model, optimizer = training_compare.build_reference_model(
        root, embed_dim=int(module.embed_dim), depth=int(module.depth), frames=args.frames,
        lr=float(ours.config.optim.lr), device=args.device,
    )  # fmt: skip
    batches = ours.batches

    def call(i):
        batch = batches[i % len(batches)]
        return training_compare.reference_step(
            model, optimizer, batch["pose_3d"], batch["pose_2d"], args.device
        )

    return call


def run(args, argv=None, log=print) -> dict:
    """Checks the inputs, times both sides and returns the report (JSON-able)."""
    from pose_jax.benchmarking import time_interleaved

    root = training_compare.check_reference_dir(args.reference_dir)
    torch = speed.require_torch()
    torch_setting = speed.set_torch_device(torch, args.device)
    jax = speed._jax_setup(args.device)

    ours = _pose_jax_side(args)
    row, clips = ours.row, ours.row["batch"]
    reference = _reference_side(args, root, ours)
    log(f"[d3dp train step] {clips} x {args.frames} frames on {args.device} ...")
    t = time_interleaved(
        {"pose_jax": ours.call, "reference": reference}, warmup=args.warmup, repeats=args.repeats
    )
    gflop = None if row["gmacs_per_step"] is None else 2 * row["gmacs_per_step"]
    result = {
        side: {
            "first_call_s": t[side].first_call_s,
            "median_s": t[side].median_s,
            "steps_per_s": 1.0 / t[side].median_s,
            "samples_per_s": clips / t[side].median_s,
            "tflops": None if gflop is None else gflop / t[side].median_s / 1e3,
            "times_s": list(t[side].times_s),
        }
        for side in ("pose_jax", "reference")
    }
    result["pose_jax"].update(compile_s=row["compile_s"], memory_mib=row["xla_memory_mib"])
    if args.device == "cuda":
        result["reference"]["memory_mib"] = torch.cuda.max_memory_allocated() / 2**20
    argv = sys.argv[1:] if argv is None else list(argv)
    return {
        "system": "d3dp",
        "denoiser": args.denoiser,
        "clips": clips,
        "frames": args.frames,
        "device": args.device,
        "gflop_per_step": gflop,
        "speed_ratio": speed.speed_ratio(t["pose_jax"].median_s, t["reference"].median_s),
        "warmup": args.warmup,
        "repeats": args.repeats,
        "date_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M"),
        "command": "python scripts/compare_reference_train_step.py " + shlex.join(argv),
        "environment": {
            "torch_version": torch.__version__,
            **torch_setting,
            "jax_version": jax.__version__,
            "jax_device": jax.devices()[0].device_kind,
            "cpu_model": speed._cpu_model(),
            "cpu_count": os.cpu_count(),
            "malloc_hugetlb": host_memory.describe(),
        },
        "sides": result,
    }


def to_markdown(report: dict) -> str:
    """The report as a markdown section: setup, command, one row per side, the ratio."""
    env = report["environment"]
    head = (
        f"### d3dp training step ({report['denoiser']}, {report['clips']} clips x "
        f"{report['frames']} frames): reference paTRICK-swk/D3DP vs pose_jax\n\n"
        f"Device: {env['torch_device']} (jax: {env['jax_device']}); torch "
        f"{env['torch_version']}, jax {env['jax_version']}; TF32 matmuls: "
        f"{'both sides' if env['torch_tf32'] else 'no (CPU)'}; glibc malloc on huge pages: "
        f"{env['malloc_hugetlb']}; {report['date_utc']} UTC; "
        f"median of {report['repeats']} alternated steps after {report['warmup']} warm-up; "
        f"random data. Command: `{report['command']}`"
    )
    lines = [
        "| side | first call s | median s/step | steps/s | samples/s | TFLOP/s | memory MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for side in ("reference", "pose_jax"):
        r = report["sides"][side]
        cells = [r["first_call_s"], r["median_s"], r["steps_per_s"], r["samples_per_s"]]
        cells += [r["tflops"], r.get("memory_mib")]
        lines.append(f"| {side} | " + " | ".join(speed._fmt(c) for c in cells) + " |")
    ratio = (
        f"Speed ratio (pose_jax steps/s / reference steps/s): {report['speed_ratio']:.2f}x "
        "(target of issue #19 on a GPU: 1.5x)."
    )
    return head + "\n\n" + "\n".join(lines) + "\n\n" + ratio + "\n"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    try:
        report = run(args, argv)
    except (speed.ReferenceDirError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    md = to_markdown(report)
    print(md)
    if args.out:
        speed.write_outputs(args.out, "compare_reference_train_step", report, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
