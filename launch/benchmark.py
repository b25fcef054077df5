r"""Times pose_jax's systems: the compiled samplers (``--mode=sample``) or training step.

``--mode=sample`` (default), random parameters unless ``--workdir`` is given:

* GCN refiners (``--system=mmdiff|diffpose_frame|diffpose_video``): DDIM steps
  ``S1..S4`` (seq ``range(0, 12, 12 // S)``, the GT config of the monoMotionDiff
  speed table, REFERENCE.md 6.4) on batches of poses with flip TTA over the chain;
  the lifter is not timed (``x_init`` is random).
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

Writes ``benchmark.json`` and ``benchmark.md`` under ``--out``.

  python -m launch.benchmark --system=mmdiff --batch=256,1024
  python -m launch.benchmark --system=d3dp --grid=H1K1,H5K5 --clips=1
  python -m launch.benchmark --system=d3dp --profile=gpu --grid=H1K1,H5K5,H20K10 --clips=4
  python -m launch.benchmark --workdir=runs/quickstart --grid=H1K1,H3K3 --eval_max_batches=50
  python -m launch.benchmark --mode=train --system=d3dp --batch=1 --repeats=2 --warmup=0
  python -m launch.benchmark --mode=train --system=d3dp --compile_only
  python -m launch.benchmark --mode=train --system=finepose --denoiser=finepose_tiny --batch=16
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re

from absl import app, flags

from configs import profiles

# Published numbers (REFERENCE.md 6.4 / 7, 2.8): the GCN rows are monoMotionDiff's
# Table 3 (NVIDIA A100, H36M GT 2D; "FPS" read as batches of 1024 poses per second,
# MPJPE in mm). D3DP and FinePOSE publish no speed, and their headline MPJPEs are
# J-Best (oracle) numbers at H20 K10 (no P-Agg / J-Agg table was found).
PUBLISHED = {
    "mmdiff": {
        "source": "monoMotionDiff (ICASSP'24) Tab. 3, A100",
        "fps": {1: 47.5, 2: 25.7, 3: 15.6, 4: 11.9},
        "mpjpe_mm": {1: 31.9, 2: 30.2, 3: 30.0, 4: 29.9},
    },
    "diffpose_frame": {
        "source": "monoMotionDiff (ICASSP'24) Tab. 3 (DiffPose row), A100",
        "fps": {1: 48.3, 2: 26.4, 3: 15.8, 4: 12.0},
        "mpjpe_mm": {1: 33.1, 2: 31.3, 3: 30.9, 4: 30.7},
    },
    "d3dp": {
        "source": "FinePOSE (CVPR'24) Tab. 1, D3DP row",
        "j_best_h20k10_mm": {"cpn": 35.4, "gt": 18.4},
    },
    "finepose": {
        "source": "FinePOSE (CVPR'24) Tab. 1",
        "j_best_h20k10_mm": {"cpn": 31.9, "gt": 16.7},
    },
}
# The config each system is benchmarked with (paper sizes; GT 2D for the GCN table).
_CONFIGS = {
    "d3dp": "configs/d3dp_h36m.py",
    "finepose": "configs/finepose_h36m.py",
    "mmdiff": "configs/mmdiff_h36m.py:keypoints=gt",
    "diffpose_frame": "configs/diffpose_frame_h36m.py:keypoints=gt",
    "diffpose_video": "configs/diffpose_video_h36m.py:keypoints=gt",
}
_CLIP_SYSTEMS = ("d3dp", "finepose")  # H x K grids on clips; the others refine poses
GCN_T_TEST = 12  # the speed table's GT config: refinement from t = 6

_MODE = flags.DEFINE_enum(
    "mode", "sample", ["sample", "train"], "Time the samplers or the training step."
)
_SYSTEM = flags.DEFINE_enum(
    "system",
    None,
    sorted(_CONFIGS),
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
_OUT = flags.DEFINE_string("out", None, "Directory for benchmark.json / benchmark.md.")


def _parse_grid(model: str, grid: list[str]) -> list[dict]:
    out = []
    for entry in grid:
        e = entry.strip().upper()
        if model in _CLIP_SYSTEMS:
            m = re.fullmatch(r"H(\d+)K(\d+)", e)
            if not m or min(int(m[1]), int(m[2])) < 1:
                raise app.UsageError(
                    f"--grid entry {entry!r}: D3DP/FinePOSE take HxKy with x, y >= 1, e.g. H5K5."
                )
            out.append({"H": int(m[1]), "K": int(m[2])})
        else:
            m = re.fullmatch(r"S(\d+)", e)
            if not m or not 1 <= int(m[1]) <= GCN_T_TEST:
                raise app.UsageError(f"--grid entry {entry!r}: GCN models take S1..S12.")
            out.append({"steps": int(m[1])})
    return out


def _check_positive(name: str, values) -> None:
    for v in values or ():
        if int(v) < 1:
            raise app.UsageError(f"--{name}={v}: expected >= 1.")


# ---------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------


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
) -> dict:
    """Times the samplers and returns the report (a JSON-able dict with ``rows``).

    ``model``: the system (default: ``workdir``'s, else ``'mmdiff'``). With
    ``workdir`` the run's config and checkpoint are used and each row gets the
    run's MPJPE (see the module docstring). ``compiler_options``: XLA options of
    the timed samplers and the initialiser (not of the MPJPE pass: the run's config).
    """
    import dataclasses

    import jax
    import jax.numpy as jnp

    from pose_jax import benchmarking
    from pose_jax.models import get_model, make_model_fns
    from pose_jax.systems import get_system

    _check_positive("batch", batches)
    _check_positive("clips", [clips] if clips is not None else None)
    _check_positive("frames", [frames] if frames is not None else None)
    if eval_max_batches < 0:
        raise app.UsageError(f"--eval_max_batches={eval_max_batches}: expected >= 0.")
    run_dir = None
    if workdir:
        if denoiser:
            raise app.UsageError("--denoiser cannot be combined with --workdir (the run's model).")
        config = load_run_config(workdir)
        if model is not None and model != config.system:
            raise app.UsageError(
                f"--system={model} but the run in {workdir} is a {config.system!r} run."
            )
        model = config.system
        if model not in _CONFIGS:
            raise app.UsageError(f"--workdir: system {model!r} is not benchmarked.")
        if config.model.get("stage", "diffusion") != "diffusion":
            raise app.UsageError(
                f"--workdir={workdir} trained the {config.model.stage!r} stage; give the "
                "diffusion run (whose config.model.lifter_path names the lifter)."
            )
        from etils import epath

        run_dir = epath.Path(os.path.expanduser(workdir))
    else:
        if eval_max_batches:
            raise app.UsageError("--eval_max_batches needs --workdir (it limits the MPJPE pass).")
        model = model or "mmdiff"
        config = _load_config(_CONFIGS[model])

    profile = profiles.get_profile(profile_name)
    dtype = dtype or profile.compute_dtype
    jax.config.update("jax_default_matmul_precision", profile.matmul_precision)
    device = jax.devices()[0]
    kind = device.device_kind
    peak_table = profile.peak_flops.bf16 if dtype == "bfloat16" else profile.peak_flops.fp32
    peak = peak_tflops * 1e12 if peak_tflops else benchmarking.peak_flops_per_s(kind, peak_table)
    jdtype = jnp.bfloat16 if dtype == "bfloat16" else None
    key = jax.random.key(0)
    rows = []
    mpjpe_info: dict = {}

    def build_system():
        if run_dir is not None:
            from launch import experiment

            system = experiment.make_system(config)
            params, step = experiment.restore_params(config, run_dir, system)
            mpjpe_info.update(
                workdir=str(workdir),
                checkpoint_step=int(step),
                params="ema" if config.eval.use_ema else "raw",
            )
            return system, params
        system = get_system(config.system).from_config(config)
        # Jitted: FinePOSE's op-by-op init is several times slower than compiling it.
        init = jax.jit(system.init_params, compiler_options=compiler_options)
        return system, init(key, system.example_batch(config.data.num_frames))

    def mpjpe(system, params, **overrides) -> dict:
        res = evaluate_mpjpe(
            config, system, params, overrides=overrides, max_batches=eval_max_batches
        )
        p = res["protocol"]
        mpjpe_info.update(
            dataset=config.data.dataset,
            split=config.data.eval_split,
            eval_batch_size=p["batch_size"],
            mode=p["mode"],
            weighting=p["weighting"],
            num_sequences=res["num_sequences"],
            num_frames_weighted=res["num_frames_weighted"],
            eval_max_batches=eval_max_batches,
        )
        return res["mpjpe_mm"]

    if model in _CLIP_SYSTEMS:
        grid_entries = _parse_grid(model, grid or ["H1K1", "H5K5"])
        if batches:
            raise app.UsageError(f"--batch: {model} is timed on --clips clips per call.")
        clips = clips or profile.batch_sizes.d3dp_clips
        if run_dir is not None:
            run_frames = int(config.data.num_frames)
            if frames is not None and frames != run_frames:
                raise app.UsageError(
                    f"--frames={frames}: the run's model takes {run_frames}-frame clips."
                )
            frames = run_frames
        else:
            frames = frames or 243
            with config.unlocked():
                config.data.num_frames = frames
                if denoiser:
                    config.model.name = denoiser
        system32, params = build_system()
        systems = {"float32": system32}
        if dtype == "bfloat16":
            module_kw = dict(num_frames=frames, drop_path_rate=0.0, **_set_kwargs(config))
            bf = make_model_fns(get_model(config.model.name, dtype=jdtype, **module_kw))
            systems["bfloat16"] = dataclasses.replace(system32, model=bf)
        system = systems[dtype]
        pose_2d = jax.random.uniform(jax.random.key(1), (clips, frames, 17, 2), minval=-1, maxval=1)
        cond = _clip_cond(system32, params, pose_2d)
        t0 = jnp.zeros((1,), jnp.int32)
        macs_one = benchmarking.count_macs(
            lambda p, x, t, c: system.denoise(p, x, t, c),
            params,
            jnp.zeros((1, frames, 17, 3)),
            t0,
            jax.tree.map(lambda a: a[:1], cond),
        )
        for g in grid_entries:
            h, k = g["H"], g["K"]
            kw = dict(num_frames=frames, num_hypotheses=h, num_iterations=k, flip_tta=flip)
            sampler = system.make_sampler(**kw, compiler_options=compiler_options)
            placed = sampler.place_params(params)

            def call(i, sampler=sampler, placed=placed):
                return sampler(placed, cond, jax.random.key(i)).x0_steps

            timing = benchmarking.time_call(call, warmup=warmup, repeats=repeats)
            calls = (2 if flip else 1) * k
            macs = None if macs_one is None else macs_one * clips * h * calls
            row = _row(timing, clips * frames, macs, peak)
            row.update(H=h, K=k, clips=clips, frames=frames, denoiser_calls=calls * h * clips)
            if dtype == "bfloat16":
                ref = systems["float32"].make_sampler(**kw, compiler_options=compiler_options)
                row.update(_dtype_diff(call(7), ref(placed, cond, jax.random.key(7)).x0_steps))
            if run_dir is not None:
                m = mpjpe(system32, params, num_hypotheses=h, num_iterations=k, flip_tta=flip)
                row.update(
                    mpjpe_p_agg_mm=m["p_agg"],
                    mpjpe_j_agg_mm=m["j_agg"],
                    mpjpe_j_best_mm=m["j_best"],
                )
            rows.append(row)
    else:
        grid_entries = _parse_grid(model, grid or ["S1", "S2", "S3", "S4"])
        batches = batches or list(profile.batch_sizes.gcn_poses)
        if frames is not None or clips is not None:
            raise app.UsageError(f"--frames/--clips: {model} refines single poses (--batch).")
        if denoiser:
            with config.unlocked():
                config.model.name = denoiser
        system32, params = build_system()
        systems = {"float32": system32}
        if dtype == "bfloat16":
            bf = make_model_fns(get_model(config.model.name, dtype=jdtype, **_set_kwargs(config)))
            systems["bfloat16"] = dataclasses.replace(system32, denoiser=bf)
        system = systems[dtype]
        pub = PUBLISHED.get(model, {})
        mpjpe_by_steps = {}
        for n in batches:
            uv = jax.random.uniform(jax.random.key(1), (n, 17, 2), minval=-1, maxval=1)
            xyz = 0.2 * jax.random.normal(jax.random.key(2), (n, 17, 3))
            x_init = jnp.concatenate([uv, xyz], -1)
            macs_call = benchmarking.count_macs(
                lambda p, x, t, c: system.denoiser.apply_fn(p, x, t, c),
                params,
                x_init,
                jnp.zeros((n,), jnp.int32),
                {"pose_2d": uv},
            )
            for g in grid_entries:
                s = g["steps"]
                kw = dict(num_timesteps=GCN_T_TEST, num_iterations=s, flip_tta=flip)
                sampler = system.make_sampler(**kw, compiler_options=compiler_options)
                placed = sampler.place_params(params)

                def call(i, sampler=sampler, placed=placed, uv=uv, x_init=x_init):
                    return sampler(placed, {"pose_2d": uv}, jax.random.key(i), x_init).x0_steps

                timing = benchmarking.time_call(call, warmup=warmup, repeats=repeats)
                calls = (2 if flip else 1) * s
                macs = None if macs_call is None else macs_call * calls
                row = _row(timing, n, macs, peak)
                row.update(
                    steps=s,
                    batch=n,
                    denoiser_calls=calls,
                    published_fps=pub.get("fps", {}).get(s),
                    published_mpjpe_mm=pub.get("mpjpe_mm", {}).get(s),
                )
                if dtype == "bfloat16":
                    ref = systems["float32"].make_sampler(**kw, compiler_options=compiler_options)
                    out32 = ref(placed, {"pose_2d": uv}, jax.random.key(7), x_init).x0_steps
                    row.update(_dtype_diff(call(7), out32))
                if run_dir is not None:
                    if s not in mpjpe_by_steps:  # the same for every timed batch size
                        m = mpjpe(
                            system32,
                            params,
                            num_timesteps=GCN_T_TEST,
                            num_iterations=s,
                            num_hypotheses=1,
                            flip_tta=flip,
                        )
                        mpjpe_by_steps[s] = m["p_agg"]  # H = 1: every aggregation agrees
                    row["mpjpe_mm"] = mpjpe_by_steps[s]
                rows.append(row)

    report = _environment(device, peak)
    report.update(
        mode="sample",
        model=model,
        denoiser=config.model.name,
        profile=profile.name,
        dtype=dtype,
        matmul_precision=profile.matmul_precision,
        flip_tta=flip,
        published=PUBLISHED.get(model, {}).get("source"),
        published_j_best_h20k10_mm=PUBLISHED.get(model, {}).get("j_best_h20k10_mm"),
        mpjpe_eval=mpjpe_info or None,
        rows=rows,
    )
    return report


def _set_kwargs(config) -> dict:
    """The set (not None) entries of ``config.model.kwargs``."""
    kw = config.model.get("kwargs") or {}
    kw = kw.to_dict() if hasattr(kw, "to_dict") else dict(kw)
    return {k: v for k, v in kw.items() if v is not None}


def _clip_cond(system, params, pose_2d) -> dict:
    """The sampler's cond for ``pose_2d`` clips; FinePOSE adds its prompt features
    (action class 0 for every clip), computed once here as its evaluation does per batch."""
    import jax.numpy as jnp

    cond = {"pose_2d": pose_2d}
    if hasattr(system, "prompt_features"):
        ids = system.prompt_ids(jnp.zeros(pose_2d.shape[:1], jnp.int32))
        cond.update(system.prompt_features(params, ids))
    return cond


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
# Training
# ---------------------------------------------------------------------------


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
    column is then per device.
    """
    import jax

    from pose_jax import benchmarking
    from pose_jax import sharding as sharding_lib
    from pose_jax.systems import get_system
    from pose_jax.training import loop

    model = model or "mmdiff"
    if model not in _CONFIGS:
        raise app.UsageError(f"--system={model!r}; expected one of {sorted(_CONFIGS)}.")
    _check_positive("batch", batches)
    _check_positive("frames", [frames] if frames is not None else None)
    profile = profiles.get_profile(profile_name)
    jax.config.update("jax_default_matmul_precision", profile.matmul_precision)
    config = _load_config(_CONFIGS[model])
    paper_batch = int(config.data.batch_size)
    single_frame = bool(config.data.get("single_frame", False))
    paper_frames = 1 if single_frame else int(config.data.num_frames)
    with config.unlocked():
        if denoiser:
            config.model.name = denoiser
        if frames is not None:
            if single_frame:
                raise app.UsageError(f"--frames: {model} trains on single frames.")
            config.data.num_frames = frames
    frames = 1 if single_frame else int(config.data.num_frames)
    system = get_system(config.system).from_config(config)
    if hasattr(system, "with_data_statistics"):
        # DiffPose-frame's uv noise: a GMM fitted to the (here random) 2D residuals.
        system = system.with_data_statistics([_train_batch(system, config, paper_batch, seed=99)])

    if not 1 <= devices <= jax.device_count():
        raise app.UsageError(
            f"--devices={devices}; this process sees {jax.device_count()} device(s) "
            "(on CPU add --fake_devices=N)."
        )
    for b in batches or [paper_batch]:
        if b % devices:
            raise app.UsageError(f"--batch={b} does not split over --devices={devices}.")
    device = jax.devices()[0]
    kind = device.device_kind
    mesh = sharding_lib.make_mesh(devices)
    batch_sh = sharding_lib.batch_sharding(mesh)
    peak = (
        peak_tflops * 1e12
        if peak_tflops
        else benchmarking.peak_flops_per_s(kind, profile.peak_flops.fp32)
    )
    optimizer, _ = loop.make_optimizer_from_config(config, steps_per_epoch=1000)
    step_fn = loop.make_train_step_from_config(config, system, optimizer)
    init_fn = loop.make_state_initializer(
        config, system, system.example_batch(config.data.num_frames), optimizer
    )
    # The loop's layout: state replicated or FSDP-split over the mesh, batch split.
    with config.unlocked():
        config.mesh.param_sharding = param_sharding
        if fsdp_min_size is not None:
            config.mesh.fsdp_min_size = fsdp_min_size
    abstract, state_sh = loop.state_shardings_from_config(config, init_fn, mesh)
    state_mib = sharding_lib.bytes_per_device(abstract, state_sh) / 2**20
    init_state = jax.jit(init_fn, out_shardings=state_sh, compiler_options=compiler_options)
    keys = tuple(config.train.batch_keys)
    rows = []
    n_params = None
    for b in batches or [paper_batch]:
        host = [_train_batch(system, config, b, seed=i) for i in range(num_batches)]
        host = [{k: h[k] for k in keys} for h in host]
        if compile_only:
            state = jax.eval_shape(init_state)
            on_device = [
                jax.tree.map(
                    lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=batch_sh), host[0]
                )
            ]
        else:
            on_device = [jax.device_put(h, batch_sh) for h in host]
            jax.block_until_ready(on_device)
            state = init_state()
        n_params = sum(x.size for x in jax.tree.leaves(state.params))
        compiled, compile_s = benchmarking.compile_timed(
            step_fn,
            state,
            on_device[0],
            donate_argnums=0,
            compiler_options=compiler_options,
            in_shardings=(state_sh, batch_sh),
            out_shardings=(state_sh, sharding_lib.replicated(mesh)),
        )
        macs = benchmarking.macs_from_cost(benchmarking.compiled_cost(compiled))
        mem = benchmarking.compiled_memory_bytes(compiled)
        row = {
            "batch": b,
            "devices": devices,
            "param_sharding": param_sharding,
            "state_mib_per_device": state_mib,
            "paper_batch": paper_batch,
            "frames": frames,
            "paper_frames": paper_frames,
            "params_m": n_params / 1e6,
            "compile_s": compile_s,
            "gmacs_per_step": None if macs is None else macs / 1e9,
            "xla_memory_mib": None if mem is None else mem / 2**20,
        }
        rows.append(row)
        if compile_only:
            continue
        holder = {"state": state}
        del state  # donated by the first step

        def call(i, holder=holder, compiled=compiled, on_device=on_device):
            holder["state"], metrics = compiled(holder["state"], on_device[i % len(on_device)])
            holder["metrics"] = metrics
            return holder["state"], metrics

        timing = benchmarking.time_call(call, warmup=warmup, repeats=repeats)
        med = timing.median_s
        row.update(
            first_call_s=compile_s + timing.first_call_s,
            median_s=med,
            steps_per_s=1.0 / med,
            samples_per_s=b / med,
            poses_per_s=b * frames / med,
            achieved_tflops=None if macs is None else 2 * macs / med / 1e12,
            flop_utilisation=benchmarking.utilisation(macs, med, peak),
            final_loss=float(holder["metrics"]["loss"]),
        )
        del holder

    report = _environment(device, peak)
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
        rows=rows,
    )
    return report


def _train_batch(system, config, batch_size: int, *, seed: int) -> dict:
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
    for k in config.train.batch_keys:
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


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------


def _environment(device, peak) -> dict:
    import jax

    from pose_jax import benchmarking

    return {
        "device_kind": device.device_kind,
        "backend": jax.default_backend(),
        "device_count": jax.device_count(),
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "jax_version": jax.__version__,
        "date_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M"),
        "peak_flops_assumed": peak,
        "peak_memory_bytes": benchmarking.peak_memory_bytes(device),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def _load_config(spec: str):
    import importlib

    path, _, arg = spec.partition(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    return module.get_config(arg or None)


def _row(timing, poses_per_call: int, macs: float | None, peak: float | None) -> dict:
    from pose_jax import benchmarking

    poses_s = poses_per_call / timing.median_s
    return {
        "first_call_s": timing.first_call_s,
        "median_s": timing.median_s,
        "poses_per_s": poses_s,
        "batches1024_per_s": poses_s / 1024.0,
        "gmacs_per_call": None if macs is None else macs / 1e9,
        "achieved_tflops": None if macs is None else 2 * macs / timing.median_s / 1e12,
        "flop_utilisation": benchmarking.utilisation(macs, timing.median_s, peak),
    }


def _dtype_diff(out, out32) -> dict:
    import jax.numpy as jnp

    d = jnp.abs(jnp.asarray(out, jnp.float32) - jnp.asarray(out32, jnp.float32))
    return {"bf16_max_abs_diff": float(d.max()), "bf16_mean_abs_diff": float(d.mean())}


def _setup_line(report: dict) -> str:
    mem = report["peak_memory_bytes"]
    return (
        f"{report['device_count']} x {report['device_kind']} ({report['backend']}), "
        f"host {report['host']} ({report['cpu_count']} CPUs), jax {report['jax_version']}, "
        f"{report['date_utc']} UTC; profile {report['profile']}; peak FLOP/s assumed "
        f"{report['peak_flops_assumed'] or 'n/a'}; peak device memory "
        f"{'n/a' if mem is None else f'{mem / 2**20:.1f} MiB'}."
    )


def to_markdown(report: dict) -> str:
    """The report as a markdown section (setup line + table)."""
    if report.get("mode") == "train":
        return _train_markdown(report)
    from pose_jax import benchmarking

    clip_model = report["model"] in _CLIP_SYSTEMS
    with_mpjpe = bool(report.get("mpjpe_eval"))
    if clip_model:
        cols = [("H", "H"), ("K", "K"), ("clips", "clips"), ("frames", "frames")]
    else:
        cols = [("steps", "DDIM steps"), ("batch", "poses/call")]
    cols += [
        ("first_call_s", "first call s"),
        ("median_s", "median s/call"),
        ("poses_per_s", "poses/s"),
        ("batches1024_per_s", "1024-batches/s"),
    ]
    if not clip_model:
        cols += [("published_fps", "published A100 'FPS'")]
    cols += [
        ("gmacs_per_call", "GMACs/call"),
        ("achieved_tflops", "TFLOP/s"),
        ("flop_utilisation", "utilisation"),
    ]
    if report["dtype"] == "bfloat16":
        cols += [
            ("bf16_max_abs_diff", "bf16 max abs diff"),
            ("bf16_mean_abs_diff", "bf16 mean abs diff"),
        ]
    if with_mpjpe and clip_model:
        cols += [
            ("mpjpe_p_agg_mm", "P-Agg MPJPE mm"),
            ("mpjpe_j_agg_mm", "J-Agg MPJPE mm"),
            ("mpjpe_j_best_mm", "J-Best (oracle) mm"),
        ]
    if not clip_model:
        if with_mpjpe:
            cols += [("mpjpe_mm", "MPJPE mm (this run)")]
        cols += [("published_mpjpe_mm", "published MPJPE mm")]
    head = (
        f"### {report['model']} ({report['denoiser']}), {report['dtype']}, "
        f"flip TTA {report['flip_tta']}\n\n{_setup_line(report)}"
    )
    if report.get("published") and not clip_model:
        head += f" Published columns: {report['published']} (batches of 1024 poses/s; GT 2D)."
    if with_mpjpe:
        e = report["mpjpe_eval"]
        cap = e["eval_max_batches"]
        head += (
            f"\n\nMPJPE: run {e['workdir']}, checkpoint step {e['checkpoint_step']} "
            f"({e['params']} params), {e['dataset']} split {e['split']}, "
            f"{e['num_sequences']} sequences ({e['num_frames_weighted']:.0f} weighted frames"
            f"{f', at most {cap} sampler calls' if cap else ''}), "
            f"eval batch {e['eval_batch_size']}, mode {e['mode']}, weighting {e['weighting']}; "
            "float32 (as launch.evaluate)"
        )
        head += f", T_test {GCN_T_TEST}." if not clip_model else "."
        pub = report.get("published_j_best_h20k10_mm")
        if pub:
            head += (
                f" Published J-Best at H20 K10 ({report['published']}): "
                f"{pub['cpn']} mm (CPN 2D), {pub['gt']} mm (GT 2D)."
            )
    return head + "\n\n" + benchmarking.markdown_table(report["rows"], cols) + "\n"


def _train_markdown(report: dict) -> str:
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
        f"gradient {report['gradient_mode']}\n\n{_setup_line(report)} Paper batch "
        f"{report['paper_batch']} x {report['paper_frames']} frames (config.data.batch_size); "
        "random data on the device; first call = compile + first step; XLA memory = "
        "arguments + outputs - donated + temporaries of the compiled step."
    )
    if report.get("compile_only"):
        head += " Compiled only (--compile_only): no step was run."
    return head + "\n\n" + benchmarking.markdown_table(report["rows"], cols) + "\n"


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
    if _MODE.value == "train":
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
    app.run(main)
