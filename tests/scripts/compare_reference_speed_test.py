"""Tests for scripts/compare_reference_speed.py (no timing assertions).

The pure parts (arguments, reference-directory check, timing order, table and
ratio formatting, the missing-torch message) run without torch. The parts that
drive a reference run with torch on small stand-in modules written by the tests
(same constructor and call signatures as the references; no reference code).
"""

import importlib.util
import json
import os
import sys
import textwrap

import pytest

_PATH = os.path.join(
    os.path.dirname(__file__), os.pardir, os.pardir, "scripts", "compare_reference_speed.py"
)


def _load(name="compare_reference_speed"):
    spec = importlib.util.spec_from_file_location(name, _PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


crs = _load()


# -- arguments -------------------------------------------------------------------


def test_parse_args_defaults_per_system():
    a = crs.parse_args(["--system=d3dp", "--reference_dir=/x"])
    assert a.grid_entries == [{"H": 1, "K": 1}] and (a.frames, a.clips) == (243, 1)
    assert a.torch_threads == os.cpu_count() and a.repeats == 5 and a.warmup == 1
    g = crs.parse_args(["--system=mmdiff", "--reference_dir=/x", "--batch=256,1024"])
    assert [e["steps"] for e in g.grid_entries] == [1, 2, 3, 4] and g.batches == [256, 1024]
    assert g.denoise_rows == [None]  # the family's default
    g = crs.parse_args(["--system=diffpose_frame", "--reference_dir=/x", "--grid=s2, S4"])
    assert g.grid_entries == [{"steps": 2}, {"steps": 4}] and g.batches == [256]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--system=d3dp", "--grid=S1"], "D3DP takes HxKy"),
        (["--system=d3dp", "--grid=H0K1"], "D3DP takes HxKy"),
        (["--system=mmdiff", "--grid=H1K1"], "S1..S12"),
        (["--system=mmdiff", "--grid=S13"], "S1..S12"),
        (["--system=mmdiff", "--batch=0"], "--batch entry '0'"),
        (["--system=mmdiff", "--batch=abc"], "not an integer"),
        (["--system=d3dp", "--repeats=0"], "--repeats=0"),
        (["--system=d3dp", "--warmup=-1"], "--warmup=-1"),
        (["--system=d3dp", "--torch_threads=0"], "--torch_threads=0"),
        (["--system=d3dp", "--grid=H1K2", "--no_flip"], "K=1 only"),
        (["--system=mmdiff", "--max_denoise_rows=-1"], "entry '-1'; expected an integer >= 0"),
        (["--system=mmdiff", "--max_denoise_rows=many"], "expected 'default' or an integer"),
        (["--system=mmdiff", "--max_denoise_rows=0,0"], "expected distinct entries"),
    ],
)
def test_parse_args_rejects(argv, message, capsys):
    with pytest.raises(SystemExit):
        crs.parse_args([*argv, "--reference_dir=/x"])
    assert message in capsys.readouterr().err


def test_parse_args_needs_system_and_reference_dir(capsys):
    with pytest.raises(SystemExit):
        crs.parse_args(["--system=d3dp"])
    assert "--reference_dir" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        crs.parse_args(["--system=finepose", "--reference_dir=/x"])


def test_argparse_only_no_absl_flags():
    # launch/benchmark.py defines absl flags with the same names; this script must not.
    from absl import flags

    before = set(flags.FLAGS)
    _load("compare_reference_speed_again")
    assert set(flags.FLAGS) == before
    del sys.modules["compare_reference_speed_again"]


# -- reference directory ------------------------------------------------------------


def _touch(root, files):
    for rel in files:
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write("")


@pytest.mark.parametrize("system", crs.SYSTEMS)
def test_check_reference_dir_names_the_missing_file(system, tmp_path):
    repo, files = crs.REFERENCES[system]
    with pytest.raises(crs.ReferenceDirError, match="is not a directory"):
        crs.check_reference_dir(system, str(tmp_path / "nope"))
    _touch(tmp_path, files[:-1])
    missing = os.path.join(str(tmp_path), files[-1])
    with pytest.raises(crs.ReferenceDirError) as err:
        crs.check_reference_dir(system, str(tmp_path))
    assert missing in str(err.value) and repo in str(err.value)
    _touch(tmp_path, files[-1:])
    assert crs.check_reference_dir(system, str(tmp_path)) == str(tmp_path)


def test_main_reports_the_expected_file(tmp_path, capsys):
    rc = crs.main(["--system=d3dp", f"--reference_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert rc == 2
    assert os.path.join(str(tmp_path), "common/diffusionpose.py") in err
    assert "paTRICK-swk/D3DP" in err


def test_require_torch_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    with pytest.raises(ImportError, match=r"pip install torch"):
        crs.require_torch()


# -- timing and reporting -------------------------------------------------------------


def test_time_interleaved_alternates_and_takes_the_median():
    order = []
    clock_values = iter(float(i) for i in range(1000))

    def fn(name, cost):
        def call(i):
            order.append((name, i))
            for _ in range(cost - 1):
                next(clock_values)  # each call advances the fake clock by `cost`

        return call

    t = crs.time_interleaved(
        {"a": fn("a", 1), "b": fn("b", 3)},
        warmup=1,
        repeats=3,
        clock=lambda: next(clock_values),
    )
    assert order == [
        ("a", 0), ("b", 0),  # first calls
        ("a", 1), ("b", 1),  # warm-up
        ("a", 1000), ("b", 1000), ("b", 1001), ("a", 1001), ("a", 1002), ("b", 1002),
    ]  # fmt: skip
    assert t["a"].median_s == 1 and t["b"].median_s == 3 and len(t["b"].times_s) == 3
    with pytest.raises(ValueError, match="repeats"):
        crs.time_interleaved({"a": fn("a", 1)}, repeats=0)


def _report(ratios=(2.0, 6.0), system="mmdiff", gemm=True):
    rows = []
    for i, r in enumerate(ratios):
        ours = crs.Timing(1.0, 0.5, (0.5,))
        ref = crs.Timing(2.0, 0.5 * r, (0.5 * r,))
        rows.append(crs.make_row(f"S{i + 1}, 256 poses", 256, 2 * (i + 1), ours, ref, gflop=10.0))
    env = dict(
        host="h", platform="p", cpu_model="cpu", cpu_count=2, python="3.12", torch_version="t",
        torch_threads=2, jax_version="j", jax_backend="cpu", jax_device_count=1, xla_flags="",
        loadavg_before="1/1/1", loadavg_after="2/2/2",
    )  # fmt: skip
    return {
        "system": system,
        "reference_repo": crs.REFERENCES[system][0],
        "denoiser": "mmdiff",
        "flip_tta": True,
        "warmup": 1,
        "repeats": 5,
        "setting_note": "note",
        "date_utc": "2026-01-01 00:00",
        "command": "python scripts/compare_reference_speed.py --system=mmdiff",
        "gemm": dict(size=2048, repeats=5, torch_gflops=80.0, xla_gflops=100.0, best_gflops=100.0)
        if gemm
        else None,
        "environment": env,
        "rows": rows,
    }


def test_speed_ratio_and_row():
    assert crs.speed_ratio(0.5, 1.5) == pytest.approx(3.0)
    with pytest.raises(ValueError):
        crs.speed_ratio(0.0, 1.0)
    row = _report(ratios=(3.0,))["rows"][0]
    assert row["reference_poses_per_s"] == pytest.approx(256 / 1.5)
    assert row["pose_jax_poses_per_s"] == pytest.approx(512)
    assert row["speed_ratio"] == pytest.approx(3.0)
    assert row["pose_jax_gflops"] == pytest.approx(20.0)
    assert row["reference_gflops"] == pytest.approx(10.0 / 1.5)


def test_markdown_table_and_target_lines(tmp_path):
    report = _report()
    md = crs.to_markdown(report)
    lines = [ln for ln in md.splitlines() if ln.startswith("|")]
    assert len(lines) == 2 + 2 and len({ln.count("|") for ln in lines}) == 1
    assert "reference s/call" in lines[0] and "speed ratio (pose_jax / reference)" in lines[0]
    assert "| 2.00x |" in lines[2] and "| 6.00x |" in lines[3]
    assert "torch t (2 threads" in md and "jax j" in md and "2026-01-01 00:00 UTC" in md
    assert "Command: `python scripts/compare_reference_speed.py --system=mmdiff`" in md
    assert "partly met (1 of 2 settings; ratios 2.00x to 6.00x)" in md  # 4x for 256 poses
    assert "Ceiling:" in md and "torch 80 GFLOP/s, XLA 100 GFLOP/s" in md
    summary = crs.target_summary("d3dp", report["rows"])
    assert "pose_jax >= 1.8x" in summary and ": met (2 of 2" in summary and "Ceiling" not in summary
    assert ": not met (0 of 1" in crs.target_summary("mmdiff", _report(ratios=(1.2,))["rows"])
    # a GCN row of one pose must reach 10x, a row of 256 poses 4x
    one = crs.make_row("S1, 1 pose", 1, 2, crs.Timing(1, 1.0, (1.0,)), crs.Timing(1, 5.0, (5.0,)))
    many = _report(ratios=(4.5,))["rows"]
    summary = crs.target_summary("mmdiff", [*many, one])
    assert "4x / 10x" in summary and "partly met (1 of 2" in summary
    assert ": met (1 of 1" in crs.target_summary("mmdiff", many)
    assert crs.target_for("d3dp", 1) == 1.8 and crs.target_for("diffpose_frame", 1) == 10.0
    assert "Float32 GEMM" not in crs.to_markdown(_report(gemm=False))
    json_path, md_path = crs.write_report(report, str(tmp_path / "out"))
    assert json.load(open(json_path))["rows"][1]["speed_ratio"] == pytest.approx(6.0)
    assert open(md_path).read() == md


# -- with torch: stand-in reference modules ------------------------------------------

_FAKE_MMDIFF_MODEL = """
import torch
from torch import nn


def adj_mx_from_edges(num_pts, edges, sparse=True):
    a = torch.eye(num_pts)
    a[edges[:, 0], edges[:, 1]] = 1.0
    return a / a.sum(1, keepdim=True)


class DiffModel(nn.Module):
    def __init__(self, adj_2d3d, adj_ctx, hid_dim, coords_dim, num_layers, n_head, dropout, n_pts):
        super().__init__()
        self.adj = adj_2d3d
        self.lin = nn.Linear(5, 5)
        self.calls = 0

    def forward(self, x, x2d, mask, t):
        assert x.shape[1:] == (1, 17, 5) and x2d.shape[1:] == (1, 17, 2)
        assert not self.training and not torch.is_grad_enabled()
        self.calls += 1
        return self.lin(x) * 0.0
"""

_FAKE_MMDIFF_UTILS = """
import numpy as np
import torch


def get_beta_schedule(beta_schedule, *, beta_start, beta_end, num_diffusion_timesteps):
    return np.linspace(beta_start, beta_end, num_diffusion_timesteps, dtype=np.float64)


def generalized_steps(x, x2d, src_mask, seq, model, b, **kwargs):
    xs, x0s = [x], []
    for i in reversed(list(seq)):
        t = (torch.ones(x.size(0)) * i).cuda()  # hard-coded CUDA, as the references
        e = model(xs[-1], x2d, src_mask, t.float())
        x0s.append(xs[-1] - e)
        xs.append(xs[-1] - e + 0.0 * torch.randn_like(x, device="cuda"))
    return xs, x0s
"""

_FAKE_D3DP = """
import torch
from torch import nn


class D3DP(nn.Module):
    def __init__(self, args, joints_left, joints_right, is_train=True, num_proposals=1,
                 sampling_timesteps=1):
        super().__init__()
        self.args, self.h, self.k = args, num_proposals, sampling_timesteps
        self.lin = nn.Linear(3, 3)

    def forward(self, input_2d, input_3d, input_2d_flip=None):
        b, f, j, _ = input_2d.shape
        assert torch.equal(input_2d_flip[..., 0, 0], -input_2d[..., 0, 0])  # u mirrored
        x = torch.randn(b, self.h, f, j, 3, device="cuda")
        steps = [self.lin(x) for _ in range(self.k)]
        return torch.stack(steps, dim=1)
"""


def _write(root, files):
    for rel, text in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(textwrap.dedent(text))


def test_cpu_redirect_restores_torch():
    torch = pytest.importorskip("torch")
    randn, cuda = torch.randn, torch.Tensor.cuda
    with crs.cpu_redirect(torch):
        assert torch.zeros(2).cuda().device.type == "cpu"
        assert torch.randn(2, device="cuda").device.type == "cpu"
        assert torch.randn_like(torch.zeros(2), device="cuda").device.type == "cpu"
    assert torch.randn is randn and torch.Tensor.cuda is cuda


def test_reference_d3dp_driver_on_a_stand_in(tmp_path):
    pytest.importorskip("torch")
    import numpy as np

    _write(tmp_path, {"common/diffusionpose.py": _FAKE_D3DP, "common/mixste.py": ""})
    root = crs.check_reference_dir("d3dp", str(tmp_path))
    model = crs.build_reference_d3dp(
        root, frames=5, hypotheses=2, iterations=3, flip=True, embed_dim=8, depth=1
    )
    assert not model.training and model.args.test_time_augmentation and model.args.cs == 8
    pose_2d = np.random.default_rng(0).uniform(-1, 1, (1, 5, 17, 2)).astype(np.float32)
    out = crs.reference_d3dp_call(model, pose_2d)(0)
    assert tuple(out.shape) == (1, 3, 2, 5, 17, 3)  # [B, K, H, F, J, 3]


def test_gcn_end_to_end_on_a_stand_in(tmp_path, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("scipy")
    _write(
        tmp_path,
        {
            "models/model.py": _FAKE_MMDIFF_MODEL,
            "models/diffusion/utils.py": _FAKE_MMDIFF_UTILS,
            "models/backbone/ChebConv.py": "",
            "models/backbone/GraFormer.py": "",
        },
    )
    out = tmp_path / "out"
    argv = [
        "--system=mmdiff",
        f"--reference_dir={tmp_path}",
        "--denoiser=mmdiff_tiny",
        "--batch=8",
        "--grid=S2",
        "--warmup=0",
        "--repeats=1",
        "--no_gemm",
        "--max_denoise_rows=0,4",
        f"--out={out}",
    ]
    assert crs.main(argv) == 0
    printed = capsys.readouterr().out
    report = json.load(open(out / "compare_reference_speed.json"))
    one_call, parts = report["rows"]  # both pose_jax sides, timed in the same rounds
    assert (one_call["max_denoise_rows"], parts["max_denoise_rows"]) == ("one call", 4)
    assert one_call["reference_times_s"] == parts["reference_times_s"]
    row = one_call
    assert (row["steps"], row["batch"], row["network_passes_per_call"]) == (2, 8, 4)
    assert row["speed_ratio"] > 0 and row["gflop_per_call"] > 0
    assert report["environment"]["torch_threads"] == os.cpu_count()
    assert report["denoiser"] == "mmdiff_tiny" and report["gemm"] is None
    assert "| S2, 8 poses | 4 | one call |" in printed and "| S2, 8 poses | 4 | 4 |" in printed


# -- --device ----------------------------------------------------------------------


def test_device_flag_defaults_to_cpu_and_names_the_choices(capsys):
    assert crs.parse_args(["--system=d3dp", "--reference_dir=/x"]).device == "cpu"
    assert crs.parse_args(["--system=d3dp", "--reference_dir=/x", "--device=cuda"]).device == "cuda"
    with pytest.raises(SystemExit):
        crs.parse_args(["--system=d3dp", "--reference_dir=/x", "--device=tpu"])
    assert "choose from 'cpu', 'cuda'" in capsys.readouterr().err
    assert crs.PROFILE_OF_DEVICE == {"cpu": "cpu", "cuda": "gpu"}


def test_device_text_only_on_a_gpu():
    assert crs._device_text({"torch_threads": 2}) == ""  # reports from before --device
    assert crs._device_text({"torch_device": "cpu"}) == ""
    text = crs._device_text({"torch_device": "NVIDIA H200", "jax_device": "NVIDIA H200"})
    assert "GPU: NVIDIA H200" in text and "TF32 on both sides" in text


def test_set_torch_device_cpu_and_a_missing_gpu(monkeypatch):
    torch = pytest.importorskip("torch")
    assert crs.set_torch_device(torch, "cpu") == {"torch_device": "cpu", "torch_tf32": False}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ImportError, match=r"--device=cuda: torch .* sees no CUDA GPU"):
        crs.set_torch_device(torch, "cuda")
