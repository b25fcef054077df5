"""Records the official MPI-INF-3DHP MATLAB evaluation, run under GNU Octave, as test fixtures.

Usage::

  python scripts/record_3dhp_matlab_fixtures.py \\
      --test_util=/path/to/D3DP/3dhp_test/test_util [--out=tests/fixtures/3dhp_matlab_tables.json]

``--test_util`` is the ``3dhp_test/test_util`` folder of a checkout of D3DP
(paTRICK-swk/D3DP), which holds the test set's MATLAB scripts
(``mpii_test_predictions_ori_py.m``, ``mpii_evaluate_errors.m``,
``mpii_compute_3d_pck.m`` ...). Octave >= 7 must be on PATH (``--octave`` names
another binary). Nothing licensed is read: for every case of :data:`CASES`

1. :func:`annotations` makes six test sequences of synthetic motion and writes them as
   the official ``TS<i>/annot_data.mat`` (MATLAB v7.3 = HDF5, ``annot2``, ``annot3``,
   ``univ_annot3``, ``valid_frame``, ``activity_annotation``);
2. :func:`window_hypotheses` makes K x H hypotheses for every evaluation window of 243
   -> ``window`` frames, as a sampler returns them (they differ between windows, so
   the overlap matters);
3. :func:`d3dp_inference_data` selects the poses as D3DP's main_3dhp.py does (batches of
   2 windows; P-Best: one hypothesis per iteration, the lowest error averaged over every
   slot of the batch; J-Best: per joint; P-Agg: the mean), merges the windows as its
   ``pose_post_process`` (the last window written over the overlap) and writes
   ``inference_data_<P_Best|J_Best|P_Agg>.mat``, one MATLAB ``(3, 17, n, K)`` variable
   per sequence, as D3DP's ``scio.savemat`` does;
4. the official ``mpii_test_predictions_ori_py.m`` is copied into a temporary folder
   with its aggregation mode and its two paths set (nothing else changes) and run by
   Octave, with small stand-ins of our own for MATLAB's ``cell2table``/``writetable``
   (Octave has no tables);
5. the CSV numbers -- MPJPE 'Average', PCK and AUC 'Total' of every sequence and
   activity row -- go to the fixture (numbers only).

J-Agg is not recorded: D3DP reprojects with the cameras in pixels, which this
script does not re-create. The tests (``tests/evaluation_3dhp_matlab_test.py``) rebuild
the same inputs with these functions and compare pose_jax's tables with the fixture.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

import numpy as np

SEQUENCES = ("TS1", "TS2", "TS3", "TS4", "TS5", "TS6")
ROOT = 14
#: The aggregations recorded, as D3DP names its inference_data_<mode>.mat files.
AGGREGATIONS = ("P_Best", "J_Best", "P_Agg")
METRIC_KEYS = {"P_Best": "p_best", "J_Best": "j_best", "P_Agg": "p_agg"}
BATCH = 2  # D3DP main_3dhp.py: bs = 2
# Positions are multiples of 1/64 m: exact in float32 metres and in float64 mm, so the
# MATLAB errors and pose_jax's float64 errors are the same numbers (ties included).
GRID_MM = 1000.0 / 64
# A standing 3DHP-17 pose (camera frame, mm, y down): head_top, neck, right shoulder,
# elbow, wrist, left shoulder, elbow, wrist, right hip, knee, ankle, left hip, knee,
# ankle, pelvis, spine, head.
_BASE_MM = np.array([
    [0, -750, 0], [0, -500, 0], [-180, -480, 0], [-200, -220, 20], [-210, 20, 40],
    [180, -480, 0], [200, -220, 20], [210, 20, 40], [-100, 0, 0], [-110, 420, 30],
    [-110, 830, 0], [100, 0, 0], [110, 420, 30], [110, 830, 0], [0, 0, 0],
    [0, -250, 0], [0, -620, 20],
], np.float64)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Case:
    """One recorded setting: sequence lengths, window, K iterations, H hypotheses, kind."""

    seed: int
    lengths: tuple[int, ...]
    window: int
    num_iterations: int
    num_hypotheses: int
    kind: str  # 'noise' (window-dependent noise) or 'ties' (errors at the thresholds)


#: Lengths: overlapping last windows, one sequence a multiple of the window (no
#: overlap), one with a single batch of one window.
CASES = {
    "single": Case(1, (13, 17, 10, 22, 9, 14), 5, 2, 1, "noise"),
    "multi": Case(2, (13, 17, 10, 22, 9, 14), 5, 3, 4, "noise"),
    "ties": Case(3, (11, 12, 8, 10, 9, 13), 4, 2, 2, "ties"),
}


def _grid(x_mm: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(x_mm) / GRID_MM) * GRID_MM


def _motion_mm(n: int, rng: np.random.Generator) -> np.ndarray:
    """``[n, 17, 3]`` camera-frame mm: the base pose walking about, joints jittering."""
    drift = np.cumsum(rng.normal(scale=20.0, size=(n, 1, 3)), axis=0)
    jitter = rng.normal(scale=40.0, size=(n, 17, 3))
    return _grid(_BASE_MM[None] + drift + jitter + np.array([0.0, -100.0, 4500.0]))


def _project_px(p3_mm: np.ndarray, seq: str) -> np.ndarray:
    """A pinhole image of the poses (the MATLAB evaluation never reads the 2D)."""
    w, h = (2048, 2048) if seq in SEQUENCES[:4] else (1920, 1080)
    return 1500.0 * p3_mm[..., :2] / p3_mm[..., 2:] + np.array([w / 2, h / 2])


def annotations(case: Case) -> dict[str, dict[str, np.ndarray]]:
    """Per sequence the ``annot_data.mat`` arrays (mm, h5py layout without the 1 axis)."""
    rng = np.random.default_rng([case.seed, 17])
    out = {}
    for s, (seq, n) in enumerate(zip(SEQUENCES, case.lengths, strict=True)):
        p3 = _motion_mm(n, rng)
        valid = rng.random(n) < 0.75
        valid[:2] = True
        # Runs of activities, every one of 1..7 somewhere in the test set.
        activity = 1 + (s + np.arange(n) // 3) % 7
        out[seq] = {
            "annot2": _project_px(p3, seq),
            "annot3": p3,
            "univ_annot3": p3 * 0.95,
            "valid": valid,
            "activity": activity.astype(np.float64),
        }
    return out


def write_annotations(case: Case, out_dir: str) -> dict[str, str]:
    """Writes ``<out_dir>/TS<i>/annot_data.mat`` for every sequence; returns the paths."""
    from data_pipelines.testing import fixtures

    paths = {}
    for seq, a in annotations(case).items():
        path = os.path.join(out_dir, seq, "annot_data.mat")
        paths[seq] = fixtures.write_3dhp_mat(
            path,
            annot2=a["annot2"],
            annot3=a["annot3"],
            univ_annot3=a["univ_annot3"],
            valid=a["valid"],
            activity=a["activity"],
        )
    return paths


def _relative_m(annot3_mm: np.ndarray) -> np.ndarray:
    """Root-relative ground truth in metres (exact: the positions lie on the grid)."""
    return (annot3_mm - annot3_mm[:, ROOT : ROOT + 1]) / 1000.0


def _noise_hypotheses(case: Case, gt_m, valid, rng) -> np.ndarray:
    """``[K, H, F, 17, 3]``: noise growing with h, shrinking with k, a window-own bias.

    Hypothesis 0 is the best on valid frames but far off on invalid ones, so choosing
    over every slot (D3DP) and over valid frames only pick differently.
    """
    k, h, f = case.num_iterations, case.num_hypotheses, gt_m.shape[0]
    scale_mm = (30.0 + 25.0 * np.arange(h))[None, :] * (1.0 - 0.2 * np.arange(k))[:, None]
    noise = rng.normal(size=(k, h, f, 17, 3)) * scale_mm[:, :, None, None, None]
    bias = rng.normal(scale=15.0, size=(1, 1, 1, 17, 3))
    trap = (
        np.where(valid, 0.0, 250.0)[None, None, :, None, None]
        * (np.arange(h) == 0)[None, :, None, None, None]
    )
    return gt_m[None, None] + (noise + bias + trap) / 1000.0


def _tie_hypotheses(case: Case, gt_m, rng) -> np.ndarray:
    """``[K, H, F, 17, 3]`` whose errors lie at or within float32 rounding of the thresholds.

    Per joint one of: a random direction at a threshold t in {5, ..., 150} mm (the
    float32 pose is a few 1e-5 mm off t, either side), exactly 125 mm along an axis
    (exact in float32 metres), exactly 0, or a random error. Hypothesis 1 equals
    hypothesis 0 on even frames and mirrors it about the ground truth on odd ones.
    """
    k, h, f = case.num_iterations, case.num_hypotheses, gt_m.shape[0]
    out = np.empty((k, h, f, 17, 3))
    for i in range(k):
        kind = rng.integers(0, 4, size=(f, 17))
        t = rng.integers(1, 31, size=(f, 17)) * 5.0
        u = rng.normal(size=(f, 17, 3))
        u /= np.linalg.norm(u, axis=-1, keepdims=True)
        offset = np.where((kind == 0)[..., None], u * t[..., None], 0.0)
        offset[..., 0] += np.where(kind == 1, 125.0, 0.0)
        offset += np.where((kind == 3)[..., None], u * rng.uniform(0, 200, size=(f, 17, 1)), 0)
        h0 = gt_m + offset / 1000.0
        out[i, 0] = h0
        for j in range(1, h):
            out[i, j] = np.where((np.arange(f) % 2 == 0)[:, None, None], h0, 2 * gt_m - h0)
    return out


def window_hypotheses(case: Case, seq: str, frame_index: np.ndarray) -> np.ndarray:
    """``[K, H, F, 17, 3]`` float32 metres, root 0: the sampler's output for one window.

    ``frame_index [F]``: the window's source frames (its first one keys the noise).
    """
    a = annotations(case)[seq]
    frame_index = np.asarray(frame_index)
    rng = np.random.default_rng([case.seed, SEQUENCES.index(seq), int(frame_index[0]), 99])
    gt_m = _relative_m(a["annot3"])[frame_index]
    if case.kind == "ties":
        hyps = _tie_hypotheses(case, gt_m, rng)
    else:
        hyps = _noise_hypotheses(case, gt_m, a["valid"][frame_index], rng)
    hyps = hyps.astype(np.float32)
    hyps[..., ROOT, :] = 0.0
    return hyps


def d3dp_window_starts(length: int, window: int) -> np.ndarray:
    """First frames of D3DP's evaluation windows (``eval_data_prepare``, ``length >= window``)."""
    if length < window:
        raise ValueError(
            f"d3dp_window_starts: a sequence of {length} frames is shorter than the window "
            f"{window}; D3DP's pose_post_process cannot merge it (choose longer sequences)."
        )
    n = -(-length // window)
    starts = np.arange(n) * window
    starts[-1] = length - window
    return starts


def d3dp_select(hyps_mm: np.ndarray, gt_mm: np.ndarray) -> dict[str, np.ndarray]:
    """D3DP's poses of one batch: ``[b, K, H, F, 17, 3]`` -> ``{mode: [b, K, F, 17, 3]}``.

    P-Best: per k the hypothesis with the lowest error averaged over every clip, frame
    and joint of the batch; J-Best: per (clip, k, frame, joint); P-Agg: the mean.
    """
    errors = np.linalg.norm(hyps_mm - gt_mm[:, None, None], axis=-1)  # [b, K, H, F, J]
    per_h = errors.transpose(1, 2, 0, 3, 4).reshape(errors.shape[1], errors.shape[2], -1)
    h_best = per_h.mean(axis=-1).argmin(axis=1)  # [K]
    k_idx = np.arange(hyps_mm.shape[1])
    j_pick = errors.argmin(axis=2)[:, :, None, :, :, None]  # [b, K, 1, F, J, 1]
    return {
        "P_Best": hyps_mm[:, k_idx, h_best],
        "J_Best": np.take_along_axis(hyps_mm, j_pick, axis=2)[:, :, 0],
        "P_Agg": hyps_mm.mean(axis=2),
    }


def _post_process(selected: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    """``[n, K, F, 17, 3]`` window poses -> MATLAB ``(3, 17, L, K)``, later windows written last."""
    window = selected.shape[2]
    out = np.zeros((selected.shape[1], length, 17, 3))
    for i, start in enumerate(starts):
        out[:, start : start + window] = selected[i]
    return out.transpose(3, 2, 1, 0)


def d3dp_inference_data(case: Case) -> dict[str, dict[str, np.ndarray]]:
    """``{mode: {seq: (3, 17, L, K) mm}}``: what D3DP's main_3dhp.py saves for each mode."""
    out: dict[str, dict[str, np.ndarray]] = {m: {} for m in AGGREGATIONS}
    for seq, a in annotations(case).items():
        length = a["annot3"].shape[0]
        starts = d3dp_window_starts(length, case.window)
        frames = starts[:, None] + np.arange(case.window)
        # float32 metres -> float64 mm is exact (24 + 10 mantissa bits).
        hyps = np.stack([window_hypotheses(case, seq, f) for f in frames])
        hyps_mm = hyps.astype(np.float64) * 1000.0
        gt_mm = _relative_m(a["annot3"])[frames] * 1000.0
        chosen: dict[str, list[np.ndarray]] = {m: [] for m in AGGREGATIONS}
        for lo in range(0, len(starts), BATCH):
            batch = d3dp_select(hyps_mm[lo : lo + BATCH], gt_mm[lo : lo + BATCH])
            for m in AGGREGATIONS:
                chosen[m].append(batch[m])
        for m in AGGREGATIONS:
            out[m][seq] = _post_process(np.concatenate(chosen[m]), starts, length)
    return out


# Our stand-ins for MATLAB's table functions, which Octave lacks: the official script
# calls writetable(cell2table(cell_array), file); these write the cell array as CSV.
_STANDINS = {
    "cell2table.m": """function t = cell2table(c)
  % pose_jax stand-in (Octave has no tables): keeps the cell array.
  t = c;
end
""",
    "writetable.m": """function writetable(c, path)
  % pose_jax stand-in: the cell array as CSV, numbers with 17 significant digits.
  fid = fopen(path, 'w');
  for i = 1:size(c, 1)
    for j = 1:size(c, 2)
      if j > 1, fprintf(fid, ','); end
      v = c{i, j};
      while iscell(v) && ~isempty(v), v = v{1}; end  % activity names come as 1x1 cells
      if ischar(v), fprintf(fid, '%s', v);
      elseif ~isempty(v), fprintf(fid, '%.17g', v); end
    end
    fprintf(fid, '\\n');
  end
  fclose(fid);
end
""",
}
_SCRIPT = "mpii_test_predictions_ori_py.m"


def _set_paths(script: str, mode: str, data_dir: str, checkpoint_dir: str) -> str:
    """The official script with its aggregation mode, test-data and prediction paths set."""
    edits = (
        (r"aggregation_mode\s*=\s*'[A-Za-z_]+';", f"aggregation_mode='{mode}';"),
        (r"test_data_path\s*=\s*'[^']*';", f"test_data_path = '{data_dir}';"),
        (
            r"load\(\['[^']*inference_data_'\s*aggregation_mode\s*'\.mat'\]\)",
            f"load(['{checkpoint_dir}/inference_data_' aggregation_mode '.mat'])",
        ),
    )
    for pattern, line in edits:
        script, count = re.subn(pattern, lambda _m, line=line: line, script)
        if count != 1:
            raise ValueError(
                f"{_SCRIPT}: expected one line matching {pattern!r}, found {count}; is "
                "--test_util the 3dhp_test/test_util folder of D3DP?"
            )
    return script


def _prepare(test_util: str, work: str) -> str:
    """Copies the official .m files and our stand-ins into ``work/test_util``; returns it."""
    needed = [_SCRIPT, "mpii_evaluate_errors.m", "mpii_compute_3d_pck.m", "mpii_get_joints.m"]
    missing = [f for f in needed if not os.path.isfile(os.path.join(test_util, f))]
    if missing:
        raise FileNotFoundError(
            f"--test_util {test_util!r} lacks {missing}; expected the 3dhp_test/test_util "
            "folder of a D3DP checkout (paTRICK-swk/D3DP)."
        )
    dest = os.path.join(work, "test_util")
    os.makedirs(dest)
    for name in os.listdir(test_util):
        if name.endswith(".m"):
            shutil.copy(os.path.join(test_util, name), dest)
    for name, text in _STANDINS.items():
        with open(os.path.join(dest, name), "w") as f:
            f.write(text)
    return dest


def _run_octave(octave: str, cwd: str, mode: str, data_dir: str, checkpoint_dir: str) -> None:
    with open(os.path.join(cwd, _SCRIPT)) as f:
        script = f.read()
    runner = f"run_{mode}.m"
    with open(os.path.join(cwd, runner), "w") as f:
        f.write(_set_paths(script, mode, data_dir, checkpoint_dir))
    proc = subprocess.run(
        [octave, "--no-gui", "--quiet", "--no-window-system", "--eval", runner[:-2]],
        cwd=cwd,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"octave ({mode}) failed:\n{proc.stderr[-3000:]}")


def parse_table(path: str) -> dict[str, dict[str, float]]:
    """One CSV of ``mpii_evaluate_errors``: row label -> ``{'mpjpe', 'pck', 'auc'}``.

    Blocks: MPJPE rows (the 'Average' column), then from a 'PCK' row the PCK rows and
    from an 'AUC' row the AUC rows (the 'Total' column).
    """
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    out: dict[str, dict[str, float]] = {}
    column, block = rows[0].index("Average"), "mpjpe"
    for row in rows[1:]:
        if row[0] in ("PCK", "AUC"):
            column, block = row.index("Total"), row[0].lower()
            continue
        if row[0]:
            label = re.sub(r"^TestSeq(\d)$", r"TS\1", row[0])
            out.setdefault(label, {})[block] = float(row[column])
    return out


def record_case(case: Case, test_util: str, octave: str) -> dict[str, Any]:
    """The MATLAB tables of one case: ``{mode: {'sequence'|'activity': {label: {n: [K]}}}}``."""
    from scipy import io as scipy_io

    with tempfile.TemporaryDirectory(prefix="pose_jax_3dhp_") as work:
        data_dir, checkpoint = os.path.join(work, "data"), os.path.join(work, "checkpoint")
        write_annotations(case, data_dir)
        os.makedirs(checkpoint)
        for mode, per_seq in d3dp_inference_data(case).items():
            scipy_io.savemat(os.path.join(checkpoint, f"inference_data_{mode}.mat"), per_seq)
        cwd = _prepare(test_util, work)
        tables: dict[str, Any] = {}
        for mode in AGGREGATIONS:
            _run_octave(octave, cwd, mode, data_dir, checkpoint)
            entry = tables.setdefault(mode, {"sequence": {}, "activity": {}})
            for k in range(1, case.num_iterations + 1):
                for kind, stem in (("sequence", "sequencewise"), ("activity", "activitywise")):
                    name = f"mpii_3dhp_evaluation_{stem}_ori_{mode}_t{k}.csv"
                    for label, numbers in parse_table(os.path.join(cwd, name)).items():
                        group = entry[kind].setdefault(label, {n: [] for n in numbers})
                        for n, v in numbers.items():
                            group[n].append(v)
    return tables


def _octave_version(octave: str) -> str:
    out = subprocess.run([octave, "--version"], capture_output=True, text=True).stdout
    return out.splitlines()[0] if out else "unknown"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--test_util", required=True, help="D3DP's 3dhp_test/test_util folder")
    parser.add_argument(
        "--out", default=os.path.join("tests", "fixtures", "3dhp_matlab_tables.json")
    )
    parser.add_argument("--octave", default="octave", help="the GNU Octave binary")
    args = parser.parse_args(argv)
    if shutil.which(args.octave) is None:
        sys.exit(f"record_3dhp_matlab_fixtures: no {args.octave!r} on PATH; install GNU Octave.")
    test_util = os.path.abspath(os.path.expanduser(args.test_util))
    cases = {}
    for name, case in CASES.items():
        cases[name] = {
            "case": dataclasses.asdict(case),
            "tables": record_case(case, test_util, args.octave),
        }
        print(f"{name}: recorded {', '.join(AGGREGATIONS)}")
    fixture = {
        "recorded_with": _octave_version(args.octave),
        "evaluation": "MPI-INF-3DHP mpii_test_predictions_ori_py.m, mpii_evaluate_errors.m",
        "cases": cases,
    }
    with open(args.out, "w") as f:
        json.dump(fixture, f, indent=1)
        f.write("\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
