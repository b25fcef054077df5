"""``--mode=loop``: the whole training loop of an experiment config, input pipeline included.

Runs ``pose_jax.training.loop.train`` exactly as ``launch.train`` does (the config's
dataset through ``launch.experiment.prepare_training``: grain iterator, batching,
per-step transfer, the jitted update, metric fetches every ``train.log_every_steps``,
the preemption check) into a temporary workdir, for ``warmup + steps`` steps with
no checkpoint before the last step. Steps/s comes from the loop's own
``metrics.jsonl`` (``steps_per_sec`` of each logging interval, measured between
metric fetches): the intervals inside the warm-up (compilation) are dropped and
the rest give ``timed steps / their time``.

Beside it, the same jitted update is timed alone on one batch already on the
device (no input pipeline, no logging), with the process's CPU time and minor page
faults per step, so ``1 - loop / step`` is the host's share of a loop step.
"""

from __future__ import annotations

import importlib
import json
import resource
import statistics
import tempfile
import time
from typing import Any

from absl import app


def load_experiment_config(spec: str, overrides: dict[str, Any] | None = None):
    """``get_config(arg)`` of ``'configs/x.py[:arg]'`` with ``{'block.field': value}`` set."""
    path, _, arg = spec.partition(":")
    if not path.endswith(".py"):
        raise app.UsageError(f"--loop_config={spec!r}; expected configs/NAME.py[:ARG].")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    config = module.get_config(arg or None)
    for key in overrides or {}:
        block, _, field = key.partition(".")
        if not field or "." in field or block not in config or field not in config[block]:
            raise app.UsageError(
                f"Config setting {key!r}: expected block.field naming a field of {spec} "
                f"(blocks: {sorted(config.keys())})."
            )
    with config.unlocked():
        for key, value in (overrides or {}).items():
            block, field = key.split(".")
            config[block][field] = value
    return config


def run_loop_benchmark(
    spec: str = "configs/quickstart.py",
    *,
    steps: int = 300,
    warmup: int = 50,
    log_every: int = 50,
    overrides: dict[str, Any] | None = None,
    step_repeats: int = 100,
    model_kwargs: dict[str, Any] | None = None,
) -> dict:
    """Times ``steps`` loop steps after ``warmup`` (a multiple of ``log_every``); the report.

    ``overrides``: config fields ``{'block.field': value}``; ``model_kwargs``: entries of
    ``config.model.kwargs`` (e.g. ``{'num_heads': 8}``).
    """
    import jax

    from launch import experiment
    from launch.benchmarks import common
    from pose_jax.training import config_checks, loop

    for name, value in (("loop_steps", steps), ("loop_warmup", warmup)):
        if value < 1 or value % log_every:
            raise app.UsageError(f"--{name}={value}; expected a positive multiple of {log_every}.")
    settings = {
        "train.num_steps": warmup + steps,
        "train.num_epochs": 0,
        "train.log_every_steps": log_every,
        "train.checkpoint_every_steps": 10 * (warmup + steps),
        "train.tensorboard": False,
    }
    config = load_experiment_config(spec, {**(overrides or {}), **settings})
    common.set_model_kwargs(config, model_kwargs)
    config_checks.check_train_config(
        config, num_devices=jax.device_count(), num_processes=jax.process_count()
    )
    inputs = experiment.prepare_training(config)
    with tempfile.TemporaryDirectory(prefix="pose_jax_loop_bench_") as workdir:
        state = loop.train(
            config,
            workdir,
            system=inputs.system,
            train_iter=inputs.train_iter,
            steps_per_epoch=inputs.steps_per_epoch,
            init_batch=inputs.init_batch,
        )
        with open(f"{workdir}/metrics.jsonl") as f:
            logged = [json.loads(line) for line in f]
    timed = [m for m in logged if m["step"] > warmup]
    seconds = [log_every / m["steps_per_sec"] for m in timed]
    step_row = _time_bare_step(config, inputs, state, step_repeats)
    loop_sps = len(timed) * log_every / sum(seconds)
    report = common.environment(jax.devices()[0], None)
    report.update(
        mode="loop",
        profile="none (launch.train's settings)",
        config=spec,
        overrides={k: v for k, v in (overrides or {}).items()},
        model_kwargs=model_kwargs or None,
        model=config.model.name,
        batch=int(config.data.batch_size),
        frames=int(config.data.num_frames),
        compute_dtype=config.train.get("compute_dtype", "float32"),
        steps_per_call=int(config.train.get("steps_per_call", 1)),
        microbatch_size=int(config.train.get("microbatch_size", 0)),
        warmup_steps=warmup,
        timed_steps=len(timed) * log_every,
        loop_steps_per_s=loop_sps,
        loop_interval_steps_per_s=[m["steps_per_sec"] for m in timed],
        loop_median_interval_steps_per_s=statistics.median(m["steps_per_sec"] for m in timed),
        host_share=1.0 - loop_sps / step_row["step_steps_per_s"],
        final_loss=timed[-1]["loss"],
        **step_row,
    )
    return report


def _time_bare_step(config, inputs, state, repeats: int) -> dict:
    """The loop's update alone: one device batch, ``repeats`` steps, CPU time and page faults."""
    import jax

    from pose_jax import sharding as sharding_lib
    from pose_jax.training import loop

    mesh = sharding_lib.make_mesh(config.mesh.get("num_devices") or None)
    optimizer, _ = loop.make_optimizer_from_config(config, inputs.steps_per_epoch)
    step_fn = jax.jit(loop.make_train_step_from_config(config, inputs.system, optimizer))
    keys = tuple(inputs.system.batch_keys)
    batch = loop.global_batch(next(inputs.train_iter), mesh, keys)
    state, metrics = step_fn(state, batch)  # compiles
    jax.block_until_ready(metrics)
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(repeats):
        state, metrics = step_fn(state, batch)
    jax.block_until_ready(metrics)
    wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    return {
        "step_repeats": repeats,
        "step_steps_per_s": repeats / wall,
        "step_cpu_user_ms": (r1.ru_utime - r0.ru_utime) / repeats * 1e3,
        "step_cpu_sys_ms": (r1.ru_stime - r0.ru_stime) / repeats * 1e3,
        "step_minor_faults": (r1.ru_minflt - r0.ru_minflt) / repeats,
    }


def loop_markdown(report: dict) -> str:
    """A loop report as a markdown section."""
    from launch.benchmarks import common
    from pose_jax import benchmarking

    cols = [
        ("batch", "batch"),
        ("frames", "frames"),
        ("compute_dtype", "compute dtype"),
        ("steps_per_call", "steps per call"),
        ("microbatch_size", "microbatch size"),
        ("timed_steps", "timed loop steps"),
        ("loop_steps_per_s", "loop steps/s"),
        ("loop_median_interval_steps_per_s", "median interval steps/s"),
        ("step_steps_per_s", "bare step steps/s"),
        ("host_share", "host share of a loop step"),
        ("step_cpu_user_ms", "step CPU user ms"),
        ("step_cpu_sys_ms", "step CPU sys ms"),
        ("step_minor_faults", "step minor page faults"),
    ]
    head = (
        f"### loop: {report['config']} ({report['model']}), {report['compute_dtype']}\n\n"
        f"{common.setup_line(report)} The real loop (`loop.train`, its grain input pipeline, "
        f"logging every {report['timed_steps'] // len(report['loop_interval_steps_per_s'])} "
        f"steps) after {report['warmup_steps']} warm-up steps; the bare step on one device "
        "batch, CPU time and page faults per step of this process."
    )
    return head + "\n\n" + benchmarking.markdown_table([report], cols) + "\n"
