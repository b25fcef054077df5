"""Tests for scripts/gpu_suite_report.py and (slow) scripts/gpu_suite.sh in its smoke form."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

_SCRIPTS = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "scripts")


def _load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(_SCRIPTS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


rep = _load("gpu_suite_report")

_GCN = {
    "mode": "sample", "model": "mmdiff", "dtype": "bfloat16", "peak_memory_bytes": 2**30,
    "rows": [{"steps": s, "batch": 1024, "first_call_s": 2.0, "median_s": 0.002 * s,
              "batches1024_per_s": 500.0 / s, "published_fps": fps, "achieved_tflops": 1.0,
              "flop_utilisation": 0.01, "bf16_max_abs_diff": 1e-3}
             for s, fps in ((1, 47.5), (2, 25.7))],
}  # fmt: skip
_D3DP = {
    "mode": "sample", "model": "d3dp", "dtype": "float32", "peak_memory_bytes": 3 * 2**30,
    "model_kwargs": {"attention_impl": "cudnn"},
    "rows": [{"H": 5, "K": 5, "clips": 4, "frames": 243, "first_call_s": 9.0, "median_s": 0.5,
              "poses_per_s": 1944.0, "achieved_tflops": 200.0, "flop_utilisation": 0.4}],
}  # fmt: skip
_TRAIN = {
    "mode": "train", "model": "d3dp", "denoiser": "d3dp", "peak_memory_bytes": 16 * 2**30,
    "rows": [{"batch": 4, "frames": 243, "compile_s": 20.0, "median_s": 0.1, "steps_per_s": 10.0,
              "samples_per_s": 40.0, "achieved_tflops": 100.0, "flop_utilisation": 0.2,
              "xla_memory_mib": 15000.0}],
}  # fmt: skip
_REF = {
    "system": "mmdiff",
    "rows": [{"setting": "S1, 1024 poses", "reference_median_s": 0.02,
              "pose_jax_median_s": 0.002, "speed_ratio": 10.0}],
}  # fmt: skip
_REF_TRAIN = {
    "clips": 4, "frames": 243, "speed_ratio": 1.6,
    "sides": {"reference": {"median_s": 0.16}, "pose_jax": {"median_s": 0.1}},
}  # fmt: skip


def _runs(tmp_path):
    runs = tmp_path / "runs"
    steps = [
        ("environment", "0", None, None),
        ("mmdiff_bf16", "0", "benchmark", _GCN),
        ("d3dp_f32", "0", "benchmark", _D3DP),
        ("train_d3dp", "0", "benchmark", _TRAIN),
        ("ref_mmdiff", "0", "compare_reference_speed", _REF),
        ("ref_train_d3dp", "0", "compare_reference_train_step", _REF_TRAIN),
        ("finepose_bf16", "124", None, None),
        ("train_ktpformer", "skipped", None, None),
    ]
    lines = []
    for name, rc, kind, report in steps:
        (runs / name).mkdir(parents=True)
        (runs / name / "log.txt").write_text(f"log of {name}\nlast line of {name}\n")
        if report is not None:
            (runs / name / f"{kind}.json").write_text(json.dumps(report))
            (runs / name / f"{kind}.md").write_text(f"### own markdown of {name}\n")
        lines.append(f"{name}\t{rc}\t3\tpython -m something --{name}\n")
    (runs / "steps.tsv").write_text("".join(lines))
    return runs


def test_summary_rows_and_markdown(tmp_path):
    suite = rep.build_suite(str(_runs(tmp_path)), seconds=400)
    status = {s["name"]: s["status"] for s in suite["steps"]}
    assert status["finepose_bf16"] == "timed out" and status["train_ktpformer"] == "skipped"
    gcn = rep.gcn_rows(suite["steps"])
    assert [r["times_published"] for r in gcn] == pytest.approx([500 / 47.5, 250 / 25.7])
    assert [r["target_met"] for r in gcn] == [True, False]  # 10.5x and 9.7x against 10x
    (clip,) = rep.clip_rows(suite["steps"])
    assert clip["setting"] == "H5K5, 4 x 243 frames" and clip["attention"] == "cudnn"
    assert clip["peak_memory_gib"] == 3.0
    (train,) = rep.train_rows(suite["steps"])
    assert train["peak_memory_gib"] == 16.0 and train["steps_per_s"] == 10.0
    refs = rep.reference_rows(suite["steps"])
    assert [r["what"] for r in refs] == ["mmdiff sampling", "d3dp training step"]
    assert refs[1]["setting"] == "4 x 243 frames" and refs[1]["speed_ratio"] == 1.6
    md = rep.to_markdown(suite)
    assert "(400 s of wall time)" in md and "log of environment" in md
    assert "| finepose_bf16 | timed out | 3 |" in md
    assert "### own markdown of d3dp_f32" in md and "last line of finepose_bf16" in md
    for line in md.splitlines():  # no table cell holds a stray '|'
        if line.startswith("| system | dtype"):
            assert line.count("|") == len(line.split("|")) - 1


def test_main_writes_json_and_markdown(tmp_path, capsys):
    runs, out = _runs(tmp_path), tmp_path / "out"
    assert rep.main([str(runs), f"--out={out}", "--seconds=12"]) == 0
    suite = json.loads((out / "suite.json").read_text())
    assert suite["seconds"] == 12 and len(suite["steps"]) == 8
    md = (out / "suite.md").read_text()
    assert "### GCN refiners in the layout of monoMotionDiff's A100 table" in md
    assert md.strip() == capsys.readouterr().out.strip()


def test_bad_runs_dir_names_the_file(tmp_path, capsys):
    assert rep.main([str(tmp_path), f"--out={tmp_path / 'o'}"]) == 2
    assert "steps.tsv: no steps.tsv" in capsys.readouterr().err
    (tmp_path / "steps.tsv").write_text("a\tb\n")
    assert rep.main([str(tmp_path), f"--out={tmp_path / 'o'}"]) == 2
    assert "steps.tsv:1: expected 4 tab-separated fields, got 2" in capsys.readouterr().err


@pytest.mark.slow
def test_gpu_suite_smoke_runs_its_steps_and_writes_the_report(tmp_path):
    """The shell suite in its smoke form on this machine: three steps and the report."""
    env = dict(
        os.environ, SUITE_SMOKE="1", PYTHON=sys.executable, JAX_PLATFORMS="",
        SUITE_STEPS="environment,mmdiff_f32,train_d3dp", SUITE_SECONDS="300",
    )  # fmt: skip
    root = os.path.join(_SCRIPTS, os.pardir)
    done = subprocess.run(
        ["bash", "scripts/gpu_suite.sh", str(tmp_path)], cwd=root, env=env,
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    suite = json.loads((tmp_path / "suite.json").read_text())
    assert [s["name"] for s in suite["steps"]] == ["environment", "mmdiff_f32", "train_d3dp"]
    assert all(s["status"] == "ok" for s in suite["steps"])
    assert len(rep.gcn_rows(suite["steps"])) == 4 and len(rep.train_rows(suite["steps"])) == 1
    assert (tmp_path / "logs.tar.gz").stat().st_size > 0
