r"""Times pose_jax's systems: the compiled samplers (``--mode=sample``) or training step.

``--mode=sample`` (default), random parameters unless ``--workdir`` is given:

* GCN refiners (``--system=mmdiff|diffpose_frame|diffpose_video``): DDIM steps
  ``S1..S4`` (seq ``range(0, 12, 12 // S)``: T_test 12, the GT setting of
  monoMotionDiff's speed table, Tab. 3 of its ICASSP'24 paper,
  github.com/jjkislele/monoMotionDiff) on batches of poses with flip TTA over the
  chain; the lifter is not timed (``system.sampler_inputs`` makes ``x_init`` outside
  the timed call: random xyz, or the run's lifter).
* D3DP / FinePOSE (``--system=d3dp|finepose``): an ``H x K`` grid on ``--clips``
  clips of ``--frames`` frames with flip TTA in every step (FinePOSE's prompt
  features are computed once, outside the timed call).

Each row: first call (trace + compile + one run), median steady-state time per
sampler call (``block_until_ready``), poses/s (poses = batch x frames; the GCN
table's "FPS" is read as batches of 1024 poses per second, so ``batches1024_per_s``
= poses/s / 1024), MACs counted by XLA's ``cost_analysis`` of one denoiser call
times the number of calls, FLOP utilisation against the profile's peak for the
device kind, and peak device memory where the backend reports it. With
``--dtype=bfloat16`` the same inputs also go through a float32 sampler and the
max / mean absolute difference is reported.

``--workdir=RUN`` (a ``launch.train`` run directory): the run's ``config.json``
and latest checkpoint (EMA params when its ``eval.use_ema``) are used instead of
the paper config and random parameters, and every row also gets the MPJPE (mm)
of the run on its evaluation split with that row's sampler settings, computed as
``launch.evaluate`` computes it (same sample function, windows and key; nothing is
written to ``RUN/eval``): GCN rows at T_test 12 with S steps (beside the published
MPJPE), D3DP / FinePOSE rows with H hypotheses and K iterations (P-Agg, J-Agg and
the J-Best oracle). ``--eval_max_batches`` caps the sampler calls of each evaluation.

``--mode=train`` times one jitted training step (``train_step.make_train_step``
with the config's optimizer, EMA and gradient mode, as ``pose_jax.training.loop``
builds it; state donated; batches of random data placed on the device
beforehand, so no input pipeline is timed; compilation timed apart) at the
paper batch size of the system's config (``config.data.batch_size``) or
``--batch``; one device. DiffPose-family systems train their diffusion stage on
single frames (the GMM of ``diffpose_frame`` is fitted to the random batch first).
``--compile_only`` compiles the step for abstract shapes and reports compile time,
MACs and XLA's memory estimate without allocating or running anything.

Writes ``benchmark.json`` and ``benchmark.md`` under ``--out``. This module is the
CLI; the benchmarks are in :mod:`launch.benchmarks` (``common``: the systems' table
layouts and published numbers, ``sampling``, ``training``).

  python -m launch.benchmark --system=mmdiff --batch=256,1024
  python -m launch.benchmark --system=d3dp --grid=H1K1,H5K5 --clips=1
  python -m launch.benchmark --system=d3dp --profile=gpu --grid=H1K1,H5K5,H20K10 --clips=4
  python -m launch.benchmark --workdir=runs/quickstart --grid=H1K1,H3K3 --eval_max_batches=50
  python -m launch.benchmark --mode=train --system=d3dp --batch=1 --repeats=2 --warmup=0
  python -m launch.benchmark --mode=train --system=d3dp --compile_only
  python -m launch.benchmark --mode=train --system=d3dp --compile_only --model_kwargs=remat=block
  python -m launch.benchmark --mode=train --system=finepose --denoiser=finepose_tiny --batch=16
  python -m launch.benchmark --mode=loop --loop_config=configs/quickstart.py --repeats=100

``--mode=loop`` runs the whole training loop of an experiment config (``launch.train``'s
``loop.train`` with its grain input pipeline, transfers, logging and preemption check)
and reports its steps/s beside the bare step's (:mod:`launch.benchmarks.loop`).
"""

from __future__ import annotations

import json
import os

from absl import app, flags

from configs import profiles
from launch import host_memory
from launch.benchmarks import common
from launch.benchmarks.common import PUBLISHED  # noqa: F401  (re-exported)
from launch.benchmarks.sampling import (  # noqa: F401  (re-exported)
    evaluate_mpjpe,
    load_run_config,
    run_benchmark,
    sample_markdown,
)
from launch.benchmarks.training import run_train_benchmark, train_markdown

GCN_T_TEST = common.T_TEST  # the speed table's GT config: refinement from t = 6

_MODE = flags.DEFINE_enum(
    "mode",
    "sample",
    ["sample", "train", "loop"],
    "Time the samplers, the training step, or the whole training loop (input pipeline "
    "included) of --loop_config.",
)
_SYSTEM = flags.DEFINE_enum(
    "system",
    None,
    sorted(common.CONFIGS),
    "System to benchmark (default: the --workdir run's, else mmdiff).",
)
_PROFILE = flags.DEFINE_enum("profile", "cpu", profiles.PROFILES, "Hardware profile.")
_GRID = flags.DEFINE_list(
    "grid",
    None,
    "Sample mode. D3DP/FinePOSE: HxKy entries (default H1K1,H5K5); GCN: Sn (default S1..S4).",
)
_BATCH = flags.DEFINE_list(
    "batch",
    None,
    "Sample mode, GCN: poses per call (default: the profile's). Train mode: samples per "
    "step (clips for D3DP/FinePOSE, frames for the GCNs; default: the config's paper batch).",
)
_CLIPS = flags.DEFINE_integer(
    "clips", None, "Sample mode, D3DP/FinePOSE: clips per call (default: the profile's)."
)
_FRAMES = flags.DEFINE_integer(
    "frames", None, "D3DP/FinePOSE: frames per clip (default: 243, or the --workdir run's)."
)
_DENOISER = flags.DEFINE_string(
    "denoiser", None, "Registry name overriding the config's model (e.g. d3dp_tiny, mmdiff_tiny)."
)
_DTYPE = flags.DEFINE_enum(
    "dtype", None, ["float32", "bfloat16"], "Sample mode: compute dtype (default: the profile's)."
)
_NO_FLIP = flags.DEFINE_bool("no_flip", False, "Sample mode: disable flip TTA.")
_WARMUP = flags.DEFINE_integer("warmup", 1, "Untimed calls after the compiling call.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed calls; the median is reported.")
_PEAK_TFLOPS = flags.DEFINE_float(
    "peak_tflops", None, "Peak TFLOP/s to assume (overrides the profile's table)."
)
_WORKDIR = flags.DEFINE_string(
    "workdir",
    None,
    "Sample mode: a launch.train run directory; its checkpoint is timed and its MPJPE "
    "computed for every row.",
)
_EVAL_MAX_BATCHES = flags.DEFINE_integer(
    "eval_max_batches", 0, "With --workdir: sampler calls per evaluation at most (0: all)."
)
_FAKE_DEVICES = flags.DEFINE_integer(
    "fake_devices",
    0,
    "If > 0, ask XLA for this many host (CPU) devices (the samplers shard their batch over "
    "all devices); set before jax starts.",
)
_DEVICES = flags.DEFINE_integer(
    "devices", 1, "Train mode: devices of the mesh the batch is split over (CPU: --fake_devices)."
)
_PARAM_SHARDING = flags.DEFINE_enum(
    "param_sharding",
    "replicated",
    ["replicated", "fsdp"],
    "Train mode: the train state's layout (config mesh.param_sharding).",
)
_COMPILE_ONLY = flags.DEFINE_bool(
    "compile_only",
    False,
    "Train mode: compile only (compile time, MACs, XLA memory estimate); run no step.",
)
_MODEL_KWARGS = flags.DEFINE_list(
    "model_kwargs",
    None,
    "Entries of config.model.kwargs as key=value, e.g. remat=block,attention_impl=einsum.",
)
_LOOP_CONFIG = flags.DEFINE_string(
    "loop_config", "configs/quickstart.py", "Loop mode: the experiment config (PATH[:ARG])."
)
_LOOP_STEPS = flags.DEFINE_integer(
    "loop_steps", 300, "Loop mode: timed steps (a multiple of the logging interval, 50)."
)
_LOOP_WARMUP = flags.DEFINE_integer(
    "loop_warmup", 50, "Loop mode: untimed steps first (compilation; a multiple of 50)."
)
_LOOP_STEPS_PER_CALL = flags.DEFINE_integer(
    "steps_per_call", None, "Loop mode: config train.steps_per_call (default: the config's)."
)
_LOOP_SET = flags.DEFINE_list(
    "loop_set",
    None,
    "Loop mode: config fields as block.field=value, e.g. model.drop_path_rate=0.1.",
)
_OUT = flags.DEFINE_string("out", None, "Directory for benchmark.json / benchmark.md.")


def to_markdown(report: dict) -> str:
    """The report as a markdown section (setup line + table)."""
    if report.get("mode") == "train":
        return train_markdown(report)
    if report.get("mode") == "loop":
        from launch.benchmarks.loop import loop_markdown

        return loop_markdown(report)
    return sample_markdown(report)


def _loop_report(batches) -> dict:
    """``--mode=loop``: the config's training loop; --batch/--frames/--denoiser override it."""
    from launch.benchmarks.loop import run_loop_benchmark

    if batches is not None and len(batches) != 1:
        raise app.UsageError("--mode=loop takes one --batch.")
    overrides = {"data.batch_size": batches[0] if batches else None}
    overrides.update({"data.num_frames": _FRAMES.value, "model.name": _DENOISER.value})
    overrides["train.steps_per_call"] = _LOOP_STEPS_PER_CALL.value
    overrides = {k: v for k, v in overrides.items() if v is not None}
    overrides.update(common.parse_model_kwargs(_LOOP_SET.value, flag="loop_set"))
    return run_loop_benchmark(
        _LOOP_CONFIG.value,
        steps=_LOOP_STEPS.value,
        warmup=_LOOP_WARMUP.value,
        overrides=overrides,
        step_repeats=_REPEATS.value,
        model_kwargs=common.parse_model_kwargs(_MODEL_KWARGS.value),
    )


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if _FAKE_DEVICES.value > 0:
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "")
            + f" --xla_force_host_platform_device_count={_FAKE_DEVICES.value}"
        ).strip()
    profile = profiles.get_profile(_PROFILE.value)
    profiles.set_xla_flags(profile)  # before jax initialises (imported lazily below)
    batches = None if _BATCH.value is None else [int(b) for b in _BATCH.value]
    if _MODE.value == "loop":
        report = _loop_report(batches)
    elif _MODE.value == "train":
        sample_only = {
            "grid": _GRID.value,
            "clips": _CLIPS.value,
            "dtype": _DTYPE.value,
            "no_flip": _NO_FLIP.value or None,
            "workdir": _WORKDIR.value,
            "eval_max_batches": _EVAL_MAX_BATCHES.value or None,
        }
        given = [f"--{k}" for k, v in sample_only.items() if v is not None]
        if given:
            raise app.UsageError(
                f"{', '.join(given)}: sample-mode flag(s); --mode=train times float32 training "
                "steps of the paper config (use --batch, --frames, --denoiser)."
            )
        report = run_train_benchmark(
            _SYSTEM.value,
            profile_name=_PROFILE.value,
            batches=batches,
            frames=_FRAMES.value,
            denoiser=_DENOISER.value,
            warmup=_WARMUP.value,
            repeats=_REPEATS.value,
            peak_tflops=_PEAK_TFLOPS.value,
            compile_only=_COMPILE_ONLY.value,
            devices=_DEVICES.value,
            param_sharding=_PARAM_SHARDING.value,
            model_kwargs=common.parse_model_kwargs(_MODEL_KWARGS.value),
        )
    else:
        if _DEVICES.value != 1 or _PARAM_SHARDING.value != "replicated":
            raise app.UsageError(
                "--devices/--param_sharding are --mode=train flags (samplers use every device)."
            )
        if _COMPILE_ONLY.value:
            raise app.UsageError("--compile_only is a --mode=train flag.")
        report = run_benchmark(
            _SYSTEM.value,
            profile_name=_PROFILE.value,
            grid=_GRID.value,
            batches=batches,
            clips=_CLIPS.value,
            frames=_FRAMES.value,
            denoiser=_DENOISER.value,
            dtype=_DTYPE.value,
            flip=not _NO_FLIP.value,
            warmup=_WARMUP.value,
            repeats=_REPEATS.value,
            peak_tflops=_PEAK_TFLOPS.value,
            workdir=_WORKDIR.value,
            eval_max_batches=_EVAL_MAX_BATCHES.value,
            model_kwargs=common.parse_model_kwargs(_MODEL_KWARGS.value),
        )
    md = to_markdown(report)
    print(md)
    if _OUT.value:
        os.makedirs(_OUT.value, exist_ok=True)
        with open(os.path.join(_OUT.value, "benchmark.json"), "w") as f:
            json.dump(report, f, indent=1)
        with open(os.path.join(_OUT.value, "benchmark.md"), "w") as f:
            f.write(md)


if __name__ == "__main__":
    host_memory.ensure_hugepage_malloc("launch.benchmark")
    app.run(main)
