"""Writing results: Markdown and CSV tables, ``results.json`` and the PNG plots."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from typing import Any

from etils import epath

from pose_jax import metrics


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
