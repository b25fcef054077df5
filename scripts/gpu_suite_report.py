r"""Merges the steps of ``scripts/gpu_suite.sh`` into one JSON and one markdown table.

  python scripts/gpu_suite_report.py RUNS_DIR --out=OUT_DIR [--seconds=N]

``RUNS_DIR`` holds ``steps.tsv`` (name, exit status, seconds, command per step) and
one folder per step with its ``log.txt`` and the report it wrote:
``benchmark.json`` (``launch.benchmark``), ``compare_reference_speed.json`` or
``compare_reference_train_step.json``. Writes ``suite.json`` (every step, its status
and report; the log's tail where it failed) and ``suite.md``: the environment, the
steps' status, the summary tables (the GCN refiners in the layout of monoMotionDiff's
A100 table with the multiple of it, sampling, training steps, PyTorch on the same
device), then every step's own markdown.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

_REPO_ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from pose_jax.benchmarking import markdown_table  # noqa: E402

REPORT_FILES = (
    "benchmark.json",
    "compare_reference_speed.json",
    "compare_reference_train_step.json",
)
GCN_TARGET = 10.0  # issue #19: at least 10x the A100 table's throughput at every step count
LOG_TAIL_LINES = 30


def _status(rc: str) -> str:
    if rc == "skipped":
        return "skipped"
    code = int(rc)
    return {0: "ok", 124: "timed out", 137: "timed out (killed)"}.get(code, f"failed (rc {code})")


def read_steps(runs: str) -> list[dict]:
    """The steps of ``runs/steps.tsv`` with their reports (None where none was written)."""
    path = os.path.join(runs, "steps.tsv")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no steps.tsv; expected the RUNS_DIR of gpu_suite.sh.")
    steps = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            fields = line.rstrip("\n").split("\t")
            if len(fields) != 4:
                raise ValueError(f"{path}:{n}: expected 4 tab-separated fields, got {len(fields)}.")
            name, rc, seconds, command = fields
            steps.append(_step(runs, name, rc, float(seconds), command))
    return steps


def _read_text(path: str) -> str | None:
    """The file's text, or None where the step wrote none."""
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return f.read()


def _step(runs: str, name: str, rc: str, seconds: float, command: str) -> dict:
    folder = os.path.join(runs, name)
    report, kind = None, None
    for fname in REPORT_FILES:
        text = _read_text(os.path.join(folder, fname))
        if text is not None:
            report, kind = json.loads(text), fname.removesuffix(".json")
            break
    log = (_read_text(os.path.join(folder, "log.txt")) or "").splitlines()
    status = _status(rc)
    markdown = _read_text(os.path.join(folder, f"{kind}.md")) if kind else None
    return {
        "name": name,
        "status": status,
        "seconds": seconds,
        "command": command,
        "kind": kind,
        "report": report,
        "markdown": markdown,
        "log": log if name == "environment" else log[-LOG_TAIL_LINES:],
    }


def gcn_rows(steps: Sequence[Mapping[str, Any]]) -> list[dict]:
    """monoMotionDiff Tab. 3's layout: 1024-pose batches/s at DDIM 1-4 and the multiple."""
    rows = []
    for s in steps:
        r = s["report"]
        if s["kind"] != "benchmark" or r.get("mode") != "sample" or not r["rows"]:
            continue
        if "published_fps" not in r["rows"][0]:
            continue
        for row in r["rows"]:
            fps = row["published_fps"]
            ratio = row["batches1024_per_s"] / fps if fps else None
            rows.append({
                "system": r["model"], "dtype": r["dtype"], "steps": row["steps"],
                "batch": row["batch"], "first_call_s": row["first_call_s"],
                "median_s": row["median_s"],
                "batches1024_per_s": row["batches1024_per_s"],
                "published_fps": row["published_fps"], "times_published": ratio,
                "target_met": None if ratio is None else ratio >= GCN_TARGET,
                "achieved_tflops": row["achieved_tflops"],
                "flop_utilisation": row["flop_utilisation"],
                "bf16_max_abs_diff": row.get("bf16_max_abs_diff"),
            })  # fmt: skip
    return rows


def clip_rows(steps: Sequence[Mapping[str, Any]]) -> list[dict]:
    """D3DP / FinePOSE sampling rows (H x K on clips)."""
    rows = []
    for s in steps:
        r = s["report"]
        if s["kind"] != "benchmark" or r.get("mode") != "sample" or not r["rows"]:
            continue
        if "published_fps" in r["rows"][0]:
            continue
        attention = (r.get("model_kwargs") or {}).get("attention_impl", "auto")
        peak = r.get("peak_memory_bytes")
        for row in r["rows"]:
            setting = f"H{row['H']}K{row['K']}, {row['clips']} x {row['frames']} frames"
            rows.append({"step": s["name"], "system": r["model"], "dtype": r["dtype"],
                         "attention": attention, "setting": setting, **row,
                         "peak_memory_gib": None if peak is None else peak / 2**30})  # fmt: skip
    return rows


def train_rows(steps: Sequence[Mapping[str, Any]]) -> list[dict]:
    """One training step per system (``--mode=train``) with the process's peak memory."""
    rows = []
    for s in steps:
        r = s["report"]
        if s["kind"] != "benchmark" or r.get("mode") != "train":
            continue
        peak = r.get("peak_memory_bytes")
        for row in r["rows"]:
            rows.append({"system": r["model"], "denoiser": r["denoiser"], **row,
                         "peak_memory_gib": None if peak is None else peak / 2**30})  # fmt: skip
    return rows


def reference_rows(steps: Sequence[Mapping[str, Any]]) -> list[dict]:
    """PyTorch reference vs pose_jax on the same device, one row per compared setting."""
    rows = []
    for s in steps:
        r = s["report"]
        if s["kind"] == "compare_reference_speed":
            for row in r["rows"]:
                rows.append({"what": f"{r['system']} sampling", "setting": row["setting"],
                             "reference_s": row["reference_median_s"],
                             "pose_jax_s": row["pose_jax_median_s"],
                             "speed_ratio": row["speed_ratio"]})  # fmt: skip
        elif s["kind"] == "compare_reference_train_step":
            sides = r["sides"]
            rows.append({"what": "d3dp training step",
                         "setting": f"{r['clips']} x {r['frames']} frames",
                         "reference_s": sides["reference"]["median_s"],
                         "pose_jax_s": sides["pose_jax"]["median_s"],
                         "speed_ratio": r["speed_ratio"]})  # fmt: skip
    return rows


SECTIONS = (
    (
        "GCN refiners in the layout of monoMotionDiff's A100 table (Tab. 3: batches of "
        f"1024 poses per second, flip TTA, T_test 12); target >= {GCN_TARGET:g}x",
        gcn_rows,
        [("system", "system"), ("dtype", "dtype"), ("steps", "DDIM steps"),
         ("batch", "poses/call"), ("first_call_s", "first call s"), ("median_s", "s/call"),
         ("batches1024_per_s", "1024-batches/s"), ("published_fps", "published A100"),
         ("times_published", "x A100"), ("achieved_tflops", "TFLOP/s"),
         ("flop_utilisation", "utilisation"), ("bf16_max_abs_diff", "bf16 max abs diff m")],
    ),
    (
        "D3DP / FinePOSE sampling (flip TTA in every step; utilisation against the "
        "profile's dense peak of the dtype)",
        clip_rows,
        [("system", "system"), ("dtype", "dtype"), ("attention", "attention"),
         ("setting", "setting"), ("first_call_s", "first call s"), ("median_s", "s/call"),
         ("poses_per_s", "poses/s"), ("achieved_tflops", "TFLOP/s"),
         ("flop_utilisation", "utilisation"), ("bf16_max_abs_diff", "bf16 max abs diff m"),
         ("peak_memory_gib", "peak device GiB (process)")],
    ),
    (
        "Training step at the paper batch (float32 parameters, TF32 matmuls; random data)",
        train_rows,
        [("system", "system"), ("batch", "batch"), ("frames", "frames"),
         ("compile_s", "compile s"), ("median_s", "s/step"), ("steps_per_s", "steps/s"),
         ("samples_per_s", "samples/s"), ("achieved_tflops", "TFLOP/s"),
         ("flop_utilisation", "utilisation"), ("xla_memory_mib", "XLA plan MiB"),
         ("peak_memory_gib", "peak device GiB")],
    ),
    (
        "PyTorch reference on the same device (alternated calls, median)",
        reference_rows,
        [("what", "what"), ("setting", "setting"), ("reference_s", "reference s"),
         ("pose_jax_s", "pose_jax s"), ("speed_ratio", "pose_jax / reference")],
    ),
)  # fmt: skip


def to_markdown(suite: Mapping[str, Any]) -> str:
    """The suite as markdown: environment, step status, summaries, each step's own report."""
    steps = suite["steps"]
    out = [f"## GPU suite, {suite['date_utc']} UTC ({suite['seconds']:.0f} s of wall time)\n"]
    env = next((s for s in steps if s["name"] == "environment"), None)
    if env:
        out.append("```\n" + "\n".join(env["log"]).strip() + "\n```\n")
    status = [{"name": s["name"], "status": s["status"], "seconds": s["seconds"]} for s in steps]
    out.append(
        markdown_table(status, [("name", "step"), ("status", "status"), ("seconds", "s")]) + "\n"
    )
    for title, rows_of, cols in SECTIONS:
        rows = rows_of(steps)
        if rows:
            out.append(f"### {title}\n\n{markdown_table(rows, cols)}\n")
    for s in steps:
        if s["markdown"]:
            out.append(s["markdown"])
        elif s["name"] != "environment" and s["log"]:
            out.append(f"### {s['name']}: {s['status']}\n\n```\n" + "\n".join(s["log"]) + "\n```\n")
    return "\n".join(out)


def build_suite(runs: str, seconds: float | None = None) -> dict:
    steps = read_steps(runs)
    return {
        "date_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M"),
        "seconds": float(seconds if seconds is not None else sum(s["seconds"] for s in steps)),
        "steps": steps,
        "summary": {title: rows_of(steps) for title, rows_of, _ in SECTIONS},
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", help="The RUNS_DIR of gpu_suite.sh (steps.tsv and a folder per step).")
    ap.add_argument("--out", required=True, help="Directory for suite.json and suite.md.")
    ap.add_argument("--seconds", type=float, default=None, help="The suite's wall time.")
    args = ap.parse_args(argv)
    try:
        suite = build_suite(args.runs, args.seconds)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "suite.json"), "w") as f:
        json.dump(suite, f, indent=1)
    md = to_markdown(suite)
    with open(os.path.join(args.out, "suite.md"), "w") as f:
        f.write(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
