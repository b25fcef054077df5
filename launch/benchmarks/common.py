"""What the benchmarks share: the benchmarked systems, their published table layouts, rows.

Everything that differs between the published speed tables is data here: a
:class:`GridKind` per table layout (an ``H x K`` grid on 243-frame clips for D3DP
and FinePOSE; DDIM steps ``S1..S4`` on batches of poses for the GCN refiners,
monoMotionDiff's Table 3) and a :class:`Benchmarked` entry per system name (its
experiment config, the layout of its table and the published numbers). The
sampler is reached through the system interface only (``pose_jax.systems.base``).

No absl flags are defined and jax is imported lazily (inside the functions), so
that ``scripts/compare_reference_speed.py`` can import this module and the CLI
can set ``XLA_FLAGS`` before jax starts.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib
import os
import platform
import re
from collections.abc import Mapping, Sequence
from typing import Any

from launch import host_memory

# monoMotionDiff's speed table (Tab. 3) times its GT config: refinement from T_test 12
# with S DDIM steps on range(0, 12, 12 // S).
T_TEST = 12


@dataclasses.dataclass(frozen=True)
class GridKind:
    """The layout of a published speed table: what a grid entry sets and how rows read.

    Attributes:
      name: 'clips', 'poses' or 'lifter'.
      syntax: the entry syntax, for messages ('HxKy', 'Sn').
      pattern: regex of an upper-cased entry; its named groups are the entry's keys.
      default: the grid when none is given.
      hypotheses_key: the entry key of H (None: one hypothesis).
      iterations_key: the entry key of the sampler iterations (K, or the DDIM steps S).
      max_iterations: the largest allowed iteration count (None: no bound).
      eta: DDIM stochasticity of the published setting.
      num_timesteps: T_test of the published setting (None: sampling from noise).
      per_clip: timed on ``--clips`` clips of ``--frames`` frames, denoiser calls
        counted per clip and hypothesis; else on ``--batch`` single poses, denoiser
        calls counted per batched call.
      default_frames: frames per clip when none are given (``per_clip`` tables).
      batch_key: the row key of the batch (clips or poses per call).
      setting: the row's setting as text (``str.format`` of the entry fields).
      entry_columns: ``(row key, header)`` of the entry and batch columns.
      published_speed: ``(row key, published key, header)``: published speed per
        iteration count, beside the measured throughput.
      published_accuracy: the same for the published accuracy (last columns).
      mpjpe: ``(row key, aggregation, header)`` of the ``--workdir`` MPJPE columns.
      published_note: a sentence on the published columns (``{published}``: source).
      bad_entry: the message for a bad entry (``{entry}``, ``{label}``).
    """

    name: str
    syntax: str
    pattern: str
    default: tuple[str, ...]
    hypotheses_key: str | None
    iterations_key: str
    max_iterations: int | None
    eta: float
    num_timesteps: int | None
    per_clip: bool
    default_frames: int | None
    batch_key: str
    setting: str
    entry_columns: tuple[tuple[str, str], ...]
    published_speed: tuple[tuple[str, str, str], ...] = ()
    published_accuracy: tuple[tuple[str, str, str], ...] = ()
    mpjpe: tuple[tuple[str, str, str], ...] = ()
    published_note: str | None = None
    bad_entry: str = ""


# D3DP / FinePOSE: H hypotheses x K iterations, DDIM eta 1 from N(0, I), flip TTA in
# every step, on 243-frame clips; calls counted per clip and hypothesis.
CLIP_GRID = GridKind(
    name="clips",
    syntax="HxKy",
    pattern=r"H(?P<H>\d+)K(?P<K>\d+)",
    default=("H1K1", "H5K5"),
    hypotheses_key="H",
    iterations_key="K",
    max_iterations=None,
    eta=1.0,
    num_timesteps=None,
    per_clip=True,
    default_frames=243,
    batch_key="clips",
    setting="H{H}K{K}, {clips} x {frames} frames",
    entry_columns=(("H", "H"), ("K", "K"), ("clips", "clips"), ("frames", "frames")),
    mpjpe=(
        ("mpjpe_p_agg_mm", "p_agg", "P-Agg MPJPE mm"),
        ("mpjpe_j_agg_mm", "j_agg", "J-Agg MPJPE mm"),
        ("mpjpe_j_best_mm", "j_best", "J-Best (oracle) mm"),
    ),
    bad_entry="--grid entry {entry!r}: {label} takes HxKy with x, y >= 1, e.g. H1K1,H5K5.",
)

# The GCN refiners (monoMotionDiff Tab. 3): S DDIM steps (eta 0) from T_test 12, one
# hypothesis, flip TTA over the chain, on batches of single poses.
POSE_GRID = GridKind(
    name="poses",
    syntax="Sn",
    pattern=r"S(?P<steps>\d+)",
    default=("S1", "S2", "S3", "S4"),
    hypotheses_key=None,
    iterations_key="steps",
    max_iterations=T_TEST,
    eta=0.0,
    num_timesteps=T_TEST,
    per_clip=False,
    default_frames=None,
    batch_key="batch",
    setting="S{steps}, {batch} poses",
    entry_columns=(("steps", "DDIM steps"), ("batch", "poses/call")),
    published_speed=(("published_fps", "fps", "published A100 'FPS'"),),
    published_accuracy=(("published_mpjpe_mm", "mpjpe_mm", "published MPJPE mm"),),
    mpjpe=(("mpjpe_mm", "p_agg", "MPJPE mm (this run)"),),  # H = 1: aggregations agree
    published_note="Published columns: {published} (batches of 1024 poses/s; GT 2D).",
    bad_entry=(
        "--grid entry {entry!r}: the GCN refiners take S1..S" + str(T_TEST) + " (DDIM "
        "steps from T_test " + str(T_TEST) + "), e.g. S1,S2,S3,S4."
    ),
)


# A deterministic lifter (KTPFormer): one prediction per clip, two network passes with
# flip TTA; the clip layout of CLIP_GRID with H = K = 1 only (no sampler grid).
LIFTER_GRID = dataclasses.replace(
    CLIP_GRID,
    name="lifter",
    syntax="H1K1",
    pattern=r"H(?P<H>1)K(?P<K>1)",
    default=("H1K1",),
    max_iterations=1,
    eta=0.0,
    mpjpe=(("mpjpe_mm", "p_agg", "MPJPE mm (this run)"),),  # H = 1: aggregations agree
    bad_entry="--grid entry {entry!r}: {label} is a deterministic lifter; it takes H1K1 only.",
)


@dataclasses.dataclass(frozen=True)
class Benchmarked:
    """A benchmarked system: its config (paper sizes), table layout and published numbers.

    Attributes:
      config: ``'configs/x.py[:arg]'`` (GT 2D for the GCN table).
      label: the name in messages.
      grid: the layout of its published speed table.
      published: the published numbers (``source`` and the tables the layout reads:
        ``fps`` / ``mpjpe_mm`` per DDIM step count, ``j_best_h20k10_mm`` per 2D source).
    """

    config: str
    label: str
    grid: GridKind
    published: Mapping[str, Any] = dataclasses.field(default_factory=dict)


# Published numbers: the GCN rows are monoMotionDiff's Table 3 (ICASSP'24,
# jjkislele/monoMotionDiff; NVIDIA A100, H36M GT 2D; "FPS" read as batches of 1024
# poses per second, MPJPE in mm). D3DP and FinePOSE publish no speed, and their
# headline MPJPEs (FinePOSE, CVPR'24, Tab. 1) are J-Best (oracle) numbers at H20 K10
# (no P-Agg / J-Agg table was found). KTPFormer (CVPR'24) publishes no speed either;
# d3dp_ktp (D3DP with KTPFormer's prior blocks) is ours, with nothing published.
BENCHMARKED = {
    "d3dp": Benchmarked(
        "configs/d3dp_h36m.py",
        "D3DP",
        CLIP_GRID,
        {
            "source": "FinePOSE (CVPR'24) Tab. 1, D3DP row",
            "j_best_h20k10_mm": {"cpn": 35.4, "gt": 18.4},
        },
    ),
    "finepose": Benchmarked(
        "configs/finepose_h36m.py",
        "FinePOSE",
        CLIP_GRID,
        {"source": "FinePOSE (CVPR'24) Tab. 1", "j_best_h20k10_mm": {"cpn": 31.9, "gt": 16.7}},
    ),
    "mmdiff": Benchmarked(
        "configs/mmdiff_h36m.py:keypoints=gt",
        "monoMotionDiff",
        POSE_GRID,
        {
            "source": "monoMotionDiff (ICASSP'24) Tab. 3, A100",
            "fps": {1: 47.5, 2: 25.7, 3: 15.6, 4: 11.9},
            "mpjpe_mm": {1: 31.9, 2: 30.2, 3: 30.0, 4: 29.9},
        },
    ),
    "diffpose_frame": Benchmarked(
        "configs/diffpose_frame_h36m.py:keypoints=gt",
        "DiffPose-frame",
        POSE_GRID,
        {
            "source": "monoMotionDiff (ICASSP'24) Tab. 3 (DiffPose row), A100",
            "fps": {1: 48.3, 2: 26.4, 3: 15.8, 4: 12.0},
            "mpjpe_mm": {1: 33.1, 2: 31.3, 3: 30.9, 4: 30.7},
        },
    ),
    "diffpose_video": Benchmarked(
        "configs/diffpose_video_h36m.py:keypoints=gt", "DiffPose-video", POSE_GRID
    ),
    "d3dp_ktp": Benchmarked("configs/d3dp_h36m.py:denoiser=d3dp_ktp", "D3DP-KTP", CLIP_GRID),
    "ktpformer": Benchmarked("configs/ktpformer_h36m.py", "KTPFormer", LIFTER_GRID),
}
# The config each system is benchmarked with, and the published numbers, by name.
CONFIGS = {name: b.config for name, b in BENCHMARKED.items()}
PUBLISHED = {name: dict(b.published) for name, b in BENCHMARKED.items() if b.published}


def benchmarked(system: str) -> Benchmarked:
    """The :class:`Benchmarked` entry of ``system``; ValueError naming the choices."""
    if system not in BENCHMARKED:
        raise ValueError(f"--system={system!r}; expected one of {sorted(BENCHMARKED)}.")
    return BENCHMARKED[system]


def load_config(
    system_or_spec: str, denoiser: str | None = None, model_kwargs: Mapping[str, Any] | None = None
):
    """The config of a system name (:data:`CONFIGS`) or of ``'configs/x.py[:arg]'``.

    ``denoiser``: a registry name replacing ``config.model.name``; ``model_kwargs``:
    entries of ``config.model.kwargs`` (:func:`set_model_kwargs`).
    """
    spec = CONFIGS.get(system_or_spec, system_or_spec)
    path, _, arg = spec.partition(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    config = module.get_config(arg or None)
    if denoiser:
        with config.unlocked():
            config.model.name = denoiser
    set_model_kwargs(config, model_kwargs)
    return config


def parse_model_kwargs(entries: Sequence[str] | None, flag: str = "model_kwargs") -> dict[str, Any]:
    """``['remat=block', 'depth=4']`` -> ``{'remat': 'block', 'depth': 4}`` (ints, floats kept)."""
    out: dict[str, Any] = {}
    for entry in entries or ():
        key, sep, text = entry.partition("=")
        if not sep or not key:
            from absl import app

            raise app.UsageError(f"--{flag} entry {entry!r}: expected key=value.")
        value: Any = text
        for cast in (int, float):
            try:
                value = cast(text)
                break
            except ValueError:
                pass
        out[key.strip()] = value
    return out


def set_model_kwargs(config, model_kwargs: Mapping[str, Any] | None) -> None:
    """Sets entries of ``config.model.kwargs`` (the model's fields, e.g. ``remat``)."""
    if not model_kwargs:
        return
    import ml_collections

    with config.unlocked():
        if config.model.get("kwargs") is None:
            config.model.kwargs = ml_collections.ConfigDict()
        for key, value in model_kwargs.items():
            config.model.kwargs[key] = value


# ---------------------------------------------------------------------------
# Grid entries -> sampler settings and row fields
# ---------------------------------------------------------------------------


def parse_grid(system: str, entries: Sequence[str]) -> list[dict[str, int]]:
    """``['H1K1', ...]`` (clip tables) or ``['S1', ...]`` (pose tables) -> settings.

    Each setting is a dict of the layout's entry keys (``{'H': 1, 'K': 1}``,
    ``{'steps': 2}``).

    Raises:
      ValueError: an unknown system, no entries, or an entry that does not fit the
        system's layout (the message names it).
    """
    b = benchmarked(system)
    kind = b.grid
    if not entries:
        raise ValueError("--grid is empty; expected at least one entry.")
    out = []
    for entry in entries:
        m = re.fullmatch(kind.pattern, entry.strip().upper())
        values = {k: int(v) for k, v in m.groupdict().items()} if m else {}
        top = kind.max_iterations
        if not values or min(values.values()) < 1 or (top and values[kind.iterations_key] > top):
            raise ValueError(kind.bad_entry.format(entry=entry, label=b.label))
        out.append(values)
    return out


def hypotheses(kind: GridKind, entry: Mapping[str, int]) -> int:
    return 1 if kind.hypotheses_key is None else int(entry[kind.hypotheses_key])


def iterations(kind: GridKind, entry: Mapping[str, int]) -> int:
    return int(entry[kind.iterations_key])


def sampler_spec(kind: GridKind, entry: Mapping[str, int], *, frames: int, flip: bool):
    """The ``SamplerSpec`` of a grid entry in the published setting of ``kind``."""
    from pose_jax.systems.base import SamplerSpec

    return SamplerSpec(
        num_frames=frames,
        num_hypotheses=hypotheses(kind, entry),
        num_iterations=iterations(kind, entry),
        eta=kind.eta,
        flip_tta=flip,
        num_timesteps=kind.num_timesteps,
    )


def eval_overrides(kind: GridKind, entry: Mapping[str, int], *, flip: bool) -> dict[str, Any]:
    """The ``config.eval`` entries an MPJPE pass at a grid entry's settings changes."""
    out: dict[str, Any] = {
        "num_hypotheses": hypotheses(kind, entry),
        "num_iterations": iterations(kind, entry),
        "flip_tta": flip,
    }
    if kind.num_timesteps is not None:
        out["num_timesteps"] = kind.num_timesteps
    return out


def passes_per_sample(kind: GridKind, entry: Mapping[str, int], *, flip: bool) -> int:
    """Denoiser passes per hypothesis of one sampler call: K (x 2 with flip TTA)."""
    return (2 if flip else 1) * iterations(kind, entry)


def denoiser_calls(kind: GridKind, entry: Mapping[str, int], *, batch: int, flip: bool) -> int:
    """The row's denoiser calls: per clip and hypothesis, or per batched call."""
    calls = passes_per_sample(kind, entry, flip=flip)
    return calls * hypotheses(kind, entry) * batch if kind.per_clip else calls


def entry_fields(kind: GridKind, entry: Mapping[str, int], *, batch: int, frames: int) -> dict:
    """The row's entry and batch fields (``H, K, clips, frames`` or ``steps, batch``)."""
    out = {**entry, kind.batch_key: batch}
    if kind.per_clip:
        out["frames"] = frames
    return out


def setting_text(kind: GridKind, entry: Mapping[str, int], *, batch: int, frames: int) -> str:
    return kind.setting.format(**entry_fields(kind, entry, batch=batch, frames=frames))


def published_fields(system: str, entry: Mapping[str, int]) -> dict[str, Any]:
    """The published numbers a row of ``system`` shows beside its own (None: not published)."""
    b = benchmarked(system)
    k = iterations(b.grid, entry)
    cols = b.grid.published_speed + b.grid.published_accuracy
    return {key: b.published.get(table, {}).get(k) for key, table, _ in cols}


# ---------------------------------------------------------------------------
# Inputs, MACs and the timed call (through the system interface)
# ---------------------------------------------------------------------------


def random_pose_2d(batch: int, frames: int, num_joints: int = 17, *, seed: int = 1):
    """Clips ``[batch, frames, J, 2]`` of uniform 2D in [-1, 1] (speed ignores values)."""
    import jax

    shape = (batch, frames, num_joints, 2)
    return jax.random.uniform(jax.random.key(seed), shape, minval=-1, maxval=1)


def denoiser_macs(system, params, inputs) -> float | None:
    """XLA-counted MACs of one ``system.denoise`` call on ``inputs.event`` (all of the batch)."""
    import jax.numpy as jnp

    from pose_jax import benchmarking

    t = jnp.zeros(inputs.event.shape[:1], jnp.int32)
    return benchmarking.count_macs(system.denoise, params, inputs.event, t, inputs.cond)


def call_macs(macs_event: float | None, kind: GridKind, entry, *, flip: bool) -> float | None:
    """MACs of one sampler call: the event's MACs x H x passes per hypothesis."""
    if macs_event is None:
        return None
    return macs_event * hypotheses(kind, entry) * passes_per_sample(kind, entry, flip=flip)


def sampler_call(system, spec, params, inputs, *, compiler_options=None, placed=None):
    """``(call, placed)``: ``call(i)`` runs the compiled sampler of ``spec`` once with key ``i``.

    ``call(i)`` returns the sampler's ``x0_steps``; ``placed`` are the params on the
    sampler's mesh (pass them back in to reuse a placement).
    """
    import jax

    sampler = system.make_sampler(spec, compiler_options=compiler_options)
    if placed is None:
        placed = sampler.place_params(params)

    def call(i):
        return sampler(placed, inputs.cond, jax.random.key(i), inputs.x_init).x0_steps

    return call, placed


# ---------------------------------------------------------------------------
# Rows and the report's environment
# ---------------------------------------------------------------------------


def timing_row(timing, poses_per_call: int, macs: float | None, peak: float | None) -> dict:
    """A row's timing columns from a :class:`pose_jax.benchmarking.Timing`."""
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


def dtype_diff(out, out32) -> dict:
    """Max / mean absolute difference of a bfloat16 sampler's output to float32's."""
    import jax.numpy as jnp

    d = jnp.abs(jnp.asarray(out, jnp.float32) - jnp.asarray(out32, jnp.float32))
    return {"bf16_max_abs_diff": float(d.max()), "bf16_mean_abs_diff": float(d.mean())}


def peak_flops(profile, device_kind: str, *, dtype: str, peak_tflops: float | None):
    """The peak FLOP/s assumed: ``peak_tflops``, else the profile's table for the device."""
    from pose_jax import benchmarking

    if peak_tflops:
        return peak_tflops * 1e12
    table = profile.peak_flops.bf16 if dtype == "bfloat16" else profile.peak_flops.fp32
    return benchmarking.peak_flops_per_s(device_kind, table)


def environment(device, peak) -> dict:
    """The report's machine fields."""
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
        "malloc_hugetlb": host_memory.describe(),
    }


def setup_line(report: Mapping[str, Any]) -> str:
    """The markdown sentence on the machine and profile of a report."""
    mem = report["peak_memory_bytes"]
    return (
        f"{report['device_count']} x {report['device_kind']} ({report['backend']}), "
        f"host {report['host']} ({report['cpu_count']} CPUs), jax {report['jax_version']}, "
        f"{report['date_utc']} UTC; profile {report['profile']}; peak FLOP/s assumed "
        f"{report['peak_flops_assumed'] or 'n/a'}; peak device memory "
        f"{'n/a' if mem is None else f'{mem / 2**20:.1f} MiB'}; glibc malloc on huge pages: "
        f"{report.get('malloc_hugetlb', 'off')}."
    ) + "".join(f" model.kwargs.{k}={v}." for k, v in (report.get("model_kwargs") or {}).items())


def check_positive(name: str, values) -> None:
    """``absl.app.UsageError`` unless every value is >= 1 (None: nothing given)."""
    for v in values or ():
        if int(v) < 1:
            from absl import app

            raise app.UsageError(f"--{name}={v}: expected >= 1.")
