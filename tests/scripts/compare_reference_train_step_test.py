"""scripts/compare_reference_train_step.py: arguments, table, and (torch) a run on a stand-in.

The stand-in is a small torch module with the reference D3DP's constructor and training
call signature, written by the test (no reference code).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_spec = importlib.util.spec_from_file_location(
    "compare_reference_train_step", os.path.join(REPO, "scripts", "compare_reference_train_step.py")
)
cts = importlib.util.module_from_spec(_spec)
sys.modules["compare_reference_train_step"] = cts
_spec.loader.exec_module(cts)

_FAKE_D3DP = """
import torch
from torch import nn


class D3DP(nn.Module):
    def __init__(self, args, joints_left, joints_right, is_train=False, **kwargs):
        super().__init__()
        self.args, self.is_train = args, is_train
        self.lift = nn.Linear(2, 3)

    def forward(self, inputs_2d, inputs_3d):
        noise = torch.randn(inputs_3d.shape, device='cuda')  # the reference draws on 'cuda'
        return self.lift(inputs_2d) + 0.0 * noise
"""


def _checkout(tmp_path, d3dp=""):
    files = {"common/diffusionpose.py": d3dp, "common/mixste.py": "", "common/generators.py": ""}
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(textwrap.dedent(text))
    return str(tmp_path)


def test_arguments_are_checked(capsys):
    args = cts.parse_args(["--reference_dir=/x"])
    assert (args.device, args.denoiser, args.clips, args.frames) == ("cpu", "d3dp", None, 243)
    for bad, says in (
        (["--clips=0"], "--clips=0"),
        (["--repeats=0"], "--repeats=0"),
        (["--warmup=-1"], "--warmup=-1"),
        (["--device=tpu"], "choose from 'cpu', 'cuda'"),
    ):
        with pytest.raises(SystemExit):
            cts.parse_args(["--reference_dir=/x", *bad])
        assert says in capsys.readouterr().err


def test_both_sides_get_pose_jax_batches_of_the_reference_shapes_and_a_zero_root():
    args = cts.parse_args(["--reference_dir=/x", "--denoiser=d3dp_tiny", "--clips=2", "--frames=5"])
    ours = cts._pose_jax_side(args)
    assert ours.row["batch"] == 2 and len(ours.batches) == 2
    for batch in ours.batches:  # what reference_step takes too
        p3, p2 = batch["pose_3d"], batch["pose_2d"]
        assert p3.shape == (2, 5, 17, 3) and p2.shape == (2, 5, 17, 2)
        assert (p3[:, :, 0] == 0).all() and abs(p2).max() <= 1.0
    assert float(ours.config.optim.lr) == 6e-5  # the paper config's, given to the reference
    assert cts._pose_jax_side(cts.parse_args(["--reference_dir=/x", "--denoiser=d3dp_tiny",
                                              "--frames=5"])).row["batch"] == 4  # fmt: skip


def test_markdown_has_one_row_per_side_and_the_ratio():
    side = {"first_call_s": 1.0, "median_s": 0.1, "steps_per_s": 10.0, "samples_per_s": 40.0,
            "tflops": 0.5, "memory_mib": 100.0}  # fmt: skip
    report = {
        "denoiser": "d3dp", "clips": 4, "frames": 243, "repeats": 5, "warmup": 1,
        "date_utc": "d", "command": "c", "speed_ratio": 1.6,
        "environment": {"torch_device": "NVIDIA H200", "jax_device": "NVIDIA H200",
                        "torch_version": "t", "jax_version": "j", "torch_tf32": True,
                        "malloc_hugetlb": "off"},
        "sides": {"reference": dict(side, median_s=0.16), "pose_jax": side},
    }  # fmt: skip
    md = cts.to_markdown(report)
    assert "Device: NVIDIA H200" in md and "TF32 matmuls: both sides" in md
    assert "| reference | 1 | 0.16 |" in md and "| pose_jax | 1 | 0.1 |" in md
    assert "1.60x" in md


def test_end_to_end_on_a_stand_in(tmp_path):
    pytest.importorskip("torch")
    root = _checkout(tmp_path, _FAKE_D3DP)
    out = tmp_path / "out"
    argv = [f"--reference_dir={root}", "--denoiser=d3dp_tiny", "--clips=1", "--frames=9",
            "--repeats=2", "--warmup=0", f"--out={out}"]  # fmt: skip
    assert cts.main(argv) == 0
    report = json.loads((out / "compare_reference_train_step.json").read_text())
    assert report["clips"] == 1 and report["frames"] == 9 and report["speed_ratio"] > 0
    ours, ref = report["sides"]["pose_jax"], report["sides"]["reference"]
    assert len(ours["times_s"]) == len(ref["times_s"]) == 2
    assert ours["memory_mib"] > 0 and report["gflop_per_step"] > 0
    assert (out / "compare_reference_train_step.md").read_text().startswith("### d3dp training")
