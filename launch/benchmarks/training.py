"""``--mode=train``: one jitted, state-donating training step of a system's paper config.

The step is ``pose_jax.training.loop``'s (the config's optimizer, EMA and gradient
mode), the state laid out as the loop lays it out (replicated or FSDP-split over a
mesh of ``devices``), random batches placed on the device beforehand; compilation
is timed apart. Only the system interface is used (``example_batch``,
``with_data_statistics``; the loop calls ``loss_fn``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from absl import app

from configs import profiles
from launch.benchmarks import common


@dataclasses.dataclass(frozen=True)
class _Step:
    """The step's ingredients and settings, shared by every batch size."""

    step_fn: Any
    init_state: Any  # jitted () -> state, on the state's shardings
    state_sh: Any
    batch_sh: Any
    out_sh: Any
    state_mib: float
    keys: tuple[str, ...]
    devices: int
    param_sharding: str
    paper_batch: int
    frames: int
    paper_frames: int
    compile_only: bool
    compiler_options: dict | None
    warmup: int
    repeats: int
    peak: float | None


def run_train_benchmark(
    model: str | None = None,
    *,
    profile_name: str = "cpu",
    batches: list[int] | None = None,
    frames: int | None = None,
    denoiser: str | None = None,
    warmup: int = 1,
    repeats: int = 5,
    peak_tflops: float | None = None,
    num_batches: int = 2,
    compile_only: bool = False,
    compiler_options: dict | None = None,
    devices: int = 1,
    param_sharding: str = "replicated",
    fsdp_min_size: int | None = None,
    model_kwargs: dict | None = None,
) -> dict:
    """Times the jitted training step of ``model`` (default ``'mmdiff'``); returns the report.

    One row per batch size (default: the config's paper batch). The state is
    created as the training loop creates it and donated to every step; the
    ``num_batches`` random batches are on the device before timing starts.
    ``compile_only``: compile for abstract shapes and report compile time, MACs
    and XLA's memory estimate without allocating the state or running a step
    (e.g. the paper batch of a model too large for this machine's memory).
    ``compiler_options``: XLA options of the step's (and the initialiser's) ``jax.jit``.
    ``devices``/``param_sharding``: the training loop's mesh (batch split over
    ``devices``) and ``mesh.param_sharding`` ('replicated' or 'fsdp'); the memory
    column is then per device. ``model_kwargs``: entries of ``config.model.kwargs``
    (e.g. ``{'remat': 'block'}``).
    """
    import jax

    model = model or "mmdiff"
    if model not in common.CONFIGS:
        raise app.UsageError(f"--system={model!r}; expected one of {sorted(common.CONFIGS)}.")
    common.check_positive("batch", batches)
    common.check_positive("frames", [frames] if frames is not None else None)
    profile, config, system, paper_batch, paper_frames = _prepare(
        model, profile_name, denoiser, frames, model_kwargs
    )
    frames = 1 if system.single_frame else int(config.data.num_frames)
    _check_devices(devices, batches or [paper_batch])
    device = jax.devices()[0]
    peak = common.peak_flops(profile, device.device_kind, dtype="float32", peak_tflops=peak_tflops)
    step = _make_step(
        config, system, fsdp_min_size, devices=devices, param_sharding=param_sharding,
        compiler_options=compiler_options, paper_batch=paper_batch, frames=frames,
        paper_frames=paper_frames, compile_only=compile_only, warmup=warmup,
        repeats=repeats, peak=peak,
    )  # fmt: skip
    rows = []
    for b in batches or [paper_batch]:
        host = [train_batch(system, config, b, seed=i) for i in range(num_batches)]
        rows.append(_time_batch(step, [{k: h[k] for k in step.keys} for h in host]))
    report = common.environment(device, peak)
    report.update(
        mode="train",
        model=model,
        denoiser=config.model.name,
        profile=profile.name,
        dtype="float32",
        matmul_precision=profile.matmul_precision,
        optimizer=config.optim.name,
        ema=bool(config.optim.get("ema_decay")),
        gradient_mode=config.optim.gradient_mode,
        stage=config.model.get("stage", "diffusion"),
        paper_batch=paper_batch,
        paper_frames=paper_frames,
        compile_only=compile_only,
        model_kwargs=model_kwargs or None,
        rows=rows,
    )
    return report


def _prepare(model, profile_name, denoiser, frames, model_kwargs, stats_batch=None):
    """``(profile, config, system, paper batch, paper frames)``, precision set, statistics fitted.

    ``stats_batch``: the batch size of the random batch the data statistics are fitted
    to (DiffPose-frame's uv noise: a GMM of the 2D residuals); default the paper batch.
    """
    import jax

    profile = profiles.get_profile(profile_name)
    jax.config.update("jax_default_matmul_precision", profile.matmul_precision)
    config, system, paper_batch, paper_frames = _train_config(model, denoiser, frames, model_kwargs)
    stats = train_batch(system, config, stats_batch or paper_batch, seed=99)
    return profile, config, system.with_data_statistics([stats]), paper_batch, paper_frames


def _check_devices(devices: int, batches: list[int]) -> None:
    import jax

    if not 1 <= devices <= jax.device_count():
        raise app.UsageError(
            f"--devices={devices}; this process sees {jax.device_count()} device(s) "
            "(on CPU add --fake_devices=N)."
        )
    for b in batches:
        if b % devices:
            raise app.UsageError(f"--batch={b} does not split over --devices={devices}.")


def _train_config(model: str, denoiser: str | None, frames: int | None, model_kwargs=None):
    """``(config, system, paper batch, paper frames)``: the paper config with the overrides."""
    from pose_jax.systems import get_system

    config = common.load_config(model, model_kwargs=model_kwargs)
    paper_batch, paper_frames = int(config.data.batch_size), int(config.data.num_frames)
    with config.unlocked():
        if denoiser:
            config.model.name = denoiser
        if frames is not None:
            config.data.num_frames = frames
    system = get_system(config.system).from_config(config)  # built once, with --frames
    if system.single_frame:
        if frames is not None:
            raise app.UsageError(f"--frames: {model} trains on single frames.")
        paper_frames = 1
    return config, system, paper_batch, paper_frames


def _make_step(config, system, fsdp_min_size, *, devices, param_sharding, **settings) -> _Step:
    """The loop's step and state initialiser, with the state's and batch's layouts.

    ``settings``: the remaining :class:`_Step` fields (the row's settings).
    """
    import jax

    from pose_jax import sharding as sharding_lib
    from pose_jax.training import loop

    mesh = sharding_lib.make_mesh(devices)
    optimizer, _ = loop.make_optimizer_from_config(config, steps_per_epoch=1000)
    step_fn = loop.make_train_step_from_config(config, system, optimizer)
    opts = settings["compiler_options"]
    init_fn = loop.make_state_initializer(
        config, system, system.example_batch(config.data.num_frames), optimizer
    )
    # The loop's layout: state replicated or FSDP-split over the mesh, batch split.
    with config.unlocked():
        config.mesh.param_sharding = param_sharding
        if fsdp_min_size is not None:
            config.mesh.fsdp_min_size = fsdp_min_size
    abstract, state_sh = loop.state_shardings_from_config(config, init_fn, mesh)
    return _Step(
        step_fn=step_fn,
        init_state=jax.jit(init_fn, out_shardings=state_sh, compiler_options=opts),
        state_sh=state_sh,
        batch_sh=sharding_lib.batch_sharding(mesh),
        out_sh=(state_sh, sharding_lib.replicated(mesh)),
        state_mib=sharding_lib.bytes_per_device(abstract, state_sh) / 2**20,
        keys=tuple(system.batch_keys),
        devices=devices,
        param_sharding=param_sharding,
        **settings,
    )


def _time_batch(step: _Step, host: list[dict]) -> dict:
    """One batch size's row: the compiled (and, unless ``compile_only``, timed) step."""
    from pose_jax import benchmarking

    row, call = _compile_batch(step, host)
    if call is None:
        return row
    timing = benchmarking.time_call(call, warmup=step.warmup, repeats=step.repeats)
    med, b, macs = timing.median_s, row["batch"], row["gmacs_per_step"]
    row.update(
        first_call_s=row["compile_s"] + timing.first_call_s,
        median_s=med,
        steps_per_s=1.0 / med,
        samples_per_s=b / med,
        poses_per_s=b * step.frames / med,
        achieved_tflops=None if macs is None else 2 * macs / med / 1e3,
        flop_utilisation=benchmarking.utilisation(
            None if macs is None else macs * 1e9, med, step.peak
        ),
        final_loss=float(call.last_metrics["loss"]),
    )
    return row


def _compile_batch(step: _Step, host: list[dict]):
    """``(row, call)``: the compiled step's static fields and ``call(i)`` running step i.

    ``call`` (None with ``compile_only``) cycles through the batches on the device,
    donates the state to each step and keeps the last step's metrics in
    ``call.last_metrics``.
    """
    import jax

    from pose_jax import benchmarking, model_state

    b = int(next(iter(host[0].values())).shape[0])
    if step.compile_only:
        state = jax.eval_shape(step.init_state)
        on_device = [
            jax.tree.map(
                lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=step.batch_sh), host[0]
            )
        ]
    else:
        on_device = [jax.device_put(h, step.batch_sh) for h in host]
        jax.block_until_ready(on_device)
        state = step.init_state()
    # Trained weights only (BatchNorm running statistics are state, not parameters).
    n_params = sum(x.size for x in jax.tree.leaves(model_state.weights(state.params)))
    compiled, compile_s = benchmarking.compile_timed(
        step.step_fn,
        state,
        on_device[0],
        donate_argnums=0,
        compiler_options=step.compiler_options,
        in_shardings=(step.state_sh, step.batch_sh),
        out_shardings=step.out_sh,
    )
    macs = benchmarking.macs_from_cost(benchmarking.compiled_cost(compiled))
    mem = benchmarking.compiled_memory_bytes(compiled)
    row = {
        "batch": b,
        "devices": step.devices,
        "param_sharding": step.param_sharding,
        "state_mib_per_device": step.state_mib,
        "paper_batch": step.paper_batch,
        "frames": step.frames,
        "paper_frames": step.paper_frames,
        "params_m": n_params / 1e6,
        "compile_s": compile_s,
        "gmacs_per_step": None if macs is None else macs / 1e9,
        "xla_memory_mib": None if mem is None else mem / 2**20,
    }
    if step.compile_only:
        return row, None
    holder = {"state": state}
    del state  # donated by the first step

    def call(i):
        batch = on_device[i % len(on_device)]
        holder["state"], call.last_metrics = compiled(holder["state"], batch)
        return holder["state"], call.last_metrics

    call.last_metrics = None
    return row, call


@dataclasses.dataclass(frozen=True)
class StepCall:
    """A compiled training step ready to be timed beside something else.

    ``call(i)`` runs step ``i`` on ``batches[i % len(batches)]`` (host copies of the
    batches on the device) and blocks until it is done; ``row`` holds the static fields
    (compile time, MACs, XLA memory); ``config`` is the experiment config it was built from.
    """

    call: Any
    row: dict
    batches: list[dict]
    config: Any


def step_call(
    model: str,
    batch: int | None = None,
    *,
    profile_name: str = "cpu",
    frames: int | None = None,
    denoiser: str | None = None,
    model_kwargs: dict | None = None,
    num_batches: int = 2,
    seed: int = 0,
) -> StepCall:
    """The compiled training step of ``model`` at ``batch`` (default: the paper batch), one device.

    As :func:`run_train_benchmark` builds and compiles it (paper config, random
    batches on the device, state donated); the batches are ``train_batch`` of seeds
    ``seed, seed + 1, ...``.
    """
    import jax

    _, config, system, paper_batch, paper_frames = _prepare(
        model, profile_name, denoiser, frames, model_kwargs, stats_batch=batch
    )
    batch = batch or paper_batch
    frames = 1 if system.single_frame else int(config.data.num_frames)
    step = _make_step(
        config, system, None, devices=1, param_sharding="replicated", compiler_options=None,
        paper_batch=paper_batch, frames=frames, paper_frames=paper_frames,
        compile_only=False, warmup=0, repeats=1, peak=None,
    )  # fmt: skip
    host = [train_batch(system, config, batch, seed=seed + i) for i in range(num_batches)]
    host = [{k: h[k] for k in step.keys} for h in host]
    row, call = _compile_batch(step, host)
    return StepCall(lambda i: jax.block_until_ready(call(i)), row, host, config)


def train_batch(system, config, batch_size: int, *, seed: int) -> dict:
    """A random batch with the keys and shapes of the system's training batches.

    Values are plausible (root-relative 3D of ~0.25 m, 2D in [-1, 1], the root 5 m
    in front of a normalised camera) so that no NaN or overflow changes the speed.
    """
    import numpy as np

    from pose_jax import skeleton

    rng = np.random.default_rng(seed)
    root = skeleton.get_skeleton(system.skeleton).root
    example = system.example_batch(config.data.num_frames)
    out = {}
    for k in system.batch_keys:
        shape = (batch_size, *np.shape(example[k])[1:])
        if k == "pose_3d":
            v = 0.25 * rng.standard_normal(shape)
            v[..., root, :] = 0.0
        elif k == "pose_2d":
            v = rng.uniform(-1.0, 1.0, shape)
        elif k == "traj":
            v = 0.1 * rng.standard_normal(shape)
            v[..., 2] += 5.0
        elif k == "intrinsics":
            v = np.zeros(shape)
            v[..., :2] = 2.3  # f in normalised screen units; c, distortion 0
        elif k == "action":
            out[k] = rng.integers(0, 15, shape).astype(np.int32)
            continue
        else:
            v = np.zeros(shape)
        out[k] = v.astype(np.float32)
    return out


def train_markdown(report: dict) -> str:
    """A train report as a markdown section (setup line + table)."""
    from pose_jax import benchmarking

    cols = [
        ("batch", "batch"),
        ("paper_batch", "paper batch"),
        ("devices", "devices"),
        ("param_sharding", "state layout"),
        ("state_mib_per_device", "state MiB/device"),
        ("frames", "frames"),
        ("params_m", "params M"),
        ("compile_s", "compile s"),
        ("first_call_s", "first call s"),
        ("median_s", "median s/step"),
        ("steps_per_s", "steps/s"),
        ("samples_per_s", "samples/s"),
        ("poses_per_s", "poses/s"),
        ("gmacs_per_step", "GMACs/step/device"),
        ("achieved_tflops", "TFLOP/s/device"),
        ("flop_utilisation", "utilisation"),
        ("xla_memory_mib", "XLA memory MiB/device"),
    ]  # final_loss (random data: a finiteness check only) stays in the JSON
    head = (
        f"### train: {report['model']} ({report['denoiser']}, {report['stage']} stage), "
        f"float32, {report['optimizer']}{' + EMA' if report['ema'] else ''}, "
        f"gradient {report['gradient_mode']}\n\n{common.setup_line(report)} Paper batch "
        f"{report['paper_batch']} x {report['paper_frames']} frames (config.data.batch_size); "
        "random data on the device; first call = compile + first step; XLA memory = "
        "arguments + outputs - donated + temporaries of the compiled step."
    )
    if report.get("compile_only"):
        head += " Compiled only (--compile_only): no step was run."
    return head + "\n\n" + benchmarking.markdown_table(report["rows"], cols) + "\n"
