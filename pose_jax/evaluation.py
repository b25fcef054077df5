"""Protocol tables from predictions: per action, per iteration k, P1/P2 for every aggregation.

The evaluator consumes evaluation windows (dicts as ``data_pipelines.make_eval_windows``
yields them; any iterable of such dicts works) and a ``sample_fn`` that maps 2D
windows to hypotheses, so it is independent of the model family.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import numpy as np
from etils import epath

from pose_jax import _checks, metrics
from pose_jax import sharding as sharding_lib

# sample_fn(pose_2d [b, F, J, 2], key, *, sequence) -> poses [b, K, H, F, J, 3] in metres;
# ``sequence`` is the window dict of the sequence being sampled (its metadata, e.g. the
# action class FinePOSE conditions on), so sample functions stay stateless.
SampleFn = Callable[[np.ndarray, jax.Array], Any]

PROTOCOLS = (("mpjpe_mm", False), ("p_mpjpe_mm", True))
WEIGHTINGS = ("reference", "exact")


@dataclasses.dataclass
class _Accumulator:
    """Per-action ``(sum, count)`` tables for every (protocol, metric)."""

    tables: dict[tuple[str, str], dict] = dataclasses.field(default_factory=dict)

    def add(self, protocol: str, metric: str, action: str, errors_k: np.ndarray, frames: float):
        key = (protocol, metric)
        self.tables[key] = metrics.accumulate_by_action(
            np.asarray(errors_k, np.float64)[None],
            [action],
            counts=[frames],
            table=self.tables.get(key),
        )


MPI_INF_3DHP_ACTIVITIES = (
    "Unknown", "Standing/Walking", "Exercising", "Sitting", "Reaching/Crouching",
    "On The Floor", "Sports", "Miscellaneous",
)  # fmt: skip


@dataclasses.dataclass
class _JointTables:
    """3DHP tables: per group, per metric, PCK counts at every threshold and MPJPE sums.

    Groups are sequences ('TS1'..'TS6'), activities and 'All'. Arrays carry the K axis.
    """

    sums: dict[tuple[str, str], dict[str, np.ndarray]] = dataclasses.field(default_factory=dict)

    def add(self, group: str, metric: str, errors_mm: np.ndarray) -> None:
        """``errors_mm [K, N, 17]``: per-joint errors of N counted frames."""
        if errors_mm.shape[1] == 0:
            return
        thr = np.asarray(metrics.AUC_THRESHOLDS_MM)
        sel = errors_mm[..., list(metrics.PCK_JOINTS_3DHP)]
        below = (sel[..., None] < thr).sum(axis=(1, 2)).astype(np.float64)  # [K, 31]
        entry = self.sums.setdefault(
            (group, metric),
            {"below": 0.0, "joints": 0.0, "mpjpe_sum": 0.0, "frames": 0.0},
        )
        entry["below"] = entry["below"] + below
        entry["joints"] += float(sel.shape[1] * sel.shape[2])
        entry["mpjpe_sum"] = entry["mpjpe_sum"] + errors_mm.mean(axis=-1).sum(axis=1)
        entry["frames"] += float(errors_mm.shape[1])

    def table(self) -> dict[str, Any]:
        """``{metric: {group: {'pck': [K], 'auc': [K], 'mpjpe': [K], 'frames': n}}}``."""
        out: dict[str, Any] = {}
        thr = np.asarray(metrics.AUC_THRESHOLDS_MM)
        at_150 = int(np.argmin(np.abs(thr - 150.0)))
        for (group, metric), e in sorted(self.sums.items()):
            pck_curve = 100.0 * e["below"] / e["joints"]  # [K, 31]
            out.setdefault(metric, {})[group] = {
                "pck": [float(v) for v in pck_curve[:, at_150]],
                "auc": [float(v) for v in pck_curve.mean(axis=-1)],
                "mpjpe": [float(v) for v in e["mpjpe_sum"] / e["frames"]],
                "frames": e["frames"],
            }
        return out


_WINDOW_KEYS = ("pose_2d", "pose_3d", "traj", "reference_weight", "mask", "valid", "activity")
_ZERO_WHEN_PADDED = ("reference_weight", "mask", "valid")


def _pad_windows(w: Mapping[str, Any], batch_size: int) -> dict[str, Any]:
    """Pads a sequence's windows to a multiple of ``batch_size`` with zero-weight copies.

    Every sampler and metric call then sees one batch shape, so each compiles once
    instead of once per distinct remainder; padded windows count for nothing.
    """
    n = int(np.shape(w["pose_2d"])[0])
    extra = -n % batch_size
    if extra == 0:
        return dict(w)
    out = dict(w)
    for k in _WINDOW_KEYS:
        if k not in w:
            continue
        a = np.asarray(w[k])
        pad = np.repeat(a[-1:], extra, axis=0)
        if k in _ZERO_WHEN_PADDED:
            pad = np.zeros_like(pad)
        out[k] = np.concatenate([a, pad], axis=0)
    return out


def _window_weights(w: Mapping[str, Any], weighting: str) -> np.ndarray:
    base = w["reference_weight"] if weighting == "reference" else w["mask"]
    weights = np.asarray(base, np.float32)
    if "valid" in w:
        weights = weights * np.asarray(w["valid"], np.float32)
    return weights


def _progress_bar(show: bool, total: int | None):
    """A tqdm bar over sequences (stderr), or ``None`` when not shown."""
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="evaluate", unit="seq", dynamic_ncols=True, mininterval=1.0)


def evaluate_hypotheses(
    sample_fn: SampleFn,
    windows: Iterable[Mapping[str, Any]],
    *,
    key: jax.Array,
    batch_size: int = 4,
    mode: str = "reference",
    weighting: str = "reference",
    root: int = 0,
    max_sequences: int = 0,
    baseline_pose: np.ndarray | None = None,
    project_fn: Callable | None = None,
    progress: bool = False,
    total_sequences: int | None = None,
    joint_tables: bool = False,
) -> dict[str, Any]:
    """Runs ``sample_fn`` over every window and builds the protocol results.

    Args:
      sample_fn: ``(pose_2d [b, F, J, 2], key, *, sequence) -> [b, K, H, F, J, 3]``
        metres; ``sequence`` is the current window dict (metadata such as ``action``).
      windows: per-sequence dicts with ``pose_2d [N, F, J, 2]``, ``pose_3d [N, F, J, 3]``
        (root-relative), ``traj [N, F, 1, 3]``, ``intrinsics [9]``, ``action_name``,
        ``reference_weight [N, F]``, ``mask [N, F]`` and optionally ``valid [N, F]``.
      key: base PRNG key; sequence ``s``, batch ``i`` uses ``fold_in(fold_in(key, s), i)``.
      batch_size: clips per ``sample_fn`` call (the reference's ``-b``; P-Best in
        'reference' mode is chosen once per such batch).
      mode: 'reference' (D3DP-exact) or 'per_pose' (see ``metrics.multi_hypothesis_errors``).
      weighting: 'reference' (frames of overlapping/padded windows counted as the
        reference does) or 'exact' (every frame once).
      root: root joint index.
      max_sequences: evaluate only the first ones (0: all).
      baseline_pose: optional ``[J, 3]`` mean training pose; its MPJPE is reported
        as ``baseline_mean_pose_mpjpe_mm``.
      project_fn: projection for JPMA (default ``camera.project_to_2d``).
      progress: show a progress bar with ETA (sequences; ``total_sequences`` of them).
      total_sequences: how many sequences ``windows`` yields, for the bar's ETA.
      joint_tables: also build the MPI-INF-3DHP tables (PCK < 150 mm and AUC over the
        14-joint set, MPJPE over all 17, in mm) per sequence ('subject' of the window:
        TS1..TS6), per activity (windows' ``activity [N, F]``) and over all frames,
        from the poses each aggregation selects; every real, valid frame counts once
        (the ``mask``), as the reference's MATLAB evaluation does.

    Returns:
      A JSON-able dict: ``mpjpe_mm`` / ``p_mpjpe_mm`` map ``j_best``, ``p_best``,
      ``p_agg``, ``j_agg`` to the action-averaged value at the last iteration;
      ``per_iteration`` holds every k; ``per_action`` every action; plus
      ``protocol`` (H, K, mode, weighting, which metrics are oracles) and an
      ``example`` (one window's hypotheses, for plots; not JSON-written).
    """
    fn = "evaluate_hypotheses"
    _checks.check_choice(fn, "mode", mode, metrics.MODES)
    _checks.check_choice(fn, "weighting", weighting, WEIGHTINGS)
    if batch_size < 1:
        raise ValueError(f"{fn}: batch_size is {batch_size}; expected >= 1.")
    acc = _Accumulator()
    joints = _JointTables()
    baseline: dict = {}
    example = None
    num_h = num_k = None
    n_seq = 0
    frames_total = 0.0
    bar = _progress_bar(progress, total_sequences)
    for s, w in enumerate(windows):
        if max_sequences and s >= max_sequences:
            break
        action = w.get("action_class_name") or metrics.canonical_action(w["action_name"])
        w = _pad_windows(w, batch_size)
        n = int(np.shape(w["pose_2d"])[0])
        weights_all = _window_weights(w, weighting)
        seq_key = jax.random.fold_in(key, s)
        for i, lo in enumerate(range(0, n, batch_size)):
            sl = slice(lo, min(lo + batch_size, n))
            pose_2d = np.asarray(w["pose_2d"][sl], np.float32)
            gt = np.asarray(w["pose_3d"][sl], np.float32)
            weights = weights_all[sl]
            if not weights.any():
                continue
            pred = sample_fn(pose_2d, jax.random.fold_in(seq_key, i), sequence=w)
            pred = sharding_lib.to_host(pred).astype(np.float32, copy=False)
            want = (pose_2d.shape[0], None, None, *gt.shape[1:])
            if pred.ndim != 6 or pred.shape[0] != want[0] or pred.shape[3:] != gt.shape[1:]:
                raise ValueError(
                    f"{fn}: sample_fn returned shape {pred.shape}; expected [b, K, H, F, J, 3] "
                    f"with b, F, J, 3 = {want[0]}, {', '.join(map(str, gt.shape[1:]))}."
                )
            num_k, num_h = pred.shape[1], pred.shape[2]
            cam = dict(
                inputs_2d=pose_2d,
                traj=np.asarray(w["traj"][sl], np.float32),
                intrinsics=np.broadcast_to(
                    np.asarray(w["intrinsics"], np.float32), (pose_2d.shape[0], 9)
                ),
                project_fn=project_fn,
            )
            for protocol, procrustes in PROTOCOLS:
                he = metrics.multi_hypothesis_errors(
                    pred, gt, mode=mode, procrustes=procrustes, root=root, weights=weights, **cam
                )
                frames = float(he.num_frames)
                for metric, err in he.errors.items():
                    acc.add(protocol, metric, action, np.asarray(err) * 1000.0, frames)
            if joint_tables:
                _add_joint_tables(joints, w, sl, pred, gt, cam, mode=mode, root=root)
            frames_total += float(weights.sum())
            if baseline_pose is not None:
                base = np.broadcast_to(np.asarray(baseline_pose, np.float32), gt.shape)
                gt0 = gt.copy()
                gt0[..., root, :] = 0.0
                err = float(metrics.mpjpe(base, gt0, weights=weights)) * 1000.0
                baseline = metrics.accumulate_by_action(
                    [err], [action], counts=[float(weights.sum())], table=baseline
                )
            if example is None:
                example = {"pred": pred[0], "gt": gt[0], "pose_2d": pose_2d[0], "action": action}
        n_seq += 1
        if bar is not None:
            bar.set_postfix_str(f"{w.get('subject', '')} {w['action_name']}", refresh=False)
            bar.update(1)
    if bar is not None:
        bar.close()
    if n_seq == 0 or not acc.tables:
        raise ValueError(f"{fn}: no evaluation windows with non-zero weight were given.")

    results: dict[str, Any] = {
        "protocol": {
            "num_hypotheses": num_h,
            "num_iterations": num_k,
            "mode": mode,
            "weighting": weighting,
            "batch_size": batch_size,
            "oracle_metrics": list(metrics.ORACLE_METRICS),
            "labels": {m: metrics.metric_label(m) for m in metrics.HYPOTHESIS_METRICS},
        },
        "num_sequences": n_seq,
        "num_frames_weighted": frames_total,
        "per_iteration": {},
        "per_action": {},
    }
    for (protocol, metric), table in sorted(acc.tables.items()):
        means, avg = metrics.action_means(table)
        results["per_iteration"].setdefault(protocol, {})[metric] = [float(v) for v in avg]
        results.setdefault(protocol, {})[metric] = float(avg[-1])
        for action, vals in means.items():
            entry = results["per_action"].setdefault(action, {"frames": float(table[action][1])})
            entry.setdefault(protocol, {})[metric] = [float(v) for v in vals]
    if baseline:
        _, avg = metrics.action_means(baseline)
        results["baseline_mean_pose_mpjpe_mm"] = float(np.asarray(avg).reshape(-1)[0])
    if joint_tables:
        results["mpi_inf_3dhp"] = _summarise_joint_tables(joints.table())
    results["example"] = example
    return results


def _add_joint_tables(joints: _JointTables, w, sl, pred, gt, cam, *, mode: str, root: int) -> None:
    counted = np.asarray(w["mask"][sl], bool)
    if "valid" in w:
        counted &= np.asarray(w["valid"][sl], bool)
    if not counted.any():
        return
    per_joint = metrics.multi_hypothesis_joint_errors(
        pred, gt, mode=mode, root=root, weights=counted.astype(np.float32), **cam
    )
    sequence = str(w.get("subject", "sequence"))
    activity = np.asarray(w["activity"][sl]) if "activity" in w else np.zeros(counted.shape, int)
    for metric, err in per_joint.items():
        err = np.moveaxis(np.asarray(err, np.float64) * 1000.0, 1, 0)  # [K, b, F, J]
        joints.add(sequence, metric, err[:, counted])
        joints.add("All", metric, err[:, counted])
        for a in np.unique(activity[counted]):
            name = (
                MPI_INF_3DHP_ACTIVITIES[int(a)] if 0 <= a < len(MPI_INF_3DHP_ACTIVITIES) else str(a)
            )
            joints.add(f"activity:{name}", metric, err[:, counted & (activity == a)])


def _summarise_joint_tables(table: dict[str, Any]) -> dict[str, Any]:
    """Adds the D3DP README's headline: the unweighted mean over the test sequences."""
    out = {}
    for metric, groups in table.items():
        seqs = {g: v for g, v in groups.items() if g != "All" and not g.startswith("activity:")}
        avg = (
            {
                key: [
                    float(np.mean([v[key][k] for v in seqs.values()]))
                    for k in range(len(next(iter(seqs.values()))[key]))
                ]
                for key in ("pck", "auc", "mpjpe")
            }
            if seqs
            else {}
        )
        out[metric] = {
            "per_sequence": seqs,
            "per_activity": {
                g.split(":", 1)[1]: v for g, v in groups.items() if g.startswith("activity:")
            },
            "all_frames": groups.get("All"),
            "sequence_average": avg,
        }
    return out


# -- writing ---------------------------------------------------------------------------


def markdown_table(results: Mapping[str, Any]) -> str:
    """Per-action table at the last iteration (P1 and P2 for each aggregation), then per k."""
    metric_keys = [m for m in metrics.HYPOTHESIS_METRICS if m in results.get("mpjpe_mm", {})]
    proto = results["protocol"]
    head = (
        f"H = {proto['num_hypotheses']}, K = {proto['num_iterations']}, mode = {proto['mode']}, "
        f"weighting = {proto['weighting']}; oracle metrics use the ground truth to pick "
        "hypotheses. Errors in mm."
    )
    cols = [f"{metrics.metric_label(m)} {p}" for p in ("P1", "P2") for m in metric_keys]
    lines = [head, "", "| action | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for action in sorted(results["per_action"]):
        e = results["per_action"][action]
        vals = [e[p][m][-1] for p in ("mpjpe_mm", "p_mpjpe_mm") for m in metric_keys]
        lines.append(f"| {action} | " + " | ".join(f"{v:.1f}" for v in vals) + " |")
    avg = [results[p][m] for p in ("mpjpe_mm", "p_mpjpe_mm") for m in metric_keys]
    lines.append("| **Average** | " + " | ".join(f"**{v:.1f}**" for v in avg) + " |")
    if "baseline_mean_pose_mpjpe_mm" in results:
        lines += ["", f"Mean-pose baseline MPJPE: {results['baseline_mean_pose_mpjpe_mm']:.1f} mm"]
    if "mpi_inf_3dhp" in results:
        lines += ["", markdown_3dhp(results["mpi_inf_3dhp"])]
    lines += ["", "Action-averaged error at every iteration k:", ""]
    lines.append("| k | " + " | ".join(cols) + " |")
    lines.append("|---" * (len(cols) + 1) + "|")
    for k in range(proto["num_iterations"]):
        vals = [
            results["per_iteration"][p][m][k]
            for p in ("mpjpe_mm", "p_mpjpe_mm")
            for m in metric_keys
        ]
        lines.append(f"| {k + 1} | " + " | ".join(f"{v:.1f}" for v in vals) + " |")
    return "\n".join(lines) + "\n"


def markdown_3dhp(tables: Mapping[str, Any]) -> str:
    """MPI-INF-3DHP tables at the last iteration: PCK / AUC / MPJPE per sequence and activity."""
    keys = [m for m in metrics.HYPOTHESIS_METRICS if m in tables]
    cols = [f"{metrics.metric_label(m)} {q}" for m in keys for q in ("PCK", "AUC", "MPJPE")]
    lines = [
        "MPI-INF-3DHP (PCK < 150 mm and AUC over 14 joints, MPJPE over 17, mm):",
        "",
        "| group | " + " | ".join(cols) + " |",
        "|---" * (len(cols) + 1) + "|",
    ]
    first = tables[keys[0]]
    rows = [(g, "per_sequence", g) for g in sorted(first["per_sequence"])]
    rows += [(f"activity: {g}", "per_activity", g) for g in sorted(first["per_activity"])]
    for label, block, g in rows:
        vals = [tables[m][block][g][q][-1] for m in keys for q in ("pck", "auc", "mpjpe")]
        lines.append(f"| {label} | " + " | ".join(f"{v:.1f}" for v in vals) + " |")
    if first["all_frames"]:
        vals = [tables[m]["all_frames"][q][-1] for m in keys for q in ("pck", "auc", "mpjpe")]
        lines.append("| All frames | " + " | ".join(f"{v:.1f}" for v in vals) + " |")
    if first["sequence_average"]:
        vals = [tables[m]["sequence_average"][q][-1] for m in keys for q in ("pck", "auc", "mpjpe")]
        lines.append("| **Sequence average** | " + " | ".join(f"**{v:.1f}**" for v in vals) + " |")
    return "\n".join(lines)


def csv_table(results: Mapping[str, Any]) -> str:
    """Long-format CSV: action, k, protocol, metric, value_mm (k is 1-based)."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["action", "k", "protocol", "metric", "oracle", "value_mm"])
    rows = [(a, e) for a, e in sorted(results["per_action"].items())]
    rows.append(("Average", results["per_iteration"]))
    for action, e in rows:
        for protocol in ("mpjpe_mm", "p_mpjpe_mm"):
            for metric, vals in e[protocol].items():
                for k, v in enumerate(vals):
                    w.writerow(
                        [
                            action,
                            k + 1,
                            protocol,
                            metric,
                            metric in metrics.ORACLE_METRICS,
                            f"{v:.4f}",
                        ]
                    )
    return buf.getvalue()


def write_results(
    results: Mapping[str, Any], outdir: str | epath.Path, *, plots: bool = True
) -> list[str]:
    """Writes ``results.json``, ``results.csv``, ``results.md`` and PNG plots; returns paths."""
    outdir = epath.Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    data = {k: v for k, v in results.items() if k != "example"}
    written = []
    for name, text in (
        ("results.json", json.dumps(data, indent=2)),
        ("results.csv", csv_table(results)),
        ("results.md", markdown_table(results)),
    ):
        (outdir / name).write_text(text)
        written.append(str(outdir / name))
    if plots:
        try:
            from pose_jax import plotting

            written += plotting.write_plots(results, outdir)
        except ImportError as e:
            print(f"write_results: no plots ({e}); install the 'plot' extra for PNGs.")
    return written
