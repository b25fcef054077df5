"""Tests for pose_jax.benchmarking and launch.benchmark (no timing assertions)."""

import functools
import importlib.util
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import app, flags
from absl.testing import flagsaver

from configs import profiles
from launch import benchmark
from pose_jax import benchmarking

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
# Compile time dominates these tests; the timed programs need no optimisation here.
FAST = {"xla_backend_optimization_level": 0}


def test_count_macs_matches_hand_count_for_dense_layer():
    b, n_in, n_out = 8, 16, 32
    x, w, bias = jnp.ones((b, n_in)), jnp.ones((n_in, n_out)), jnp.ones((n_out,))
    # A matmul is b * n_in * n_out multiply-adds.
    assert benchmarking.count_macs(lambda x, w: x @ w, x, w) == b * n_in * n_out
    # XLA counts the bias add as one flop per output element (half a MAC).
    macs = benchmarking.count_macs(lambda x, w, c: x @ w + c, x, w, bias)
    assert macs == b * n_in * n_out + b * n_out / 2


def test_compile_timed_cost_and_memory_of_a_donating_step():
    def step(w, x):
        return w - 0.1 * x.T @ (x @ w)

    w, x = jnp.ones((64, 32)), jnp.ones((128, 64))
    compiled, seconds = benchmarking.compile_timed(
        step, w, x, donate_argnums=0, compiler_options=FAST
    )
    assert seconds > 0
    macs = benchmarking.macs_from_cost(benchmarking.compiled_cost(compiled))
    assert macs >= 2 * 128 * 64 * 32  # two matmuls
    mem = benchmarking.compiled_memory_bytes(compiled)
    assert mem is not None and mem >= (64 * 32 + 128 * 64) * 4  # at least the arguments
    out = compiled(w, x)
    assert out.shape == (64, 32) and w.is_deleted()  # donated


def test_limit_windows_cuts_sequences_to_the_call_budget():
    def seq(n):
        return {
            "pose_2d": np.zeros((n, 3, 17, 2)),
            "mask": np.ones((n, 3), bool),
            "intrinsics": np.arange(9.0),
            "action_name": "Walking",
        }

    windows = [seq(5), seq(3), seq(4)]
    assert [w["pose_2d"].shape[0] for w in benchmarking.limit_windows(windows, 2, 0)] == [5, 3, 4]
    # 5 windows = 3 calls of 2, then 1 call left: 2 of the next 3 windows, then stop.
    got = list(benchmarking.limit_windows(windows, 2, 4))
    assert [w["pose_2d"].shape[0] for w in got] == [5, 2]
    assert got[1]["mask"].shape == (2, 3) and got[1]["intrinsics"].shape == (9,)
    with pytest.raises(ValueError, match="batch_size"):
        list(benchmarking.limit_windows(windows, 0, 1))


def test_peak_flops_lookup_prefers_longest_match():
    table = {"v5": 1.0, "v5p": 2.0, "default": None}
    assert benchmarking.peak_flops_per_s("TPU v5p", table) == 2.0
    assert benchmarking.peak_flops_per_s("TPU v5", table) == 1.0
    assert benchmarking.peak_flops_per_s("cpu", table) is None


def test_time_call_and_markdown():
    timing = benchmarking.time_call(lambda i: jnp.ones(3) * i, warmup=0, repeats=3)
    assert len(timing.times_s) == 3 and timing.median_s >= 0
    md = benchmarking.markdown_table([{"a": 1.5, "b": None}], [("a", "A"), ("b", "B")])
    assert md.splitlines() == ["| A | B |", "|---|---|", "| 1.5 | n/a |"]
    md = benchmarking.markdown_table([{"a": 15970.4, "b": 1234.56}], [("a", "A"), ("b", "B")])
    assert md.splitlines()[2] == "| 15970 | 1235 |"


@pytest.mark.parametrize("name", profiles.PROFILES)
def test_profiles_apply(name):
    from configs import mmdiff_h36m

    p = profiles.get_profile(name)
    assert p.compute_dtype in ("float32", "bfloat16")
    c = profiles.apply(p, mmdiff_h36m.get_config("runlocal"))
    assert c.profile.name == name and c.model.dtype == p.compute_dtype


def _check_report(report, keys, *, macs_key="gmacs_per_call"):
    md = benchmark.to_markdown(report)
    json.loads(json.dumps(report))  # JSON-able
    lines = [ln for ln in md.splitlines() if ln.startswith("|")]
    assert len(lines) == 2 + len(report["rows"])
    assert len({ln.count("|") for ln in lines}) == 1  # well-formed table
    for row in report["rows"]:
        for k in keys:
            assert k in row, k
            assert row[k] is not None and math.isfinite(row[k]), (k, row[k])
        assert row["median_s"] > 0 and row[macs_key] > 0
    return md


def test_d3dp_benchmark_tiny_bf16():
    report = benchmark.run_benchmark(
        "d3dp",
        denoiser="d3dp_tiny",
        grid=["H1K1"],
        clips=1,
        frames=3,
        dtype="bfloat16",
        flip=False,
        warmup=0,
        repeats=1,
        compiler_options=FAST,
    )
    _check_report(report, ["H", "K", "bf16_max_abs_diff", "first_call_s"])
    assert report["device_kind"] == jax.devices()[0].device_kind


def test_finepose_sample():
    report = benchmark.run_benchmark(
        "finepose",
        denoiser="finepose_tiny",
        grid=["H2K1"],
        clips=1,
        frames=3,
        warmup=0,
        repeats=1,
        compiler_options=FAST,
    )
    _check_report(report, ["H", "K", "poses_per_s", "gmacs_per_call"])
    assert (report["rows"][0]["H"], report["rows"][0]["denoiser_calls"]) == (2, 4)  # 2 H K


def test_diffpose_video_sample():
    report = benchmark.run_benchmark(
        "diffpose_video",
        denoiser="gcndiff_tiny",
        grid=["S1"],
        batches=[4],
        warmup=0,
        repeats=1,
        compiler_options=FAST,
    )
    md = _check_report(report, ["steps", "batch", "poses_per_s"])
    assert report["rows"][0]["published_fps"] is None  # not in the published table
    assert "published MPJPE mm" in md and "MPJPE mm (this run)" not in md


# mmdiff trains through the same code path (config, batch keys, constant uv noise) as
# diffpose_video, whose denoiser compiles several times faster.
_TINY = {
    "d3dp": "d3dp_tiny",
    "finepose": "finepose_tiny",
    "diffpose_frame": "gcndiff_tiny",
    "diffpose_video": "gcndiff_tiny",
}
_TRAIN_KEYS = [
    "steps_per_s",
    "samples_per_s",
    "poses_per_s",
    "compile_s",
    "first_call_s",
    "gmacs_per_step",
    "achieved_tflops",
    "xla_memory_mib",
    "params_m",
    "final_loss",
]


def _main(**flag_values):
    flags.FLAGS.mark_as_parsed()
    defaults = dict(
        mode="sample",
        system=None,
        grid=None,
        batch=None,
        clips=None,
        frames=None,
        denoiser=None,
        dtype=None,
        no_flip=False,
        workdir=None,
        eval_max_batches=0,
        compile_only=False,
        warmup=0,
        repeats=1,
        out=None,
    )
    with flagsaver.flagsaver(**{**defaults, **flag_values}):
        benchmark.main(["benchmark"])


@pytest.mark.parametrize("system", sorted(_TINY))
def test_train_mode(system, tmp_path, monkeypatch):
    # Through the flags (main), with the fast compile option added.
    run = functools.partial(benchmark.run_train_benchmark, compiler_options=FAST)
    monkeypatch.setattr(benchmark, "run_train_benchmark", run)
    clips = system in ("d3dp", "finepose")
    _main(
        mode="train",
        system=system,
        denoiser=_TINY[system],
        batch=["2"] if clips else ["16"],
        frames=3 if clips else None,
        repeats=2,
        out=str(tmp_path),
    )
    report = json.loads((tmp_path / "benchmark.json").read_text())
    md = _check_report(report, _TRAIN_KEYS, macs_key="gmacs_per_step")
    assert (tmp_path / "benchmark.md").read_text() == md
    row = report["rows"][0]
    # The paper batch comes from the config: 4 clips of 243 frames, or 1024 frames.
    assert (row["paper_batch"], row["paper_frames"]) == ((4, 243) if clips else (1024, 1))
    assert row["batch"] == (2 if clips else 16) and row["frames"] == (3 if clips else 1)
    assert row["poses_per_s"] == pytest.approx(row["samples_per_s"] * row["frames"])
    assert row["samples_per_s"] == pytest.approx(row["batch"] * row["steps_per_s"])
    assert row["first_call_s"] > row["compile_s"] > 0
    assert report["mode"] == "train" and report["denoiser"] == _TINY[system]
    assert report["ema"] == (not clips)  # DiffPose family keeps EMA, D3DP/FinePOSE do not
    assert md.startswith(f"### train: {system} ({_TINY[system]}")


def test_train_compile_only_runs_no_step():
    report = benchmark.run_train_benchmark(
        "diffpose_video",
        denoiser="gcndiff_tiny",
        batches=[8],
        compile_only=True,
        compiler_options=FAST,
    )
    row = report["rows"][0]
    assert row["gmacs_per_step"] > 0 and row["xla_memory_mib"] > 0 and row["compile_s"] > 0
    assert "median_s" not in row and "final_loss" not in row
    md = benchmark.to_markdown(report)
    assert "no step was run" in md and md.splitlines()[-1].count("n/a") == 7  # no timing columns


@pytest.mark.slow
def test_train_fsdp_splits_the_state_over_devices():
    kw = dict(denoiser="gcndiff_tiny", batches=[16], repeats=1, warmup=0, compiler_options=FAST)
    rep = benchmark.run_train_benchmark("diffpose_frame", devices=8, **kw)
    # The tiny model's kernels are below the default 2**16 threshold: lower it.
    fsdp = benchmark.run_train_benchmark(
        "diffpose_frame", devices=8, param_sharding="fsdp", fsdp_min_size=256, **kw
    )
    a, b = rep["rows"][0], fsdp["rows"][0]
    assert (a["devices"], a["param_sharding"]) == (8, "replicated")
    assert (b["devices"], b["param_sharding"]) == (8, "fsdp")
    assert np.isfinite(a["final_loss"]) and np.isfinite(b["final_loss"])
    # Most of the state (params, EMA, Adam moments) is split 8 ways.
    assert a["state_mib_per_device"] / 8 < b["state_mib_per_device"] < a["state_mib_per_device"] / 3
    with pytest.raises(app.UsageError, match="does not split"):
        benchmark.run_train_benchmark("diffpose_frame", devices=8, **{**kw, "batches": [12]})


def test_main_writes_json_and_markdown(tmp_path):
    _main(
        system="diffpose_frame",
        denoiser="gcndiff_tiny",
        grid=["S1"],
        batch=["8"],
        no_flip=True,
        out=str(tmp_path),
    )
    report = json.loads((tmp_path / "benchmark.json").read_text())
    assert report["rows"][0]["batch"] == 8
    assert report["rows"][0]["published_fps"] == 48.3
    assert report["rows"][0]["published_mpjpe_mm"] == 33.1
    _check_report(report, ["steps", "batch", "poses_per_s", "published_fps"])
    assert (tmp_path / "benchmark.md").read_text().startswith("### diffpose_frame")


@pytest.mark.parametrize(
    "flag_values, match",
    [
        (dict(mode="train", workdir="/nowhere"), "--workdir"),
        (dict(compile_only=True), "--compile_only"),
        (dict(mode="train", grid=["S1"]), "--grid"),
        (dict(mode="train", dtype="bfloat16"), "--dtype"),
        (dict(mode="train", system="mmdiff", frames=9), "single frames"),
        (dict(mode="train", system="mmdiff", batch=["0"]), "--batch=0"),
        (dict(system="mmdiff", grid=["H1K1"]), "S1..S12"),
        (dict(system="d3dp", grid=["S1"]), "HxKy"),
        (dict(system="d3dp", batch=["8"]), "--clips"),
        (dict(system="mmdiff", frames=27), "single poses"),
        (dict(system="mmdiff", eval_max_batches=3), "needs --workdir"),
        (dict(workdir="/nowhere", denoiser="d3dp_tiny"), "--denoiser"),
        (dict(workdir="/nowhere"), "no config.json"),
    ],
)
def test_bad_flags_are_refused(flag_values, match):
    with pytest.raises(app.UsageError, match=match):
        _main(**flag_values)


# ---------------------------------------------------------------------------
# --workdir: the MPJPE columns equal launch.evaluate's numbers
# ---------------------------------------------------------------------------


def _launch_test_helpers():
    """tests/launch/conftest.py (its ``tiny_config``), loaded under its own module name."""
    path = os.path.join(os.path.dirname(__file__), "launch", "conftest.py")
    spec = importlib.util.spec_from_file_location("launch_test_helpers", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_data_dir(tmp_path_factory):
    from data_pipelines.build import build

    d = tmp_path_factory.mktemp("tfds")
    build("synthetic_pose", "tiny", data_dir=str(d), progress=False)
    return str(d)


@pytest.mark.slow
def test_workdir_d3dp_mpjpe_equals_launch_evaluate(tiny_data_dir, tmp_path):
    from launch import experiment

    config = _launch_test_helpers().tiny_config(
        tiny_data_dir, **{"train.num_steps": 2, "eval.max_sequences": 1}
    )
    run = str(tmp_path / "run")
    experiment.train_and_evaluate(config, run, evaluate_after=False)
    report = benchmark.run_benchmark(
        workdir=run, grid=["H2K2"], clips=1, warmup=0, repeats=1, compiler_options=FAST
    )
    assert report["model"] == "d3dp" and report["rows"][0]["frames"] == 9  # the run's model
    md = _check_report(report, ["mpjpe_p_agg_mm", "mpjpe_j_agg_mm", "mpjpe_j_best_mm"])
    assert "P-Agg MPJPE mm" in md and "checkpoint step 2 (raw params)" in md
    # launch.evaluate with the same settings (H, K, flip; the run's key, batch, windows).
    config.eval.num_hypotheses, config.eval.num_iterations = 2, 2
    want = experiment.evaluate(config, run)["mpjpe_mm"]
    row = report["rows"][0]
    assert row["mpjpe_p_agg_mm"] == pytest.approx(want["p_agg"], rel=1e-5)
    assert row["mpjpe_j_agg_mm"] == pytest.approx(want["j_agg"], rel=1e-5)
    assert row["mpjpe_j_best_mm"] == pytest.approx(want["j_best"], rel=1e-5)
    with pytest.raises(app.UsageError, match="is a 'd3dp' run"):
        benchmark.run_benchmark("finepose", workdir=run)
    with pytest.raises(app.UsageError, match="9-frame clips"):
        benchmark.run_benchmark(workdir=run, frames=27)


@pytest.mark.slow
def test_workdir_gcn_mpjpe_equals_launch_evaluate(tiny_data_dir, tmp_path):
    from configs import diffpose_frame_h36m
    from launch import convert as convert_cli
    from launch import experiment

    lifter = str(tmp_path / "lifter")  # the recorded reference lifter, as launch.convert writes it
    convert_cli.convert(
        "diffpose_lifter", os.path.join(FIXTURES, "diffpose_tiny_lifter.npz"), lifter, num_heads=2
    )
    config = diffpose_frame_h36m.get_config("runlocal")
    config.data.data_dir = tiny_data_dir
    config.model.lifter_path = lifter
    config.model.kwargs.num_layers = 1  # compile time
    config.train.num_steps = 1
    config.train.checkpoint_every_steps = 1
    config.eval.max_sequences = 1
    config.eval.batch_size = 16  # frames per sampler call: a 40-80 frame sequence takes 3-5
    config.eval.compiler_options = FAST
    run = str(tmp_path / "run")
    experiment.train_and_evaluate(config, run, evaluate_after=False)
    report = benchmark.run_benchmark(
        workdir=run, grid=["S1"], batches=[8], warmup=0, repeats=1, compiler_options=FAST
    )
    md = _check_report(report, ["mpjpe_mm", "published_mpjpe_mm", "steps"])
    assert "MPJPE mm (this run)" in md and f"T_test {benchmark.GCN_T_TEST}" in md
    # launch.evaluate at the timed settings: T_test 12, S = 1, flip TTA over the chain.
    config.eval.num_timesteps, config.eval.num_iterations = benchmark.GCN_T_TEST, 1
    config.eval.flip_tta = True
    want = experiment.evaluate(config, run)["mpjpe_mm"]["p_agg"]
    assert report["rows"][0]["mpjpe_mm"] == pytest.approx(want, rel=1e-5)
    assert report["rows"][0]["published_mpjpe_mm"] == 33.1
    # --eval_max_batches: one sampler call of 16 frames, still a finite MPJPE.
    capped = benchmark.run_benchmark(
        workdir=run,
        grid=["S1"],
        batches=[8],
        warmup=0,
        repeats=1,
        eval_max_batches=1,
        compiler_options=FAST,
    )
    assert math.isfinite(capped["rows"][0]["mpjpe_mm"])
    e, full = capped["mpjpe_eval"], report["mpjpe_eval"]
    assert (e["eval_max_batches"], e["num_frames_weighted"]) == (1, 16)
    assert full["num_frames_weighted"] > 16
