r"""Times pose_jax against the reference PyTorch implementation on the same machine.

Runs one system's sampler in both implementations at identical settings, in one
process, with random weights (speed does not depend on them), and prints per
setting the median seconds per sampler call, poses/s and the speed ratio
``pose_jax poses/s / reference poses/s`` (> 1: pose_jax is faster):

* ``--system=d3dp`` -- the reference's own flip-TTA DDIM loop
  (``D3DP.ddim_sample_flip`` in ``common/diffusionpose.py``; plain
  ``ddim_sample`` with ``--no_flip``, K = 1 only) against pose_jax's sampler:
  H hypotheses, K iterations (``--grid=H1K1,H5K5``) on ``--clips`` clips of
  ``--frames`` frames (default one 243-frame clip), MixSTE2 512 x 8.
* ``--system=diffpose_frame`` -- DiffPose's GCNdiff (``models/gcndiff.py``) driven
  by its ``common/utils_diff.generalized_steps``;
  ``--system=mmdiff`` -- monoMotionDiff's DiffModel (``models/model.py``) driven by
  ``models/diffusion/utils.generalized_steps``; both against pose_jax's sampler.
  DDIM (eta 0) ``S`` steps (``--grid=S1,S2,S3,S4``)
  on ``range(0, 12, 12 // S)`` (T_test 12, the GT config of monoMotionDiff's speed
  table), flip TTA over the chain (the reference side runs the chain on the
  mirrored input too and averages, as monoMotionDiff's ``runner.test``), batches
  of ``--batch`` poses (default 256) with random xyz in ``x_init``. The lifter is not
  timed on either side.

pose_jax's side goes through the system interface (``pose_jax.systems.base``):
``system.sampler_inputs`` makes the inputs (given to the reference too),
``system.make_sampler(SamplerSpec)`` the sampler, in the setting of the system's
published table (``launch.benchmarks.common``, as ``launch/benchmark.py`` times it).

Both sides make the same number of network passes per sampler call (pose_jax
batches the flipped copies into the same call, the references call the network
twice). Timing is the same on both sides: the first call and ``--warmup`` calls
are not timed, then ``--repeats`` calls of each side alternate (pose_jax,
reference, reference, pose_jax, ...), so background load hits both; the median
is reported. pose_jax calls end with ``jax.block_until_ready``; reference calls
run under ``torch.inference_mode()`` in eval mode with ``torch.set_num_threads``
= ``--torch_threads`` (default: the CPU count). XLA uses every core by default.

Run it on an otherwise idle machine: with ``torch.set_num_threads`` = all cores,
any other busy process makes the reference's many small OpenMP regions wait for a
descheduled thread (on a 2-core VM we saw reference calls 10x slower next to one
other job, pose_jax's about 2x slower), so alternating the calls does not cancel
background load. Each row records the 1-minute load average at its start.

Each row also gives both sides' GFLOP/s (XLA's ``cost_analysis`` count of one
denoiser call times the passes), and the run starts by measuring the machine's
float32 2048^3 GEMM rate in torch and XLA (skip with ``--no_gemm``): the work per
call is fixed, so that rate bounds the ratio any implementation can reach.

The reference is imported at run time from the checkout the user gives (nothing
of it is copied into pose_jax); its hard-coded ``.cuda()`` calls are redirected
to the CPU while it runs, and a stand-in replaces ``timm`` when that cannot be
imported (as in ``scripts/record_d3dp_fixtures.py``). Needs ``torch`` (``pip
install torch``, or ``pip install -e '.[torch]'``) in the same Python as
pose_jax, plus what the reference imports (``einops``, ``scipy``)::

  python scripts/compare_reference_speed.py --system=d3dp --reference_dir=/src/D3DP
  python scripts/compare_reference_speed.py --system=d3dp --reference_dir=/src/D3DP \
      --grid=H1K1,H5K5 --repeats=1 --warmup=0
  python scripts/compare_reference_speed.py --system=diffpose_frame \
      --reference_dir=/src/Diffpose --batch=256,1024
  python scripts/compare_reference_speed.py --system=mmdiff \
      --reference_dir=/src/monoMotionDiff --out=/tmp/compare

``--device=cuda`` runs both sides on one GPU: pose_jax under its ``gpu`` profile, the
reference with its own ``.cuda()`` calls (not redirected), every reference call
ended by ``torch.cuda.synchronize()``, float32 matmuls in TF32 on both sides (XLA's
default precision on the GPU; torch is switched from full float32 to match), XLA
given 45% of the GPU's memory and torch the rest, the GEMM ceiling measured at
8192^3::

  python scripts/compare_reference_speed.py --system=mmdiff --device=cuda \
      --reference_dir=/src/monoMotionDiff --batch=1024

``--out DIR`` writes ``compare_reference_speed.json`` and ``.md`` there.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shlex
import sys
import types
from collections.abc import Mapping, Sequence
from typing import Any

_REPO_ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
_SCRIPTS_DIR = os.path.dirname(os.path.abspath(__file__))
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)  # configs/, launch/, pose_jax/ when run as a script

from launch import host_memory  # noqa: E402

if __name__ == "__main__":  # both sides under the same malloc setting (launch/host_memory.py)
    host_memory.ensure_hugepage_malloc("compare_reference_speed.py")

# The benchmarks' tables (no absl flags; jax is started by _jax_setup, after XLA_FLAGS).
from launch.benchmarks import common as bench  # noqa: E402
from pose_jax import skeleton as skeleton_lib  # noqa: E402
from pose_jax.benchmarking import Timing, time_interleaved  # noqa: E402

SYSTEMS = ("d3dp", "diffpose_frame", "mmdiff")

# The reference repository of each system and the files this script imports from it.
REFERENCES = {
    "d3dp": (
        "paTRICK-swk/D3DP",
        ("common/diffusionpose.py", "common/mixste.py"),
    ),
    "diffpose_frame": (
        "GONGJIA0208/Diffpose",
        (
            "models/gcndiff.py",
            "models/ChebConv.py",
            "models/GraFormer.py",
            "common/utils_diff.py",
        ),
    ),
    "mmdiff": (
        "jjkislele/monoMotionDiff",
        (
            "models/model.py",
            "models/backbone/ChebConv.py",
            "models/backbone/GraFormer.py",
            "models/diffusion/utils.py",
        ),
    ),
}

# The experiment configs, as launch/benchmark.py times them (GT 2D for the GCN table).
CONFIG_SPECS = {system: bench.CONFIGS[system] for system in SYSTEMS}

# Speed targets of issue #18 (pose_jax / reference throughput, CPU, identical float32
# work): D3DP 1.8x; the GCN refiners 4x at batches of many poses and 10x at one pose
# (single-frame online use, where the reference is bound by per-op dispatch).
TARGETS = {"d3dp": 1.8, "diffpose_frame": 4.0, "mmdiff": 4.0}
SINGLE_POSE_TARGET = 10.0


def target_for(system: str, poses_per_call: int) -> float:
    """The target ratio of one row: a GCN refiner's single-pose rows have their own."""
    if system != "d3dp" and poses_per_call == 1:
        return SINGLE_POSE_TARGET
    return TARGETS[system]


# The GT config of monoMotionDiff's speed table (Tab. 3): T_test 12, steps S on
# range(0, 12, 12 // S).
T_TEST = bench.T_TEST
NUM_DIFFUSION_STEPS = 51  # DiffPose / monoMotionDiff: linear betas 1e-4 .. 1e-3
# Human3.6M-17 as the references number it (pose_jax.skeleton), as lists for torch.
_H36M = skeleton_lib.get_skeleton("h36m")
JOINTS_LEFT = list(_H36M.joints_left)
JOINTS_RIGHT = list(_H36M.joints_right)
H36M_EDGES = [list(e) for e in _H36M.edges]  # DiffPose / monoMotionDiff's 16 edges, in order
NUM_JOINTS = _H36M.num_joints
# How each kind of published table's pose_jax sampler starts and flips (the report's note).
SETTING_NOTES = {
    "clips": "D3DP DDIM eta 1 from N(0, I), flip TTA inside every step",
    "poses": (
        f"DDIM eta 0 from t = {T_TEST} - {T_TEST} // S (T_test {T_TEST}), random x_init, "
        "flip TTA over the chain"
    ),
}


# --device -> the pose_jax hardware profile (configs/profiles) its side runs under.
DEVICES = ("cpu", "cuda")
PROFILE_OF_DEVICE = {"cpu": "cpu", "cuda": "gpu"}
GEMM_SIZE = {"cpu": 2048, "cuda": 8192}  # large enough to reach each machine's GEMM rate
# A GPU is shared by both sides in one process: XLA takes this fraction of its memory
# (unless XLA_PYTHON_CLIENT_MEM_FRACTION is set), torch's caching allocator the rest.
JAX_GPU_MEM_FRACTION = "0.45"


class ReferenceDirError(FileNotFoundError):
    """``--reference_dir`` is not a checkout of the expected reference repository."""


# ---------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------


def _csv(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def parse_grid(system: str, entries: Sequence[str]) -> list[dict[str, int]]:
    """``['H1K1', ...]`` (D3DP) or ``['S1', ...]`` (GCN refiners) -> list of settings.

    ``launch.benchmarks.common.parse_grid`` for the systems this script compares.

    Raises:
      ValueError: an entry that does not fit the system (the message names it).
    """
    if system not in SYSTEMS:
        raise ValueError(f"--system={system!r}; expected one of {SYSTEMS}.")
    return bench.parse_grid(system, entries)


def _positive_ints(name: str, values: Sequence[str]) -> list[int]:
    out = []
    for v in values:
        try:
            n = int(v)
        except ValueError:
            raise ValueError(f"--{name} entry {v!r} is not an integer.") from None
        if n < 1:
            raise ValueError(f"--{name} entry {v!r}; expected an integer >= 1.")
        out.append(n)
    if not out:
        raise ValueError(f"--{name} is empty; expected at least one integer >= 1.")
    return out


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="compare_reference_speed.py",
        description=__doc__.split("\n", 1)[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--system", required=True, choices=SYSTEMS, help="System to compare.")
    ap.add_argument(
        "--reference_dir",
        required=True,
        help="Checkout of the reference: paTRICK-swk/D3DP (d3dp), GONGJIA0208/Diffpose "
        "(diffpose_frame) or jjkislele/monoMotionDiff (mmdiff).",
    )
    ap.add_argument(
        "--grid", default=None, help="D3DP: HxKy entries (default H1K1); GCN: Sn (default S1..S4)."
    )
    ap.add_argument("--batch", default="256", help="GCN: poses per call, comma-separated.")
    ap.add_argument("--clips", type=int, default=1, help="D3DP: clips per call.")
    ap.add_argument("--frames", type=int, default=243, help="D3DP: frames per clip.")
    ap.add_argument(
        "--denoiser",
        default=None,
        help="pose_jax registry name overriding the config's model (e.g. d3dp_tiny, "
        "mmdiff_tiny); the reference is built at the same width/depth.",
    )
    ap.add_argument("--no_flip", action="store_true", help="Disable flip TTA on both sides.")
    ap.add_argument(
        "--max_denoise_rows",
        default="default",
        help="pose_jax's rows per device in one denoiser call, comma-separated (each value "
        "a pose_jax side timed in the same rounds): 'default' (the family's for the "
        "platform), 0 (one call) or N.",
    )
    ap.add_argument("--warmup", type=int, default=1, help="Untimed calls after the first call.")
    ap.add_argument("--repeats", type=int, default=5, help="Timed calls per side (median).")
    ap.add_argument(
        "--torch_threads", type=int, default=None, help="torch.set_num_threads (default: CPUs)."
    )
    ap.add_argument(
        "--no_gemm", action="store_true", help="Skip the float32 GEMM-rate measurement."
    )
    ap.add_argument(
        "--device",
        default="cpu",
        choices=DEVICES,
        help="Where both sides run: 'cpu' (pose_jax's cpu profile; the reference's .cuda() "
        "calls redirected) or 'cuda' (one GPU, pose_jax's gpu profile; float32 matmuls in "
        "TF32 on both sides, as XLA's default precision does on the GPU).",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="Directory for the JSON and markdown reports.")
    return ap


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parses and validates the command line (``argparse``; no absl flags are defined)."""
    ap = build_parser()
    args = ap.parse_args(argv)
    try:
        default = ["H1K1"] if args.system == "d3dp" else ["S1", "S2", "S3", "S4"]
        args.grid_entries = parse_grid(args.system, _csv(args.grid) if args.grid else default)
        args.batches = _positive_ints("batch", _csv(args.batch))
        args.denoise_rows = _denoise_rows(_csv(args.max_denoise_rows))
        for name in ("clips", "frames", "repeats"):
            if getattr(args, name) < 1:
                raise ValueError(f"--{name}={getattr(args, name)}; expected >= 1.")
        if args.warmup < 0:
            raise ValueError(f"--warmup={args.warmup}; expected >= 0.")
        if args.system == "d3dp" and args.no_flip and any(g["K"] > 1 for g in args.grid_entries):
            raise ValueError(
                "--no_flip with --system=d3dp takes K=1 only: the reference's no-flip loop "
                "(D3DP.ddim_sample) feeds a float64 state (its float64 schedule buffers) back "
                "into the float32 network after the first step and fails."
            )
        if args.torch_threads is not None and args.torch_threads < 1:
            raise ValueError(f"--torch_threads={args.torch_threads}; expected >= 1.")
    except ValueError as e:
        ap.error(str(e))
    args.torch_threads = args.torch_threads or os.cpu_count() or 1
    return args


def check_reference_dir(system: str, path: str) -> str:
    """The absolute checkout path, after checking the files this script imports exist.

    Raises:
      ReferenceDirError: naming the directory and the first expected file not there.
    """
    repo, files = REFERENCES[system]
    root = os.path.abspath(os.path.expanduser(path))
    if not os.path.isdir(root):
        raise ReferenceDirError(
            f"--reference_dir={path!r} is not a directory; expected a checkout of "
            f"github.com/{repo} (containing {files[0]})."
        )
    for rel in files:
        if not os.path.isfile(os.path.join(root, rel)):
            raise ReferenceDirError(
                f"--reference_dir={path!r} does not look like a checkout of "
                f"github.com/{repo} for --system={system}: expected file "
                f"{os.path.join(root, rel)} (not found)."
            )
    return root


def require_torch():
    """Imports torch, or raises ImportError saying how to install it."""
    try:
        import torch
    except ImportError as e:
        raise ImportError(
            "compare_reference_speed: PyTorch is not installed in this Python "
            f"({sys.executable}); the reference runs in the same process as pose_jax. "
            "Install it with `pip install torch` (or `pip install -e '.[torch]'`), plus "
            "`pip install einops scipy` for the reference code."
        ) from e
    return torch


# ---------------------------------------------------------------------------
# Timing and reporting (pure; Timing and time_interleaved: pose_jax.benchmarking)
# ---------------------------------------------------------------------------


def _denoise_rows(values: Sequence[str]) -> list[int | None]:
    """``--max_denoise_rows`` entries: 'default' -> None (the family's), else ints >= 0."""
    out = []
    for v in values:
        if v == "default":
            out.append(None)
            continue
        try:
            out.append(int(v))
        except ValueError:
            raise ValueError(
                f"--max_denoise_rows entry {v!r}; expected 'default' or an integer >= 0."
            ) from None
        if out[-1] < 0:
            raise ValueError(f"--max_denoise_rows entry {v!r}; expected an integer >= 0.")
    if not out or len(set(out)) != len(out):
        raise ValueError(f"--max_denoise_rows={','.join(values)}; expected distinct entries.")
    return out


def speed_ratio(ours_s: float, reference_s: float) -> float:
    """pose_jax throughput / reference throughput at the same work per call."""
    if ours_s <= 0 or reference_s <= 0:
        raise ValueError(f"speed_ratio: times must be > 0 (got {ours_s}, {reference_s}).")
    return reference_s / ours_s


def make_row(
    setting: str,
    poses: int,
    passes: int,
    ours: Timing,
    ref: Timing,
    *,
    gflop: float | None = None,
    **extra,
) -> dict:
    """One table row (JSON-able); ``gflop``: the work of one call (both sides do the same)."""
    rate = lambda s: None if gflop is None else gflop / s  # noqa: E731
    return {
        "setting": setting,
        "poses_per_call": poses,
        "network_passes_per_call": passes,
        "reference_first_call_s": ref.first_call_s,
        "pose_jax_first_call_s": ours.first_call_s,
        "reference_median_s": ref.median_s,
        "pose_jax_median_s": ours.median_s,
        "reference_poses_per_s": poses / ref.median_s,
        "pose_jax_poses_per_s": poses / ours.median_s,
        "speed_ratio": speed_ratio(ours.median_s, ref.median_s),
        "gflop_per_call": gflop,
        "reference_gflops": rate(ref.median_s),
        "pose_jax_gflops": rate(ours.median_s),
        "reference_times_s": list(ref.times_s),
        "pose_jax_times_s": list(ours.times_s),
        **extra,
    }


COLUMNS = (
    ("setting", "setting"),
    ("network_passes_per_call", "network passes/call"),
    ("max_denoise_rows", "rows per denoiser call (max)"),
    ("reference_median_s", "reference s/call"),
    ("pose_jax_median_s", "pose_jax s/call"),
    ("reference_poses_per_s", "reference poses/s"),
    ("pose_jax_poses_per_s", "pose_jax poses/s"),
    ("speed_ratio", "speed ratio (pose_jax / reference)"),
    ("reference_gflops", "reference GFLOP/s"),
    ("pose_jax_gflops", "pose_jax GFLOP/s"),
    ("loadavg_1min", "load avg (1 min) at start"),
)


def _fmt(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    lines = [
        "| " + " | ".join(h for _, h in COLUMNS) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
    ]
    for row in rows:
        cells = []
        for key, _ in COLUMNS:
            v = row.get(key)
            cells.append(f"{v:.2f}x" if key == "speed_ratio" and v is not None else _fmt(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def target_summary(
    system: str, rows: Sequence[Mapping[str, Any]], gemm_gflops: float | None = None
) -> str:
    """The target verdict; with the machine's GEMM rate, also the most any code could reach."""
    targets = [target_for(system, r["poses_per_call"]) for r in rows]
    ratios = [r["speed_ratio"] for r in rows]
    met = sum(r >= t for r, t in zip(ratios, targets, strict=True))
    verdict = "met" if met == len(ratios) else ("not met" if met == 0 else "partly met")
    wanted = " / ".join(f"{t:g}x" for t in sorted(set(targets)))
    text = (
        f"Target (issue #18): pose_jax >= {wanted} the reference's throughput"
        f"{' (10x at one pose per call)' if len(set(targets)) > 1 else ''}: {verdict} "
        f"({met} of {len(ratios)} settings; ratios {min(ratios):.2f}x to {max(ratios):.2f}x)."
    )
    ref_rates = [r.get("reference_gflops") for r in rows]
    if gemm_gflops and all(ref_rates):
        ceilings = [gemm_gflops / r for r in ref_rates]
        text += (
            f" Ceiling: running the same float32 work at this machine's measured GEMM rate "
            f"({gemm_gflops:.4g} GFLOP/s) would be {min(ceilings):.2f}x to "
            f"{max(ceilings):.2f}x the reference."
        )
    return text


def to_markdown(report: Mapping[str, Any]) -> str:
    """The report as a markdown section: setup, command, table, target line."""
    env = report["environment"]
    flip = "on" if report["flip_tta"] else "off"
    head = (
        f"### {report['system']}: reference {report['reference_repo']} vs pose_jax "
        f"({report['denoiser']}), float32, flip TTA {flip}\n\n"
        f"Machine: {env['cpu_model']} ({env['cpu_count']} CPUs), host {env['host']}, "
        f"{env['platform']}; glibc malloc on huge pages: {env.get('malloc_hugetlb', 'off')}; "
        f"load average {env['loadavg_before']} before, "
        f"{env['loadavg_after']} after. "
        f"{_device_text(env)}"
        f"torch {env['torch_version']} ({env['torch_threads']} threads, inference_mode, eval); "
        f"jax {env['jax_version']} ({env['jax_backend']}, {env['jax_device_count']} device(s)); "
        f"{report['date_utc']} UTC. First call excluded, {report['warmup']} warm-up, median of "
        f"{report['repeats']} alternated calls per side; random weights; "
        f"{report['setting_note']}. GFLOP/s: XLA's count of the call's work "
        f"(`cost_analysis`), divided by each side's time. {_gemm_text(report.get('gemm'))}\n\n"
        f"Command: `{report['command']}`"
    )
    table = markdown_table(report["rows"])
    gemm = (report.get("gemm") or {}).get("best_gflops")
    summary = target_summary(report["system"], report["rows"], gemm)
    return f"{head}\n\n{table}\n\n{summary}\n"


def _device_text(env: Mapping[str, Any]) -> str:
    """The GPU both sides ran on, if any (reports written before --device have none)."""
    if env.get("torch_device", "cpu") == "cpu":
        return ""
    return (
        f"GPU: {env['torch_device']} (jax: {env['jax_device']}), both sides on it, float32 "
        "matmuls in TF32 on both sides; "
    )


def _gemm_text(gemm: Mapping[str, Any] | None) -> str:
    if not gemm:
        return ""
    n = gemm["size"]
    return (
        f"Float32 GEMM {n}x{n}x{n} on this device (median of {gemm['repeats']}): torch "
        f"{gemm['torch_gflops']:.4g} GFLOP/s, XLA {gemm['xla_gflops']:.4g} GFLOP/s."
    )


# ---------------------------------------------------------------------------
# Reference side (PyTorch, imported from the user's checkout)
# ---------------------------------------------------------------------------


@contextlib.contextmanager
def cpu_redirect(torch):
    """Runs reference code that hard-codes CUDA on the CPU (``.cuda()``, ``device='cuda'``).

    Covers the sampling noise (``randn``, ``randn_like``) and the training timesteps
    (``randint``) the references draw with ``device='cuda'``.
    """
    drawn = {name: getattr(torch, name) for name in ("randn", "randn_like", "randint")}
    cuda = torch.Tensor.cuda

    def on_cpu(draw):
        def _draw(*args, **kwargs):
            kwargs.pop("device", None)
            return draw(*args, **kwargs)

        return _draw

    for name, draw in drawn.items():
        setattr(torch, name, on_cpu(draw))
    torch.Tensor.cuda = lambda self, *a, **k: self
    try:
        yield
    finally:
        for name, draw in drawn.items():
            setattr(torch, name, draw)
        torch.Tensor.cuda = cuda


def reference_device(torch, device: str):
    """The context the reference code runs in: CUDA calls redirected on the CPU, else none."""
    return cpu_redirect(torch) if device == "cpu" else contextlib.nullcontext()


def synchronize(torch, device: str) -> None:
    """Waits for the reference's queued GPU work (its calls return before the GPU is done)."""
    if device == "cuda":
        torch.cuda.synchronize()


def set_torch_device(torch, device: str) -> dict:
    """Checks ``device`` is usable and sets torch's float32 matmul mode; what was set.

    On the GPU both sides use TF32 for float32 matmuls (XLA's default precision there,
    the gpu profile's ``matmul_precision='default'``); torch's default is full float32
    for matmuls (TF32 for cuDNN convolutions), so it is switched to match.
    """
    if device == "cpu":
        return {"torch_device": "cpu", "torch_tf32": False}
    if not torch.cuda.is_available():
        raise ImportError(
            f"--device=cuda: torch {torch.__version__} sees no CUDA GPU (torch.cuda.is_available() "
            "is False); install a CUDA build of torch or use --device=cpu."
        )
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    return {"torch_device": torch.cuda.get_device_name(0), "torch_tf32": True}


def _install_lib2to3_stand_in() -> None:
    # DiffPose's models/gcndiff.py imports (and never uses) lib2to3, gone in Python 3.13.
    try:
        import lib2to3.refactor  # noqa: F401
    except ImportError:
        pkg, sub = types.ModuleType("lib2to3"), types.ModuleType("lib2to3.refactor")
        sub.get_fixers_from_package = lambda *a, **k: []
        pkg.refactor = sub
        sys.modules.update({"lib2to3": pkg, "lib2to3.refactor": sub})


def _import_reference(root: str, *modules: str) -> list[types.ModuleType]:
    sys.path.insert(0, _SCRIPTS_DIR)
    try:
        import record_diffpose_fixtures as rec  # reuses its package-name isolation
    finally:
        sys.path.remove(_SCRIPTS_DIR)
    try:
        return rec._import_from(root, *modules)
    except ModuleNotFoundError as e:
        raise ImportError(
            f"The reference code in {root} needs the module {e.name!r}, which is not "
            f"installed: pip install {e.name}"
        ) from e


def _flip_torch(x):
    """Mirror of ``[..., J, C]`` as the references write it: negate channel 0, swap L/R."""
    x = x.clone()
    x[..., 0] *= -1
    x[..., JOINTS_LEFT + JOINTS_RIGHT, :] = x[..., JOINTS_RIGHT + JOINTS_LEFT, :]
    return x


def build_reference_d3dp(root: str, *, frames: int, hypotheses: int, iterations: int,
                         flip: bool, embed_dim: int, depth: int,
                         device: str = "cpu"):  # fmt: skip
    """The reference D3DP sampling model (eval mode) on ``device`` ('cpu' or 'cuda')."""
    torch = require_torch()
    sys.path.insert(0, _SCRIPTS_DIR)
    try:
        import record_d3dp_fixtures as d3dp_rec
    finally:
        sys.path.remove(_SCRIPTS_DIR)
    d3dp_rec._install_timm_stand_in()
    (mod,) = _import_reference(root, "common.diffusionpose")
    ref_args = argparse.Namespace(
        number_of_frames=frames, test_time_augmentation=flip, timestep=1000, scale=1.0,
        cs=embed_dim, dep=depth,
    )  # fmt: skip
    model = mod.D3DP(
        ref_args,
        JOINTS_LEFT,
        JOINTS_RIGHT,
        is_train=False,
        num_proposals=hypotheses,
        sampling_timesteps=iterations,
    )
    model.device = torch.device(device)  # ddim_sample (no flip) reads self.device
    return model.to(device).eval()


def reference_d3dp_call(model, pose_2d, device: str = "cpu"):
    """``call(i)`` running the reference's sampler once on ``pose_2d [B, F, J, 2]``."""
    torch = require_torch()
    pose_2d = torch.as_tensor(pose_2d).to(device)
    flipped = _flip_torch(pose_2d)
    zeros = torch.zeros(*pose_2d.shape[:-1], 3, device=device)

    def call(i):
        torch.manual_seed(i)
        with torch.inference_mode(), reference_device(torch, device):
            out = model(pose_2d, zeros, input_2d_flip=flipped)
        synchronize(torch, device)
        return out

    return call


def _model_config(hidden, layers, heads, coords):
    model = argparse.Namespace(
        hid_dim=hidden, emd_dim=hidden, coords_dim=list(coords), num_layer=layers,
        n_head=heads, dropout=0.25, n_pts=NUM_JOINTS,
    )  # fmt: skip
    return argparse.Namespace(model=model)


def build_reference_gcn(system: str, root: str, *, hidden: int, layers: int, heads: int,
                        device: str = "cpu"):  # fmt: skip
    """``(model, generalized_steps, betas)`` of DiffPose's GCNdiff or monoMotionDiff's DiffModel.

    Model and betas are on ``device``.
    """
    torch = require_torch()
    if system == "diffpose_frame":
        _install_lib2to3_stand_in()
        gcndiff, utils = _import_reference(root, "models.gcndiff", "common.utils_diff")
        adj = gcndiff.adj_mx_from_edges(NUM_JOINTS, torch.tensor(H36M_EDGES), sparse=False)
        model = gcndiff.GCNdiff(adj, _model_config(hidden, layers, heads, (5, 5)))
    else:
        model_mod, utils = _import_reference(root, "models.model", "models.diffusion.utils")
        j = NUM_JOINTS
        edges = (
            H36M_EDGES + [[i, i + j] for i in range(j)] + [[a + j, b + j] for a, b in H36M_EDGES]
        )
        model = model_mod.DiffModel(
            adj_2d3d=model_mod.adj_mx_from_edges(2 * j, torch.tensor(edges), sparse=False),
            adj_ctx=model_mod.adj_mx_from_edges(j, torch.tensor(H36M_EDGES), sparse=False),
            hid_dim=hidden,
            num_layers=layers,
            n_head=heads,
            dropout=0.25,
            n_pts=2 * j,
            coords_dim=(3, 3),
        )
    betas = utils.get_beta_schedule(
        beta_schedule="linear",
        beta_start=1e-4,
        beta_end=1e-3,
        num_diffusion_timesteps=NUM_DIFFUSION_STEPS,
    )
    betas = torch.from_numpy(betas).float().to(device)
    return model.to(device).eval(), utils.generalized_steps, betas


def reference_gcn_call(system: str, built, uv, x_init, *, steps: int, flip: bool,
                       device: str = "cpu"):  # fmt: skip
    """``call(i)``: the references' test-loop glue around ``generalized_steps``.

    DiffPose (``test_hyber``) and monoMotionDiff (``runner.test``): the initial
    uvxyz is refined from ``t = 12 - 12 // S`` with eta 0, the xyz read out and
    re-rooted; with ``flip`` the same chain runs on the mirrored input and the
    un-mirrored result is averaged in (monoMotionDiff's flip TTA).
    """
    torch = require_torch()
    model, gen_steps, betas = built
    seq = range(0, T_TEST, T_TEST // steps)
    mask = torch.ones(1, 1, NUM_JOINTS, dtype=torch.bool, device=device)
    uv, x_init = torch.as_tensor(uv).to(device), torch.as_tensor(x_init).to(device)
    mm = system == "mmdiff"
    if mm:  # monoMotionDiff keeps a frame axis: [N, 1, J, C]
        uv, x_init = uv[:, None], x_init[:, None]

    def chain(x, guide):
        if mm:
            xs, _ = gen_steps(x.clone(), guide, mask, seq, model, betas, eta=0.0)
        else:
            xs, _ = gen_steps(x.clone(), mask, seq, model, betas, eta=0.0)
        out = xs[-1][..., 2:]
        return out - out[..., :1, :]

    def call(i):
        torch.manual_seed(i)
        with torch.inference_mode(), reference_device(torch, device):
            out = chain(x_init, uv)
            if flip:
                out_flip = chain(_flip_torch(x_init), _flip_torch(uv))
                out = (out + _flip_torch(out_flip)) / 2
        synchronize(torch, device)
        return out

    return call


def measure_gemm(size: int | None = None, repeats: int = 5, device: str = "cpu") -> dict:
    """Float32 ``size^3`` matmul rate of torch and XLA, alternated (the machine's ceiling).

    ``size`` defaults to :data:`GEMM_SIZE` of the device; on the GPU both in TF32.
    """
    torch = require_torch()
    jax = _jax_setup(device)
    import numpy as np

    size = size or GEMM_SIZE[device]
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((size, size), dtype=np.float32) for _ in range(2))
    ta, tb = torch.from_numpy(a).to(device), torch.from_numpy(b).to(device)
    ja, jb = jax.numpy.asarray(a), jax.numpy.asarray(b)
    mm = jax.jit(lambda x, y: x @ y)

    def run_torch(i):
        with torch.inference_mode():
            ta @ tb
        synchronize(torch, device)

    t = time_interleaved(
        {"torch": run_torch, "xla": lambda i: mm(ja, jb).block_until_ready()},
        warmup=1,
        repeats=repeats,
    )
    flop = 2.0 * size**3 / 1e9
    rates = {k: flop / v.median_s for k, v in t.items()}
    return {
        "size": size,
        "repeats": repeats,
        "torch_gflops": rates["torch"],
        "xla_gflops": rates["xla"],
        "best_gflops": max(rates.values()),
    }


# ---------------------------------------------------------------------------
# pose_jax side
# ---------------------------------------------------------------------------


def _load_config(system: str, denoiser: str | None):
    return bench.load_config(system, denoiser)


def _jax_setup(device: str = "cpu"):
    from configs import profiles

    profile = profiles.get_profile(PROFILE_OF_DEVICE[device])
    profiles.set_xla_flags(profile)  # before jax initialises
    if device == "cuda":
        os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", JAX_GPU_MEM_FRACTION)
    import jax

    jax.config.update("jax_default_matmul_precision", profile.matmul_precision)
    return jax


def run_rows(args, root: str, log=print) -> list[dict]:
    """Both sides at every setting; pose_jax through the system interface.

    The inputs are ``system.sampler_inputs`` of random 2D (the refiners' ``x_init``
    too: random xyz), given to both sides; the MACs are XLA's count of one
    ``system.denoise`` call on ``inputs.event``.
    """
    jax = _jax_setup(args.device)
    import numpy as np

    from pose_jax.models import get_model
    from pose_jax.systems import get_system
    from pose_jax.systems.base import model_kwargs

    config = _load_config(args.system, args.denoiser)
    kind = bench.BENCHMARKED[args.system].grid
    flip = not args.no_flip
    if kind.per_clip:
        shapes = [(args.clips, args.frames)]
        with config.unlocked():
            config.data.num_frames = args.frames
    else:
        shapes = [(n, 1) for n in args.batches]
    system = get_system(config.system).from_config(config)
    example = system.example_batch(config.data.num_frames)
    params = system.init_params(jax.random.key(args.seed), example)
    # The reference is built at the denoiser's width and depth.
    reference = REFERENCE_DRIVERS[args.system](
        args.system, root, get_model(config.model.name, **model_kwargs(config)), args.device
    )
    rng = np.random.default_rng(args.seed)
    rows = []
    for b, f in shapes:
        pose_2d = rng.uniform(-1, 1, (b, f, NUM_JOINTS, 2)).astype(np.float32)
        inputs = system.sampler_inputs(params, jax.numpy.asarray(pose_2d), jax.random.key(1))
        macs_event = bench.denoiser_macs(system, params, inputs)
        for g in args.grid_entries:
            spec = bench.sampler_spec(kind, g, frames=f, flip=flip)
            setting = bench.setting_text(kind, g, batch=b, frames=f)
            log(f"[{args.system}] {setting} ...")
            load = _loadavg1()
            sides = _ours_sides(system, spec, params, inputs, args.denoise_rows)
            ref = reference(g, pose_2d, inputs, flip)
            t = time_interleaved(
                {**{name: call for name, (call, _) in sides.items()}, "reference": ref},
                warmup=args.warmup,
                repeats=args.repeats,
            )
            passes = bench.denoiser_calls(kind, g, batch=b, flip=flip)
            macs = bench.call_macs(macs_event, kind, g, flip=flip)
            gflop = None if macs is None else 2 * macs / 1e9
            fields = bench.entry_fields(kind, g, batch=b, frames=f)
            for name, (_, rows_per_call) in sides.items():
                rows.append(
                    make_row(setting, b * f, passes, t[name], t["reference"], gflop=gflop,
                             loadavg_1min=load, max_denoise_rows=rows_per_call, **fields)
                )  # fmt: skip
                log(_progress(rows[-1]))
    return rows


def _ours_sides(system, spec, params, inputs, denoise_rows) -> dict:
    """``{name: (call(i), rows per denoiser call or 'one call')}`` per ``--max_denoise_rows``."""
    import dataclasses

    import jax

    from pose_jax import xla_options

    sides = {}
    for rows in denoise_rows:
        call, _ = bench.sampler_call(
            system, dataclasses.replace(spec, max_denoise_rows=rows), params, inputs
        )
        resolved = system.denoise_rows(xla_options.platform_of(), rows)
        name = "pose_jax" if len(denoise_rows) == 1 else f"pose_jax (rows {rows})"
        sides[name] = (
            lambda i, call=call: jax.block_until_ready(call(i)),
            "one call" if resolved is None else resolved,
        )
    return sides


def _d3dp_reference(system: str, root: str, module, device: str):
    """``make(entry, pose_2d, inputs, flip) -> call``: the reference D3DP at H, K."""

    def make(entry, pose_2d, inputs, flip):
        model = build_reference_d3dp(
            root, frames=pose_2d.shape[1], hypotheses=entry["H"], iterations=entry["K"],
            flip=flip, embed_dim=module.embed_dim, depth=module.depth, device=device,
        )  # fmt: skip
        return reference_d3dp_call(model, pose_2d, device)

    return make


def _gcn_reference(system: str, root: str, module, device: str):
    """``make(entry, pose_2d, inputs, flip) -> call``: the reference refiner at S steps."""
    import numpy as np

    built = build_reference_gcn(
        system,
        root,
        hidden=module.hidden,
        layers=module.num_layers,
        heads=module.num_heads,
        device=device,
    )

    def make(entry, pose_2d, inputs, flip):
        uv, x_init = np.asarray(inputs.cond["pose_2d"]), np.asarray(inputs.x_init)
        return reference_gcn_call(
            system, built, uv, x_init, steps=entry["steps"], flip=flip, device=device
        )

    return make


# The reference side of each system (its own code, imported from the checkout).
REFERENCE_DRIVERS = {
    "d3dp": _d3dp_reference,
    "diffpose_frame": _gcn_reference,
    "mmdiff": _gcn_reference,
}


def _progress(row) -> str:
    return (
        f"  reference {row['reference_median_s']:.4g} s/call, pose_jax "
        f"(rows per call {row.get('max_denoise_rows', 'n/a')}) "
        f"{row['pose_jax_median_s']:.4g} s/call -> {row['speed_ratio']:.2f}x"
    )


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _loadavg1() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _loadavg() -> str:
    try:
        return "/".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def run(args: argparse.Namespace, argv: Sequence[str] | None = None, log=print) -> dict:
    """Checks the inputs, runs both sides and returns the report (JSON-able)."""
    root = check_reference_dir(args.system, args.reference_dir)
    torch = require_torch()
    torch.set_num_threads(args.torch_threads)
    torch_setting = set_torch_device(torch, args.device)
    load_before = _loadavg()
    gemm = None if args.no_gemm else measure_gemm(device=args.device)
    if gemm:
        log(_gemm_text(gemm))
    rows = run_rows(args, root, log)
    import jax

    config = _load_config(args.system, args.denoiser)
    argv = sys.argv[1:] if argv is None else list(argv)
    note = SETTING_NOTES[bench.BENCHMARKED[args.system].grid.name]
    return {
        "system": args.system,
        "reference_repo": REFERENCES[args.system][0],
        "reference_dir": root,
        "denoiser": config.model.name,
        "flip_tta": not args.no_flip,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "setting_note": note,
        "target_ratio": TARGETS[args.system],
        "single_pose_target_ratio": None if args.system == "d3dp" else SINGLE_POSE_TARGET,
        "gemm": gemm,
        "date_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M"),
        "command": "python scripts/compare_reference_speed.py " + shlex.join(argv),
        "environment": {
            "host": platform.node(),
            "platform": platform.platform(),
            "cpu_model": _cpu_model(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "torch_version": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            **torch_setting,
            "jax_device": jax.devices()[0].device_kind,
            "jax_version": jax.__version__,
            "jax_backend": jax.default_backend(),
            "jax_device_count": jax.device_count(),
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "malloc_hugetlb": host_memory.describe(),
            "loadavg_before": load_before,
            "loadavg_after": _loadavg(),
        },
        "rows": rows,
    }


def write_outputs(out_dir: str, stem: str, report: Mapping[str, Any], md: str) -> tuple[str, str]:
    """Writes ``out_dir/stem.json`` and ``out_dir/stem.md`` (the comparison scripts' outputs)."""
    os.makedirs(out_dir, exist_ok=True)
    json_path, md_path = (os.path.join(out_dir, f"{stem}.{ext}") for ext in ("json", "md"))
    with open(json_path, "w") as f:
        json.dump(report, f, indent=1)
    with open(md_path, "w") as f:
        f.write(md)
    return json_path, md_path


def write_report(report: Mapping[str, Any], out_dir: str) -> tuple[str, str]:
    return write_outputs(out_dir, "compare_reference_speed", report, to_markdown(report))


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    try:
        report = run(args, argv)
    except (ReferenceDirError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(to_markdown(report))
    if args.out:
        for path in write_report(report, args.out):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
