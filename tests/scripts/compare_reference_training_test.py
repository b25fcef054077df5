"""scripts/compare_reference_training.py without torch: arguments, summary and table."""

from __future__ import annotations

import importlib.util
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_spec = importlib.util.spec_from_file_location(
    "compare_reference_training", os.path.join(REPO, "scripts", "compare_reference_training.py")
)
crt = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(crt)


def _checkout(tmp_path):
    for rel in ("common/diffusionpose.py", "common/mixste.py", "common/generators.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    return str(tmp_path)


def test_arguments_are_checked(tmp_path, capsys):
    root = _checkout(tmp_path)
    args = crt.parse_args([f"--reference_dir={root}", "--steps_per_call=1,10"])
    assert args.steps_per_call == [1, 10] and args.steps == 300 and args.reference_dir == root
    assert args.microbatch_size == []  # the config's
    both = crt.parse_args([f"--reference_dir={root}", "--microbatch_size=0,4"])
    assert both.microbatch_size == [0, 4]
    for bad, says in (
        (["--steps=120"], "multiples of 50"),
        (["--rounds=0"], "--rounds=0"),
        (["--steps_per_call=1,x"], "expected integers"),
        (["--steps_per_call=0"], "positive integers"),
        (["--microbatch_size=4,y"], "expected integers, e.g. 0,4"),
        (["--microbatch_size=-1"], "integers >= 0"),
    ):
        with pytest.raises(SystemExit):
            crt.parse_args([f"--reference_dir={root}", *bad])
        assert says in capsys.readouterr().err
    with pytest.raises(SystemExit, match=r"common/diffusionpose\.py is missing"):
        crt.parse_args([f"--reference_dir={tmp_path / 'nowhere'}"])


def _run(sps, cpu=100.0, load=0.5):
    return {"steps_per_s": sps, "cpu_ms_per_step": cpu, "final_loss": 0.1, "load_1min": load}


def test_summary_takes_medians_and_ratios_to_the_reference():
    sides = {
        "reference": [_run(10.0, 200), _run(8.0, 220), _run(12.0, 180)],
        "pose_jax, steps_per_call=10": [_run(15.0), _run(16.0), _run(14.0)],
    }
    ref, ours = crt.summarise(sides)
    assert ref["steps_per_s"] == 10.0 and ref["ratio_to_reference"] == 1.0
    assert ref["cpu_ms_per_step"] == 200
    assert ours["steps_per_s"] == 15.0 and ours["ratio_to_reference"] == pytest.approx(1.5)
    report = {
        "cpu": "cpu", "torch": "t", "torch_threads": 2, "date_utc": "d", "config": "c.py",
        "model": "m", "batch": 16, "frames": 27, "dataset": "ds", "sequences": 4, "steps": 300,
        "warmup": 50, "rounds": 3, "summary": [ref, ours],
    }  # fmt: skip
    md = crt.to_markdown(report)
    rows = [ln for ln in md.splitlines() if ln.startswith("| ")]
    assert len(rows) == 3 and "| pose_jax, steps_per_call=10 | 15.00 |" in rows[2]
    assert "| 1.50x |" in rows[2] and "[15.0, 16.0, 14.0]" in rows[2]
