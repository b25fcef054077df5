"""``--mode=sample``: the compiled samplers timed in the layout of the published tables.

Each system is timed through the system interface (``pose_jax.systems.base``):
``system.sampler_inputs`` gives the inputs (outside the timed call: FinePOSE's
prompt features, the refiners' ``x_init``), ``system.make_sampler(SamplerSpec)``
the sampler, ``system.with_compute_dtype`` the bfloat16 variant and
``system.denoise`` on ``inputs.event`` the MACs of one denoiser call. What differs
between the tables is the system's :class:`~launch.benchmarks.common.GridKind`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from absl import app

from configs import profiles
from launch.benchmarks import common


@dataclasses.dataclass(frozen=True)
class _Run:
    """What every row of one sample benchmark shares."""

    model: str
    kind: common.GridKind
    system32: Any
    system: Any  # system32, or its bfloat16 variant
    params: Any
    dtype: str
    flip: bool
    warmup: int
    repeats: int
    peak: float | None
    compiler_options: dict | None
    reference32: Any = None  # the float32 system a bfloat16 row is compared with


def run_benchmark(
    model: str | None = None,
    *,
    profile_name: str = "cpu",
    grid: list[str] | None = None,
    batches: list[int] | None = None,
    clips: int | None = None,
    frames: int | None = None,
    denoiser: str | None = None,
    dtype: str | None = None,
    flip: bool = True,
    warmup: int = 1,
    repeats: int = 5,
    peak_tflops: float | None = None,
    workdir: str | None = None,
    eval_max_batches: int = 0,
    compiler_options: dict | None = None,
    model_kwargs: dict | None = None,
) -> dict:
    """Times the samplers and returns the report (a JSON-able dict with ``rows``).

    ``model``: the system (default: ``workdir``'s, else ``'mmdiff'``). With
    ``workdir`` the run's config and checkpoint are used and each row gets the
    run's MPJPE (see ``launch.benchmark``). ``compiler_options``: XLA options of
    the timed samplers and the initialiser (not of the MPJPE pass: the run's config).
    ``model_kwargs``: entries of ``config.model.kwargs`` (e.g. ``{'attention_impl': 'einsum'}``).
    """
    import jax
    import jax.numpy as jnp

    common.check_positive("batch", batches)
    common.check_positive("clips", [clips] if clips is not None else None)
    common.check_positive("frames", [frames] if frames is not None else None)
    if eval_max_batches < 0:
        raise app.UsageError(f"--eval_max_batches={eval_max_batches}: expected >= 0.")
    model, config, run_dir = _resolve_config(model, workdir, denoiser, eval_max_batches)
    common.set_model_kwargs(config, model_kwargs)
    kind = common.BENCHMARKED[model].grid
    profile = profiles.get_profile(profile_name)
    dtype = dtype or profile.compute_dtype
    jax.config.update("jax_default_matmul_precision", profile.matmul_precision)
    device = jax.devices()[0]
    peak = common.peak_flops(profile, device.device_kind, dtype=dtype, peak_tflops=peak_tflops)
    entries = _parse_grid(model, grid or list(kind.default))
    shapes = _batch_shapes(model, kind, config, profile, batches, clips, frames, run_dir)
    mpjpe_info: dict = {} if run_dir is None else {"workdir": str(workdir)}
    system32, params = _build_system(config, run_dir, compiler_options, mpjpe_info)
    system = system32.with_compute_dtype(jnp.bfloat16) if dtype == "bfloat16" else system32
    run = _Run(model, kind, system32, system, params, dtype, flip, warmup, repeats, peak,
               compiler_options, _float32_reference(config, system32, dtype))  # fmt: skip
    rows, mpjpe_cache = [], {}
    for b, f in shapes:
        pose_2d = common.random_pose_2d(b, f)
        inputs = system32.sampler_inputs(params, pose_2d, jax.random.key(2))
        macs_event = common.denoiser_macs(system, params, inputs)
        for entry in entries:
            row = _time_entry(run, inputs, macs_event, entry, b, f)
            if run_dir is not None:
                row.update(
                    _mpjpe_fields(run, config, entry, mpjpe_cache, mpjpe_info, eval_max_batches)
                )
            rows.append(row)
    report = common.environment(device, peak)
    report.update(
        mode="sample",
        model=model,
        denoiser=config.model.name,
        profile=profile.name,
        dtype=dtype,
        matmul_precision=profile.matmul_precision,
        flip_tta=flip,
        published=common.PUBLISHED.get(model, {}).get("source"),
        published_j_best_h20k10_mm=common.PUBLISHED.get(model, {}).get("j_best_h20k10_mm"),
        mpjpe_eval=mpjpe_info or None,
        model_kwargs=model_kwargs or None,
        rows=rows,
    )
    return report


def _parse_grid(model: str, grid: list[str]) -> list[dict]:
    try:
        return common.parse_grid(model, grid)
    except ValueError as e:
        raise app.UsageError(str(e)) from None


def _resolve_config(model, workdir, denoiser, eval_max_batches):
    """``(system name, config, run directory or None)`` of the flags."""
    if not workdir:
        if eval_max_batches:
            raise app.UsageError("--eval_max_batches needs --workdir (it limits the MPJPE pass).")
        model = model or "mmdiff"
        return model, common.load_config(model, denoiser), None
    if denoiser:
        raise app.UsageError("--denoiser cannot be combined with --workdir (the run's model).")
    config = load_run_config(workdir)
    if model is not None and model != config.system:
        raise app.UsageError(
            f"--system={model} but the run in {workdir} is a {config.system!r} run."
        )
    model = config.system
    if model not in common.BENCHMARKED:
        raise app.UsageError(f"--workdir: system {model!r} is not benchmarked.")
    if config.model.get("stage", "diffusion") != "diffusion":
        raise app.UsageError(
            f"--workdir={workdir} trained the {config.model.stage!r} stage; give the "
            "diffusion run (whose config.model.lifter_path names the lifter)."
        )
    from etils import epath

    return model, config, epath.Path(os.path.expanduser(workdir))


def _batch_shapes(model, kind, config, profile, batches, clips, frames, run_dir):
    """The ``(B, F)`` of every timed batch: clips of frames, or single poses.

    Clip tables time ``--clips`` clips of ``--frames`` frames (the run's clip length
    with ``--workdir``; ``config.data.num_frames`` is set to it); pose tables time
    batches of ``--batch`` single poses.
    """
    if not kind.per_clip:
        if frames is not None or clips is not None:
            raise app.UsageError(f"--frames/--clips: {model} refines single poses (--batch).")
        return [(int(n), 1) for n in batches or profile.batch_sizes.gcn_poses]
    if batches:
        raise app.UsageError(f"--batch: {model} is timed on --clips clips per call.")
    clips = clips or profile.batch_sizes.d3dp_clips
    if run_dir is not None:
        run_frames = int(config.data.num_frames)
        if frames is not None and frames != run_frames:
            raise app.UsageError(
                f"--frames={frames}: the run's model takes {run_frames}-frame clips."
            )
        return [(clips, run_frames)]
    frames = frames or kind.default_frames
    with config.unlocked():
        config.data.num_frames = frames
    return [(clips, frames)]


def _build_system(config, run_dir, compiler_options, mpjpe_info):
    """The float32 system and its parameters: the run's checkpoint, or random ones."""
    import jax

    if run_dir is not None:
        from launch import experiment

        system = experiment.make_system(config)
        params, step = experiment.restore_params(config, run_dir, system)
        mpjpe_info.update(
            checkpoint_step=int(step),
            params="ema" if config.eval.use_ema else "raw",
        )
        return system, params
    from pose_jax.systems import get_system

    system = get_system(config.system).from_config(config)
    # Jitted: FinePOSE's op-by-op init is several times slower than compiling it.
    init = jax.jit(system.init_params, compiler_options=compiler_options)
    return system, init(jax.random.key(0), system.example_batch(config.data.num_frames))


def _float32_reference(config, system32, dtype: str):
    """The float32 system a bfloat16 row is compared with (None for float32 rows).

    ``system32``, except with ``attention_impl='cudnn'``: cuDNN's flash attention takes
    float16/bfloat16 only, so the float32 reference runs XLA's attention (same weights).
    """
    if dtype != "bfloat16":
        return None
    if config.model.get("kwargs", {}).get("attention_impl") != "cudnn":
        return system32
    from pose_jax.systems import get_system

    config = config.copy_and_resolve_references()
    config.model.kwargs.attention_impl = "xla"
    return get_system(config.system).from_config(config)


def _time_entry(run: _Run, inputs, macs_event, entry, batch: int, frames: int) -> dict:
    """The row of one grid entry on one batch (with the bfloat16 difference to float32)."""
    from pose_jax import benchmarking

    kind, flip = run.kind, run.flip
    spec = common.sampler_spec(kind, entry, frames=frames, flip=flip)
    opts = run.compiler_options
    call, placed = common.sampler_call(run.system, spec, run.params, inputs, compiler_options=opts)
    timing = benchmarking.time_call(call, warmup=run.warmup, repeats=run.repeats)
    macs = common.call_macs(macs_event, kind, entry, flip=flip)
    row = common.timing_row(timing, batch * frames, macs, run.peak)
    row.update(common.entry_fields(kind, entry, batch=batch, frames=frames))
    row["denoiser_calls"] = common.denoiser_calls(kind, entry, batch=batch, flip=flip)
    row.update(common.published_fields(run.model, entry))
    if run.dtype == "bfloat16":
        ref, _ = common.sampler_call(
            run.reference32, spec, run.params, inputs, compiler_options=opts, placed=placed
        )
        row.update(common.dtype_diff(call(7), ref(7)))
    return row


def _mpjpe_fields(run: _Run, config, entry, cache: dict, info: dict, max_batches: int) -> dict:
    """The MPJPE columns of a row: the run evaluated at the entry's sampler settings.

    Computed once per setting (a pose table's MPJPE is the same for every batch size).
    """
    overrides = common.eval_overrides(run.kind, entry, flip=run.flip)
    key = tuple(sorted(overrides.items()))
    if key not in cache:
        res = evaluate_mpjpe(
            config, run.system32, run.params, overrides=overrides, max_batches=max_batches
        )
        p = res["protocol"]
        info.update(
            dataset=config.data.dataset,
            split=config.data.eval_split,
            eval_batch_size=p["batch_size"],
            mode=p["mode"],
            weighting=p["weighting"],
            num_sequences=res["num_sequences"],
            num_frames_weighted=res["num_frames_weighted"],
            eval_max_batches=max_batches,
        )
        cache[key] = res["mpjpe_mm"]
    return {row_key: cache[key][agg] for row_key, agg, _ in run.kind.mpjpe}


def load_run_config(workdir: str):
    """The ``config.json`` that ``launch.train`` wrote into a run directory, as a ConfigDict."""
    import ml_collections
    from etils import epath

    path = epath.Path(os.path.expanduser(workdir)) / "config.json"
    if not path.exists():
        raise app.UsageError(
            f"--workdir={workdir}: no config.json there (launch.train writes it into the run "
            "directory)."
        )
    return ml_collections.ConfigDict(json.loads(path.read_text()))


def evaluate_mpjpe(
    config, system, params, *, overrides: dict | None = None, max_batches: int = 0
) -> dict:
    """``launch.experiment.evaluate``'s results for ``params``, without writing ``eval/``.

    ``launch.experiment.evaluate_params`` on ``config.eval`` with ``overrides``;
    with ``max_batches > 0`` the windows are cut to that many sampler calls
    (:func:`pose_jax.benchmarking.limit_windows`).
    """
    import ml_collections

    from launch import experiment
    from pose_jax import benchmarking

    ecfg = ml_collections.ConfigDict(config.eval.to_dict())
    for k, v in (overrides or {}).items():
        ecfg[k] = v
    return experiment.evaluate_params(
        config,
        system,
        params,
        eval_config=ecfg,
        limit_windows=lambda windows, e: benchmarking.limit_windows(
            windows, int(e.batch_size), max_batches
        ),
    )


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------

_TIMING_COLUMNS = [
    ("first_call_s", "first call s"),
    ("median_s", "median s/call"),
    ("poses_per_s", "poses/s"),
    ("batches1024_per_s", "1024-batches/s"),
]
_MACS_COLUMNS = [
    ("gmacs_per_call", "GMACs/call"),
    ("achieved_tflops", "TFLOP/s"),
    ("flop_utilisation", "utilisation"),
]
_BF16_COLUMNS = [
    ("bf16_max_abs_diff", "bf16 max abs diff"),
    ("bf16_mean_abs_diff", "bf16 mean abs diff"),
]


def sample_markdown(report: dict) -> str:
    """A sample report as a markdown section (setup line + table)."""
    from pose_jax import benchmarking

    kind = common.BENCHMARKED[report["model"]].grid
    with_mpjpe = bool(report.get("mpjpe_eval"))
    cols = [*kind.entry_columns, *_TIMING_COLUMNS]
    cols += [(key, header) for key, _, header in kind.published_speed] + _MACS_COLUMNS
    if report["dtype"] == "bfloat16":
        cols += _BF16_COLUMNS
    if with_mpjpe:
        cols += [(key, header) for key, _, header in kind.mpjpe]
    cols += [(key, header) for key, _, header in kind.published_accuracy]
    head = (
        f"### {report['model']} ({report['denoiser']}), {report['dtype']}, "
        f"flip TTA {report['flip_tta']}\n\n{common.setup_line(report)}"
    )
    if report.get("published") and kind.published_note:
        head += " " + kind.published_note.format(published=report["published"])
    if with_mpjpe:
        head += _mpjpe_sentence(report, kind)
    return head + "\n\n" + benchmarking.markdown_table(report["rows"], cols) + "\n"


def _mpjpe_sentence(report: dict, kind: common.GridKind) -> str:
    e = report["mpjpe_eval"]
    cap = e["eval_max_batches"]
    text = (
        f"\n\nMPJPE: run {e['workdir']}, checkpoint step {e['checkpoint_step']} "
        f"({e['params']} params), {e['dataset']} split {e['split']}, "
        f"{e['num_sequences']} sequences ({e['num_frames_weighted']:.0f} weighted frames"
        f"{f', at most {cap} sampler calls' if cap else ''}), "
        f"eval batch {e['eval_batch_size']}, mode {e['mode']}, weighting {e['weighting']}; "
        "float32 (as launch.evaluate)"
    )
    text += f", T_test {kind.num_timesteps}." if kind.num_timesteps is not None else "."
    pub = report.get("published_j_best_h20k10_mm")
    if pub:
        text += (
            f" Published J-Best at H20 K10 ({report['published']}): "
            f"{pub['cpn']} mm (CPN 2D), {pub['gt']} mm (GT 2D)."
        )
    return text
