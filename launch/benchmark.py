r"""Times the compiled samplers of pose_jax's systems with random parameters.

GCN refiners (``--system=mmdiff|diffpose_frame``): DDIM steps ``S1..S4`` (seq
``range(0, 12, 12 // S)``, the GT config of the monoMotionDiff speed table,
REFERENCE.md 6.4) on batches of poses with flip TTA over the chain; the lifter
is not timed (``x_init`` is random). D3DP (``--system=d3dp``): an ``H x K`` grid
on ``--clips`` clips of ``--frames`` frames with flip TTA in every step.

Each row: first call (trace + compile + one run), median steady-state time per
sampler call (``block_until_ready``), poses/s (poses = batch x frames; the GCN
table's "FPS" is read as batches of 1024 poses per second, so ``batches1024_per_s``
= poses/s / 1024), MACs counted by XLA's ``cost_analysis`` of one denoiser call
times the number of calls, FLOP utilisation against the profile's peak for the
device kind, and peak device memory where the backend reports it. With
``--dtype=bfloat16`` the same inputs also go through a float32 sampler and the
max / mean absolute difference is reported. Writes ``benchmark.json`` and
``benchmark.md`` under ``--out``.

  python -m launch.benchmark --system=mmdiff --batch=256,1024
  python -m launch.benchmark --system=d3dp --grid=H1K1,H5K5 --clips=1
  python -m launch.benchmark --system=d3dp --profile=gpu --grid=H1K1,H5K5,H20K10 --clips=4
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re

from absl import app, flags

from configs import profiles

# Published numbers (REFERENCE.md 6.4 / 7): NVIDIA A100, H36M GT 2D; "FPS" read
# as batches of 1024 poses per second, MPJPE in mm.
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
}
_CONFIGS = {
    "d3dp": "configs/d3dp_h36m.py",
    "mmdiff": "configs/mmdiff_h36m.py:keypoints=gt",
    "diffpose_frame": "configs/diffpose_frame_h36m.py:keypoints=gt",
}

_SYSTEM = flags.DEFINE_enum("system", "mmdiff", sorted(_CONFIGS), "System to benchmark.")
_PROFILE = flags.DEFINE_enum("profile", "cpu", profiles.PROFILES, "Hardware profile.")
_GRID = flags.DEFINE_list(
    "grid", None, "D3DP: HxKy entries (default H1K1,H5K5); GCN: Sn entries (default S1..S4)."
)
_BATCH = flags.DEFINE_list("batch", None, "GCN: poses per call (default: the profile's).")
_CLIPS = flags.DEFINE_integer("clips", None, "D3DP: clips per call (default: the profile's).")
_FRAMES = flags.DEFINE_integer("frames", 243, "D3DP: frames per clip.")
_DENOISER = flags.DEFINE_string(
    "denoiser", None, "Registry name overriding the config's model (e.g. d3dp_tiny, mmdiff_tiny)."
)
_DTYPE = flags.DEFINE_enum(
    "dtype", None, ["float32", "bfloat16"], "Compute dtype (default: the profile's)."
)
_NO_FLIP = flags.DEFINE_bool("no_flip", False, "Disable flip TTA.")
_WARMUP = flags.DEFINE_integer("warmup", 1, "Untimed calls after the compiling call.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed calls; the median is reported.")
_PEAK_TFLOPS = flags.DEFINE_float(
    "peak_tflops", None, "Peak TFLOP/s to assume (overrides the profile's table)."
)
_OUT = flags.DEFINE_string("out", None, "Directory for benchmark.json / benchmark.md.")


def _parse_grid(model: str, grid: list[str]) -> list[dict]:
    out = []
    for entry in grid:
        e = entry.strip().upper()
        if model == "d3dp":
            m = re.fullmatch(r"H(\d+)K(\d+)", e)
            if not m:
                raise app.UsageError(f"--grid entry {entry!r}: D3DP takes HxKy, e.g. H5K5.")
            out.append({"H": int(m[1]), "K": int(m[2])})
        else:
            m = re.fullmatch(r"S(\d+)", e)
            if not m or not 1 <= int(m[1]) <= 12:
                raise app.UsageError(f"--grid entry {entry!r}: GCN models take S1..S12.")
            out.append({"steps": int(m[1])})
    return out


def run_benchmark(
    model: str,
    *,
    profile_name: str = "cpu",
    grid: list[str] | None = None,
    batches: list[int] | None = None,
    clips: int | None = None,
    frames: int = 243,
    denoiser: str | None = None,
    dtype: str | None = None,
    flip: bool = True,
    warmup: int = 1,
    repeats: int = 5,
    peak_tflops: float | None = None,
) -> dict:
    """Runs the benchmark and returns the report (a JSON-able dict with ``rows``)."""
    import dataclasses

    import jax
    import jax.numpy as jnp
    import numpy as np

    from pose_jax import benchmarking
    from pose_jax.models import get_model, make_model_fns
    from pose_jax.systems import d3dp as d3dp_lib
    from pose_jax.systems import diffpose as diffpose_lib

    profile = profiles.get_profile(profile_name)
    dtype = dtype or profile.compute_dtype
    jax.config.update("jax_default_matmul_precision", profile.matmul_precision)
    config = _load_config(_CONFIGS[model])
    device = jax.devices()[0]
    kind = device.device_kind
    peak_table = profile.peak_flops.bf16 if dtype == "bfloat16" else profile.peak_flops.fp32
    peak = peak_tflops * 1e12 if peak_tflops else benchmarking.peak_flops_per_s(kind, peak_table)
    jdtype = jnp.bfloat16 if dtype == "bfloat16" else None
    key = jax.random.key(0)
    rows = []

    if model == "d3dp":
        grid_entries = _parse_grid(model, grid or ["H1K1", "H5K5"])
        clips = clips or profile.batch_sizes.d3dp_clips
        with config.unlocked():
            config.data.num_frames = frames
            if denoiser:
                config.model.name = denoiser
        system32 = d3dp_lib.D3DPSystem.from_config(config)
        module_kw = dict(num_frames=frames, drop_path_rate=0.0)
        systems = {"float32": system32}
        if dtype == "bfloat16":
            bf = make_model_fns(get_model(config.model.name, dtype=jdtype, **module_kw))
            systems["bfloat16"] = dataclasses.replace(system32, model=bf)
        system = systems[dtype]
        params = system32.init_params(key, system32.example_batch(frames))
        pose_2d = jax.random.uniform(jax.random.key(1), (clips, frames, 17, 2), minval=-1, maxval=1)
        t0 = jnp.zeros((1,), jnp.int32)
        macs_one = benchmarking.count_macs(
            lambda p, x, t, c: system.denoise(p, x, t, c),
            params,
            jnp.zeros((1, frames, 17, 3)),
            t0,
            {"pose_2d": pose_2d[:1]},
        )
        for g in grid_entries:
            h, k = g["H"], g["K"]
            kw = dict(num_frames=frames, num_hypotheses=h, num_iterations=k, flip_tta=flip)
            sampler = system.make_sampler(**kw)
            placed = sampler.place_params(params)

            def call(i, sampler=sampler, placed=placed):
                return sampler(placed, {"pose_2d": pose_2d}, jax.random.key(i)).x0_steps

            timing = benchmarking.time_call(call, warmup=warmup, repeats=repeats)
            calls = (2 if flip else 1) * k
            macs = None if macs_one is None else macs_one * clips * h * calls
            row = _row(timing, clips * frames, macs, peak)
            row.update(H=h, K=k, clips=clips, frames=frames, denoiser_calls=calls * h * clips)
            if dtype == "bfloat16":
                ref = systems["float32"].make_sampler(**kw)
                row.update(
                    _dtype_diff(
                        call(7), ref(placed, {"pose_2d": pose_2d}, jax.random.key(7)).x0_steps
                    )
                )
            rows.append(row)
    else:
        grid_entries = _parse_grid(model, grid or ["S1", "S2", "S3", "S4"])
        batches = batches or list(profile.batch_sizes.gcn_poses)
        with config.unlocked():
            if denoiser:
                config.model.name = denoiser
        system32 = diffpose_lib.DiffPoseSystem.from_config(config)
        systems = {"float32": system32}
        if dtype == "bfloat16":
            kwargs = dict(config.model.get("kwargs") or {})
            kwargs = {k: v for k, v in kwargs.items() if v is not None}
            bf = make_model_fns(get_model(config.model.name, dtype=jdtype, **kwargs))
            systems["bfloat16"] = dataclasses.replace(system32, denoiser=bf)
        system = systems[dtype]
        params = system32.init_params(key, system32.example_batch(1))
        t_test = 12
        pub = PUBLISHED[model]
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
                kw = dict(num_timesteps=t_test, num_iterations=s, flip_tta=flip)
                sampler = system.make_sampler(**kw)
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
                    published_fps=pub["fps"].get(s),
                    published_mpjpe_mm=pub["mpjpe_mm"].get(s),
                )
                if dtype == "bfloat16":
                    ref = systems["float32"].make_sampler(**kw)
                    out32 = ref(placed, {"pose_2d": uv}, jax.random.key(7), x_init).x0_steps
                    row.update(_dtype_diff(call(7), out32))
                rows.append(row)

    mem = benchmarking.peak_memory_bytes(device)
    del np
    return {
        "model": model,
        "denoiser": config.model.name,
        "profile": profile.name,
        "dtype": dtype,
        "matmul_precision": profile.matmul_precision,
        "flip_tta": flip,
        "device_kind": kind,
        "backend": jax.default_backend(),
        "device_count": jax.device_count(),
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "jax_version": jax.__version__,
        "date_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M"),
        "peak_flops_assumed": peak,
        "peak_memory_bytes": mem,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "published": PUBLISHED.get(model, {}).get("source"),
        "rows": rows,
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


def to_markdown(report: dict) -> str:
    """The report as a markdown section (setup line + table)."""
    from pose_jax import benchmarking

    if report["model"] == "d3dp":
        cols = [("H", "H"), ("K", "K"), ("clips", "clips"), ("frames", "frames")]
    else:
        cols = [("steps", "DDIM steps"), ("batch", "poses/call")]
    cols += [
        ("first_call_s", "first call s"),
        ("median_s", "median s/call"),
        ("poses_per_s", "poses/s"),
        ("batches1024_per_s", "1024-batches/s"),
    ]
    if report["model"] != "d3dp":
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
    mem = report["peak_memory_bytes"]
    head = (
        f"### {report['model']} ({report['denoiser']}), {report['dtype']}, "
        f"flip TTA {report['flip_tta']}\n\n"
        f"{report['device_count']} x {report['device_kind']} ({report['backend']}), "
        f"host {report['host']} ({report['cpu_count']} CPUs), jax {report['jax_version']}, "
        f"{report['date_utc']} UTC; profile {report['profile']}; peak FLOP/s assumed "
        f"{report['peak_flops_assumed'] or 'n/a'}; peak device memory "
        f"{'n/a' if mem is None else f'{mem / 2**20:.1f} MiB'}."
    )
    if report.get("published"):
        head += f" Published column: {report['published']} (batches of 1024 poses/s)."
    return head + "\n\n" + benchmarking.markdown_table(report["rows"], cols) + "\n"


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    profile = profiles.get_profile(_PROFILE.value)
    profiles.set_xla_flags(profile)  # before jax initialises (imported lazily below)
    report = run_benchmark(
        _SYSTEM.value,
        profile_name=_PROFILE.value,
        grid=_GRID.value,
        batches=None if _BATCH.value is None else [int(b) for b in _BATCH.value],
        clips=_CLIPS.value,
        frames=_FRAMES.value,
        denoiser=_DENOISER.value,
        dtype=_DTYPE.value,
        flip=not _NO_FLIP.value,
        warmup=_WARMUP.value,
        repeats=_REPEATS.value,
        peak_tflops=_PEAK_TFLOPS.value,
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
