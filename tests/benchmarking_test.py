"""Tests for pose_jax.benchmarking and launch.benchmark (no timing assertions)."""

import json

import jax
import jax.numpy as jnp
import pytest

from configs import profiles
from launch import benchmark
from pose_jax import benchmarking


def test_count_macs_matches_hand_count_for_dense_layer():
    b, n_in, n_out = 8, 16, 32
    x, w, bias = jnp.ones((b, n_in)), jnp.ones((n_in, n_out)), jnp.ones((n_out,))
    # A matmul is b * n_in * n_out multiply-adds.
    assert benchmarking.count_macs(lambda x, w: x @ w, x, w) == b * n_in * n_out
    # XLA counts the bias add as one flop per output element (half a MAC).
    macs = benchmarking.count_macs(lambda x, w, c: x @ w + c, x, w, bias)
    assert macs == b * n_in * n_out + b * n_out / 2


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


@pytest.mark.parametrize("name", profiles.PROFILES)
def test_profiles_apply(name):
    from configs import mmdiff_h36m

    p = profiles.get_profile(name)
    assert p.compute_dtype in ("float32", "bfloat16")
    c = profiles.apply(p, mmdiff_h36m.get_config("runlocal"))
    assert c.profile.name == name and c.model.dtype == p.compute_dtype


def _check_report(report, tmp_path, keys):
    md = benchmark.to_markdown(report)
    json.loads(json.dumps(report))  # JSON-able
    lines = [ln for ln in md.splitlines() if ln.startswith("|")]
    assert len(lines) == 2 + len(report["rows"])
    assert len({ln.count("|") for ln in lines}) == 1  # well-formed table
    for row in report["rows"]:
        for k in keys:
            assert k in row
        assert row["median_s"] > 0 and row["gmacs_per_call"] > 0


def test_d3dp_benchmark_tiny_bf16(tmp_path):
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
    )
    _check_report(report, tmp_path, ["H", "K", "bf16_max_abs_diff", "first_call_s"])
    assert report["device_kind"] == jax.devices()[0].device_kind


def test_main_writes_json_and_markdown(tmp_path):
    from absl import flags
    from absl.testing import flagsaver

    flags.FLAGS.mark_as_parsed()
    with flagsaver.flagsaver(
        system="diffpose_frame",
        denoiser="gcndiff_tiny",
        grid=["S1"],
        batch=["8"],
        no_flip=True,
        warmup=0,
        repeats=1,
        out=str(tmp_path),
    ):
        benchmark.main(["benchmark"])
    report = json.loads((tmp_path / "benchmark.json").read_text())
    assert report["rows"][0]["batch"] == 8
    assert report["rows"][0]["published_fps"] == 48.3
    _check_report(report, tmp_path, ["steps", "batch", "poses_per_s", "published_fps"])
    assert (tmp_path / "benchmark.md").read_text().startswith("### diffpose_frame")
