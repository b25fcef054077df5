"""PNG plots of evaluation results (matplotlib, Agg backend; imported only when plotting)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from etils import epath

from pose_jax import metrics, skeleton


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _draw_skeleton(ax, pose: np.ndarray, sk: skeleton.Skeleton, dims: tuple[int, int], **style):
    for j, p in enumerate(sk.parents):
        if p < 0:
            continue
        ax.plot(pose[[p, j], dims[0]], -pose[[p, j], dims[1]], **style)


def plot_skeletons(example: Mapping[str, Any], path: epath.Path, layout: str = "h36m") -> None:
    """Ground truth against every hypothesis at the last iteration, middle frame, two views."""
    plt = _pyplot()
    sk = skeleton.get_skeleton(layout)
    pred, gt = np.asarray(example["pred"]), np.asarray(example["gt"]).copy()
    f = gt.shape[0] // 2
    gt[..., sk.root, :] = 0.0
    hyps = pred[-1, :, f].copy()
    hyps[..., sk.root, :] = 0.0
    fig, axes = plt.subplots(1, 2, figsize=(8, 4.5))
    for ax, dims, title in zip(axes, ((0, 1), (2, 1)), ("front (x-y)", "side (z-y)"), strict=True):
        for h in hyps:
            _draw_skeleton(ax, h, sk, dims, color="tab:orange", alpha=0.5, lw=1)
        _draw_skeleton(ax, gt[f], sk, dims, color="k", lw=2)
        ax.set_title(title)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{example.get('action', '')}: ground truth (black), hypotheses (orange)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_action_bars(results: Mapping[str, Any], path: epath.Path) -> None:
    """Per-action MPJPE at the last iteration, one bar per aggregation."""
    plt = _pyplot()
    actions = sorted(results["per_action"])
    keys = [m for m in metrics.HYPOTHESIS_METRICS if m in results["mpjpe_mm"]]
    x = np.arange(len(actions))
    width = 0.8 / max(len(keys), 1)
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(actions) + 2), 4))
    for i, m in enumerate(keys):
        vals = [results["per_action"][a]["mpjpe_mm"][m][-1] for a in actions]
        ax.bar(x + i * width, vals, width, label=metrics.metric_label(m))
    if "baseline_mean_pose_mpjpe_mm" in results:
        ax.axhline(results["baseline_mean_pose_mpjpe_mm"], color="gray", ls="--", label="mean pose")
    ax.set_xticks(x + 0.4 - width / 2, actions, rotation=45, ha="right")
    ax.set_ylabel("MPJPE (mm)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_hypothesis_spread(
    example: Mapping[str, Any], path: epath.Path, layout: str = "h36m"
) -> None:
    """Per-joint spread (std over hypotheses, mean over frames) at every iteration k."""
    plt = _pyplot()
    sk = skeleton.get_skeleton(layout)
    pred = np.asarray(example["pred"])  # [K, H, F, J, 3]
    spread = np.linalg.norm(pred.std(axis=1), axis=-1).mean(axis=1) * 1000.0  # [K, J]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    for k, row in enumerate(spread):
        ax.plot(row, marker="o", label=f"k={k + 1}")
    ax.set_xticks(range(sk.num_joints), sk.joint_names, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("hypothesis spread (mm)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_plots(results: Mapping[str, Any], outdir: epath.Path, layout: str = "h36m") -> list[str]:
    """Writes the three PNGs; returns their paths."""
    paths = []
    example = results.get("example")
    if example is not None:
        plot_skeletons(example, outdir / "skeletons.png", layout)
        plot_hypothesis_spread(example, outdir / "hypothesis_spread.png", layout)
        paths += [str(outdir / "skeletons.png"), str(outdir / "hypothesis_spread.png")]
    plot_action_bars(results, outdir / "per_action.png")
    paths.append(str(outdir / "per_action.png"))
    return paths
