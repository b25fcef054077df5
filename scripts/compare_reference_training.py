r"""Times D3DP's reference training loop against ``launch.train``'s loop on the same data.

The reference side is the training body of D3DP's ``main.py`` (paTRICK-swk/D3DP),
driven from a checkout the user gives (imported at run time, nothing copied): its
``ChunkedGenerator_Seq`` (shuffled chunks of ``num_frames`` frames, flip augmentation)
over the training sequences of the config's dataset, root-relative 3D with the root
zeroed, screen-normalised 2D, ``D3DP(is_train=True)`` (MixSTE2 ``embed_dim`` wide and
``depth`` deep with its fixed 8 heads and drop-path 0.1), AdamW, the per-frame MPJPE
loss backpropagated with ``loss.backward(loss)`` and ``loss.item()`` every step, one
torch step per batch, under ``torch.set_num_threads(--torch_threads)``.

pose_jax's side is ``python -m launch.benchmark --mode=loop`` (the real
``pose_jax.training.loop.train`` with its grain input pipeline, logging and
checkpoint checks) in its own process on the same config, with the model set to the
reference's heads and drop-path so both do the same work, once per
``--steps_per_call`` and ``--microbatch_size`` value (default: the config's size).
The sides alternate ``--rounds`` times (reference, pose_jax
..., reference, ...); each side reports steps/s over ``--steps`` steps after
``--warmup`` untimed ones, and CPU time per step. Run it on an idle machine::

  python scripts/compare_reference_training.py --reference_dir=/src/D3DP
  python scripts/compare_reference_training.py --reference_dir=/src/D3DP \
      --steps_per_call=1,10 --microbatch_size=0,4 --rounds=3 --out=/tmp/compare_training

Needs ``torch``, ``einops`` and ``scipy`` in the same Python as pose_jax.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

_REPO_ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from launch import host_memory  # noqa: E402

if __name__ == "__main__":  # both sides under the same malloc setting (launch/host_memory.py)
    host_memory.ensure_hugepage_malloc("compare_reference_training.py")

import compare_reference_speed as speed  # noqa: E402  (reference import helpers)
import numpy as np  # noqa: E402

REFERENCE_HEADS = 8  # MixSTE2 in D3DP's common/diffusionpose.py
REFERENCE_DROP_PATH = 0.1  # D3DP(is_train=True)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reference_dir", required=True, help="A checkout of paTRICK-swk/D3DP.")
    ap.add_argument("--config", default="configs/quickstart.py", help="pose_jax experiment config.")
    ap.add_argument("--steps", type=int, default=300, help="Timed steps per side and round.")
    ap.add_argument("--warmup", type=int, default=50, help="Untimed steps first (multiple of 50).")
    ap.add_argument("--rounds", type=int, default=2, help="Alternations of the two sides.")
    ap.add_argument("--steps_per_call", default="1,10", help="pose_jax train.steps_per_call list.")
    ap.add_argument(
        "--microbatch_size", default="",
        help="pose_jax train.microbatch_size list (default: the config's), e.g. 0,4.",
    )  # fmt: skip
    ap.add_argument("--torch_threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", default=None, help="Directory for the JSON and markdown reports.")
    return ap


def parse_args(argv=None) -> argparse.Namespace:
    ap = build_parser()
    args = ap.parse_args(argv)
    for name in ("steps", "warmup", "rounds", "torch_threads"):
        if getattr(args, name) < 1:
            ap.error(f"--{name}={getattr(args, name)}; expected a positive integer.")
    if args.steps % 50 or args.warmup % 50:
        ap.error(f"--steps={args.steps}, --warmup={args.warmup}: expected multiples of 50.")
    args.steps_per_call = _int_list(ap, "steps_per_call", args.steps_per_call, "1,10", low=1)
    if not args.steps_per_call:
        ap.error(f"--steps_per_call={args.steps_per_call}; expected positive integers.")
    args.microbatch_size = _int_list(ap, "microbatch_size", args.microbatch_size, "0,4", low=0)
    args.reference_dir = check_reference_dir(args.reference_dir)
    return args


def _int_list(ap, flag: str, text: str, example: str, *, low: int) -> list[int]:
    """``'1,10'`` -> ``[1, 10]``; a bad entry or one below ``low`` stops with a usage error."""
    try:
        values = [int(v) for v in text.split(",") if v]
    except ValueError:
        ap.error(f"--{flag}={text!r}; expected integers, e.g. {example}.")
    if values and min(values) < low:
        bound = "positive integers" if low == 1 else f"integers >= {low}"
        ap.error(f"--{flag}={values}; expected {bound}.")
    return values


def check_reference_dir(path: str) -> str:
    root = os.path.abspath(os.path.expanduser(path))
    for rel in ("common/diffusionpose.py", "common/mixste.py", "common/generators.py"):
        if not os.path.isfile(os.path.join(root, rel)):
            raise SystemExit(
                f"--reference_dir={path}: {rel} is missing; expected a checkout of "
                "paTRICK-swk/D3DP (git clone https://github.com/paTRICK-swk/D3DP)."
            )
    return root


def training_sequences(config):
    """``(poses_3d, poses_2d)``: the reference's inputs from the config's training split.

    3D: camera frame, joints relative to the root and the root kept (``main.py``'s
    ``pos_3d[:, 1:] -= pos_3d[:, :1]``; the loop zeroes it); 2D: screen-normalised.
    """
    from data_pipelines import input_pipeline
    from pose_jax import camera

    store = input_pipeline.load_sequences(
        config.data.dataset, "train", data_dir=config.data.get("data_dir") or None
    )
    poses_3d, poses_2d = [], []
    for s, (p3, p2) in enumerate(zip(store.pose_3d, store.pose_2d, strict=True)):
        rel = np.array(p3, np.float64)
        rel[:, 1:] -= rel[:, :1]
        poses_3d.append(rel)
        w, h = int(store.res_w[s]), int(store.res_h[s])
        poses_2d.append(np.asarray(camera.normalize_screen_coordinates(p2, w, h), np.float64))
    return poses_3d, poses_2d


def build_reference_model(root: str, *, embed_dim: int, depth: int, frames: int, lr: float,
                          device: str = "cpu"):  # fmt: skip
    """``(model, optimizer)``: the reference's ``D3DP(is_train=True)`` and AdamW on ``device``."""
    torch = speed.require_torch()
    import record_d3dp_fixtures as d3dp_rec

    d3dp_rec._install_timm_stand_in()
    (diffusionpose,) = speed._import_reference(root, "common.diffusionpose")
    ref_args = argparse.Namespace(
        number_of_frames=frames, test_time_augmentation=False, timestep=1000, scale=1.0,
        cs=embed_dim, dep=depth,
    )  # fmt: skip
    model = diffusionpose.D3DP(ref_args, speed.JOINTS_LEFT, speed.JOINTS_RIGHT, is_train=True)
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)
    return model, optimizer


def reference_step(model, optimizer, batch_3d, batch_2d, device: str = "cpu") -> float:
    """One reference training step on float arrays ``[B, F, J, 3]`` / ``[B, F, J, 2]``.

    As D3DP's ``main.py``: the root zeroed, the per-frame MPJPE backpropagated with
    ``backward(loss)``, ``loss.item()`` read (which waits for a GPU), AdamW.
    """
    torch = speed.require_torch()
    inputs_3d = torch.from_numpy(batch_3d.astype("float32")).to(device)
    inputs_2d = torch.from_numpy(batch_2d.astype("float32")).to(device)
    inputs_3d[:, :, 0] = 0
    optimizer.zero_grad()
    with speed.reference_device(torch, device):
        pred = model(inputs_2d, inputs_3d)
    per_frame = torch.mean(torch.norm(pred - inputs_3d, dim=-1), dim=-1)
    per_frame.backward(per_frame.clone().detach())
    loss = torch.mean(per_frame).item()
    optimizer.step()
    speed.synchronize(torch, device)
    return loss


def reference_trainer(root: str, config, poses_3d, poses_2d):
    """``step()``: one reference training step on the next batch of its generator."""
    (generators,) = speed._import_reference(root, "common.generators")
    embed_dim, depth = _model_size(config)
    frames = int(config.data.num_frames)
    model, optimizer = build_reference_model(
        root, embed_dim=embed_dim, depth=depth, frames=frames, lr=float(config.optim.lr)
    )
    generator = generators.ChunkedGenerator_Seq(
        int(config.data.batch_size), None, poses_3d, poses_2d, frames, pad=0, causal_shift=0,
        shuffle=True, augment=True, kps_left=speed.JOINTS_LEFT, kps_right=speed.JOINTS_RIGHT,
        joints_left=speed.JOINTS_LEFT, joints_right=speed.JOINTS_RIGHT,
    )  # fmt: skip

    def batches():
        while True:
            yield from generator.next_epoch()

    stream = batches()

    def step() -> float:
        _, batch_3d, batch_2d = next(stream)
        return reference_step(model, optimizer, batch_3d, batch_2d)

    return step


def _model_size(config) -> tuple[int, int]:
    """``(embed_dim, depth)`` of the config's MixSTE denoiser."""
    from pose_jax import models
    from pose_jax.systems import base

    module = models.get_model(config.model.name, **base.model_kwargs(config))
    return int(module.embed_dim), int(module.depth)


def time_reference(step, warmup: int, steps: int) -> dict:
    for _ in range(warmup):
        step()
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    loss = None
    for _ in range(steps):
        loss = step()
    wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    return {
        "steps_per_s": steps / wall,
        "cpu_ms_per_step": (r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime) / steps * 1e3,
        "final_loss": loss,
        "load_1min": speed._loadavg1(),
    }


def time_pose_jax(args, k: int, microbatch_size: int) -> dict:
    """One ``launch.benchmark --mode=loop`` process; its report's numbers."""
    with tempfile.TemporaryDirectory(prefix="pose_jax_train_compare_") as out:
        cmd = [
            sys.executable, "-m", "launch.benchmark", "--mode=loop",
            f"--loop_config={args.config}", f"--loop_steps={args.steps}",
            f"--loop_warmup={args.warmup}", f"--steps_per_call={k}", "--repeats=20",
            f"--model_kwargs=num_heads={REFERENCE_HEADS}",
            f"--loop_set=model.drop_path_rate={REFERENCE_DROP_PATH},"
            f"train.microbatch_size={microbatch_size}",
            f"--out={out}",
        ]  # fmt: skip
        load = speed._loadavg1()
        done = subprocess.run(cmd, cwd=_REPO_ROOT, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(
                f"pose_jax's loop ({' '.join(cmd)}) failed with status {done.returncode}:\n"
                + done.stderr[-4000:]
            )
        with open(os.path.join(out, "benchmark.json")) as f:
            report = json.load(f)
    return {
        "steps_per_s": report["loop_steps_per_s"],
        "bare_step_steps_per_s": report["step_steps_per_s"],
        "cpu_ms_per_step": report["step_cpu_user_ms"] + report["step_cpu_sys_ms"],
        "final_loss": report["final_loss"],
        "load_1min": load,
    }


def run(args, log=print) -> dict:
    """Alternates the two sides ``args.rounds`` times; the report (JSON-able)."""
    from launch.benchmarks import loop as loop_bench

    torch = speed.require_torch()
    torch.set_num_threads(args.torch_threads)
    torch.manual_seed(0)
    config = loop_bench.load_experiment_config(args.config)
    poses_3d, poses_2d = training_sequences(config)
    step = reference_trainer(args.reference_dir, config, poses_3d, poses_2d)
    sides: dict[str, list[dict]] = {"reference": []}
    sizes = args.microbatch_size or [int(config.train.get("microbatch_size", 0))]
    variants = {
        f"pose_jax, steps_per_call={k}, microbatch_size={m}": (k, m)
        for k in args.steps_per_call
        for m in sizes
    }
    sides.update({label: [] for label in variants})
    for r in range(args.rounds):
        warmup = args.warmup if r == 0 else 0
        sides["reference"].append(time_reference(step, warmup, args.steps))
        log(f"round {r + 1}: reference {sides['reference'][-1]['steps_per_s']:.2f} steps/s")
        for label, (k, m) in variants.items():
            row = time_pose_jax(args, k, m)
            sides[label].append(row)
            log(f"round {r + 1}: {label}: {row['steps_per_s']:.2f} steps/s")
    summary = summarise(sides)
    return {
        "config": args.config,
        "model": config.model.name,
        "batch": int(config.data.batch_size),
        "frames": int(config.data.num_frames),
        "dataset": config.data.dataset,
        "sequences": len(poses_3d),
        "steps": args.steps,
        "warmup": args.warmup,
        "rounds": args.rounds,
        "torch_threads": args.torch_threads,
        "torch": torch.__version__,
        "cpu": speed._cpu_model(),
        "malloc_hugetlb": host_memory.describe(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "runs": sides,
        "summary": summary,
    }


def summarise(sides: dict[str, list[dict]]) -> list[dict]:
    """One row per side: median steps/s and CPU ms per step, and the ratio to the reference."""
    ref = statistics.median(r["steps_per_s"] for r in sides["reference"])
    rows = []
    for name, runs in sides.items():
        sps = statistics.median(r["steps_per_s"] for r in runs)
        rows.append({
            "side": name,
            "steps_per_s": sps,
            "steps_per_s_runs": [round(r["steps_per_s"], 3) for r in runs],
            "cpu_ms_per_step": statistics.median(r["cpu_ms_per_step"] for r in runs),
            "ratio_to_reference": sps / ref,
            "load_1min": [r["load_1min"] for r in runs],
        })  # fmt: skip
    return rows


def to_markdown(report: dict) -> str:
    lines = [
        f"{report['cpu']}, torch {report['torch']} ({report['torch_threads']} threads), "
        f"glibc malloc on huge pages (both sides): {report.get('malloc_hugetlb', 'off')}, "
        f"{report['date_utc']}; {report['config']} ({report['model']}, batch {report['batch']}, "
        f"{report['frames']} frames, {report['dataset']}, {report['sequences']} sequences); "
        f"{report['steps']} timed steps per run after {report['warmup']}, "
        f"{report['rounds']} alternating rounds.",
        "",
        "CPU ms/step: the reference's over its timed steps; pose_jax's of its bare "
        "one-update step (`launch.benchmark --mode=loop`).",
        "",
        "| side | steps/s (median) | runs | CPU ms/step | ratio to the reference | load |",
        "|---|---|---|---|---|---|",
    ]
    for r in report["summary"]:
        lines.append(
            f"| {r['side']} | {r['steps_per_s']:.2f} | {r['steps_per_s_runs']} | "
            f"{r['cpu_ms_per_step']:.0f} | {r['ratio_to_reference']:.2f}x | {r['load_1min']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    report = run(args, log=lambda m: print(m, file=sys.stderr, flush=True))
    md = to_markdown(report)
    print(md)
    if args.out:
        speed.write_outputs(args.out, "compare_reference_training", report, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
