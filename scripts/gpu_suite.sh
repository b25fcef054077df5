#!/usr/bin/env bash
# The GPU measurement suite: one prepared run on one CUDA GPU (H100/H200 class) that
# writes one JSON and one markdown table of every row, plus its logs.
#
#   scripts/gpu_suite.sh OUT_DIR [REFERENCES_DIR]
#
# OUT_DIR gets suite.json, suite.md and logs.tar.gz (every step's log and report).
# REFERENCES_DIR, when given, holds checkouts D3DP/ (paTRICK-swk/D3DP), Diffpose/
# (GONGJIA0208/Diffpose) and monoMotionDiff/ (jjkislele/monoMotionDiff): the PyTorch
# references are then timed on the same GPU (scripts/compare_reference_speed.py
# --device=$REF_DEVICE, scripts/compare_reference_train_step.py --device=$REF_DEVICE); torch, einops
# and scipy must be importable.
#
# Steps run in order of importance, each in its own process under `timeout`, so one
# failure or hang costs only its own row; a step that would start after the deadline
# (SUITE_SECONDS, default 450 s of wall time) is recorded as skipped. Environment:
#   PYTHON          the interpreter (default python3)
#   SUITE_SECONDS   the wall-time budget of all steps (default 450)
#   SUITE_REF_DEVICE  where the references' comparisons run (default cuda; cpu to check
#                   the plumbing on a machine without a GPU)
#   SUITE_STEPS     comma-separated step names to run (default: all), e.g. for a rerun
#                   of the steps a first run did not reach
#   SUITE_SMOKE=1   tiny denoisers, small batches, one repeat: checks the plumbing on
#                   any machine (CPU included) in a few minutes; numbers meaningless.
# Run from the repository root (pose_jax importable: PYTHONPATH=. or pip install -e .).
set -uo pipefail
OUT="${1:?usage: scripts/gpu_suite.sh OUT_DIR [REFERENCES_DIR]}"
REFS="${2:-}"
PY="${PYTHON:-python3}"
BUDGET="${SUITE_SECONDS:-450}"
SMOKE="${SUITE_SMOKE:-0}"
REF_DEVICE="${SUITE_REF_DEVICE:-cuda}"
WORK="$(mktemp -d)"
RUNS="$WORK/runs"
mkdir -p "$OUT" "$RUNS"
START=$(date +%s)
STEPS="$RUNS/steps.tsv"
: >"$STEPS"
export PYTHONUNBUFFERED=1

# step NAME LIMIT_S CMD...: runs CMD with --out-style output dir $RUNS/NAME, logs it.
step() {
  local name="$1" limit="$2"
  shift 2
  if [[ -n "${SUITE_STEPS:-}" && ",$SUITE_STEPS," != *",$name,"* ]]; then
    return  # not selected
  fi
  local left=$((BUDGET - ($(date +%s) - START)))
  if ((left < 20)); then
    printf '%s\tskipped\t0\tout of time (%ss left of %ss)\n' "$name" "$left" "$BUDGET" >>"$STEPS"
    echo "== $name: skipped (out of time)"
    return
  fi
  ((limit > left)) && limit=$left
  mkdir -p "$RUNS/$name"
  echo "== $name (limit ${limit}s): $*"
  local t0=$(date +%s)
  timeout --kill-after=5 "$limit" "$@" >"$RUNS/$name/log.txt" 2>&1
  local rc=$?
  local dt=$(($(date +%s) - t0))
  local cmd="$*"
  cmd="${cmd//[$'\t\n']/ }"  # one line per step in steps.tsv
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$dt" "$cmd" >>"$STEPS"
  echo "   rc=$rc in ${dt}s; last lines:"
  tail -n 4 "$RUNS/$name/log.txt" | cut -c1-200 | sed 's/^/   | /'
}

bench() {  # bench NAME LIMIT ARGS...: python -m launch.benchmark ... --out=$RUNS/NAME
  local name="$1" limit="$2"
  shift 2
  step "$name" "$limit" "$PY" -m launch.benchmark --profile=gpu "$@" --out="$RUNS/$name"
}

if [[ "$SMOKE" == 1 ]]; then
  GCN_BATCH=8; CLIPS=1; FRAMES=(--frames=27); GRID=H1K1,H2K2
  REP=(--repeats=1 --warmup=0); GCN_REP=("${REP[@]}")
  MM=(--denoiser=mmdiff_tiny); GCN=(--denoiser=gcndiff_tiny); D3=(--denoiser=d3dp_tiny)
  FP=(--denoiser=finepose_tiny); TRAIN=(--batch=2); TRAIN_FR=(--frames=27)
  REF_TRAIN=(--denoiser=d3dp_tiny --clips=1 --frames=27 --repeats=1 --warmup=0)
  REF_REP=(--repeats=1 --warmup=0); REF_D3=(--denoiser=d3dp_tiny --frames=27 --clips=1)
  KTP=(--denoiser=ktpformer_tiny)
else
  GCN_BATCH=1024; CLIPS=4; FRAMES=(); GRID=H1K1,H5K5,H20K10
  REP=(--repeats=3); GCN_REP=(--repeats=10)
  MM=(); GCN=(); D3=(); FP=(); TRAIN=(); TRAIN_FR=(); KTP=()
  REF_TRAIN=(--repeats=10); REF_REP=(--repeats=10); REF_D3=(--clips=4)
fi

step environment 30 "$PY" -c "
import platform, subprocess, jax, flax, optax, orbax.checkpoint as ocp, chex, numpy
print('python', platform.python_version(), '| jax', jax.__version__, '| flax', flax.__version__,
      '| optax', optax.__version__, '| chex', chex.__version__, '| numpy', numpy.__version__)
print('devices', jax.devices(), [d.device_kind for d in jax.devices()])
try:
    import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())
except ImportError as e:
    print('torch: not importable', e)
try:
    print(subprocess.run(['nvidia-smi', '--query-gpu=name,driver_version,memory.total,clocks.max.sm',
                          '--format=csv'], capture_output=True, text=True).stdout)
except OSError as e:
    print('nvidia-smi:', e)
"
step gpu_tests 120 env JAX_PLATFORMS= "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/gpu_test.py

# The published A100 table's layout: GCN refiners, DDIM 1-4 steps, flip TTA, 1024 poses.
bench mmdiff_f32 60 --system=mmdiff --batch=$GCN_BATCH --grid=S1,S2,S3,S4 "${MM[@]}" "${GCN_REP[@]}"
bench mmdiff_bf16 60 --system=mmdiff --batch=$GCN_BATCH --grid=S1,S2,S3,S4 --dtype=bfloat16 "${MM[@]}" "${GCN_REP[@]}"
bench gcndiff_f32 60 --system=diffpose_frame --batch=$GCN_BATCH --grid=S1,S2,S3,S4 "${GCN[@]}" "${GCN_REP[@]}"
bench gcndiff_bf16 60 --system=diffpose_frame --batch=$GCN_BATCH --grid=S1,S2,S3,S4 --dtype=bfloat16 "${GCN[@]}" "${GCN_REP[@]}"
# D3DP sampling on 4 clips of 243 frames; bf16 for the FLOP utilisation target.
bench d3dp_bf16 120 --system=d3dp --clips=$CLIPS "${FRAMES[@]}" --grid=$GRID --dtype=bfloat16 "${D3[@]}" "${REP[@]}"
bench d3dp_f32 120 --system=d3dp --clips=$CLIPS "${FRAMES[@]}" --grid=$GRID "${D3[@]}" "${REP[@]}"
# One training step of each system at its paper batch.
bench train_d3dp 60 --mode=train --system=d3dp "${TRAIN[@]}" "${TRAIN_FR[@]}" "${D3[@]}" --repeats=5
if [[ -n "$REFS" ]]; then
  export XLA_PYTHON_CLIENT_MEM_FRACTION=0.45
  step ref_train_d3dp 90 "$PY" scripts/compare_reference_train_step.py --device=$REF_DEVICE \
    --reference_dir="$REFS/D3DP" "${REF_TRAIN[@]}" --out="$RUNS/ref_train_d3dp"
  step ref_mmdiff 60 "$PY" scripts/compare_reference_speed.py --device=$REF_DEVICE --system=mmdiff \
    --reference_dir="$REFS/monoMotionDiff" --batch=$GCN_BATCH "${MM[@]}" "${REF_REP[@]}" \
    --out="$RUNS/ref_mmdiff"
  step ref_gcndiff 60 "$PY" scripts/compare_reference_speed.py --device=$REF_DEVICE \
    --system=diffpose_frame --reference_dir="$REFS/Diffpose" --batch=$GCN_BATCH "${GCN[@]}" \
    "${REF_REP[@]}" --out="$RUNS/ref_gcndiff"
  step ref_d3dp 90 "$PY" scripts/compare_reference_speed.py --device=$REF_DEVICE --system=d3dp \
    --reference_dir="$REFS/D3DP" --grid=H1K1,H5K5 "${REF_D3[@]}" --repeats=3 \
    --out="$RUNS/ref_d3dp"
  unset XLA_PYTHON_CLIENT_MEM_FRACTION
fi
bench train_finepose 60 --mode=train --system=finepose "${TRAIN[@]}" "${TRAIN_FR[@]}" "${FP[@]}" --repeats=5
bench train_mmdiff 45 --mode=train --system=mmdiff "${TRAIN[@]}" "${MM[@]}" --repeats=5
bench train_gcndiff 45 --mode=train --system=diffpose_frame "${TRAIN[@]}" "${GCN[@]}" --repeats=5
bench finepose_bf16 90 --system=finepose --clips=$CLIPS "${FRAMES[@]}" --grid=$GRID --dtype=bfloat16 "${FP[@]}" "${REP[@]}"
bench d3dp_bf16_cudnn 90 --system=d3dp --clips=$CLIPS "${FRAMES[@]}" --grid=$GRID --dtype=bfloat16 \
  --model_kwargs=attention_impl=cudnn "${D3[@]}" "${REP[@]}"
bench train_ktpformer 45 --mode=train --system=ktpformer "${TRAIN[@]}" "${TRAIN_FR[@]}" "${KTP[@]}" --repeats=5
bench train_diffpose_video 45 --mode=train --system=diffpose_video "${TRAIN[@]}" "${GCN[@]}" --repeats=5

"$PY" scripts/gpu_suite_report.py "$RUNS" --out="$OUT" --seconds=$(($(date +%s) - START))
report_rc=$?
tar -czf "$OUT/logs.tar.gz" -C "$WORK" runs
rm -rf "$WORK"
if ((report_rc)); then
  echo "gpu_suite: the report failed (rc $report_rc); the steps' logs are in $OUT/logs.tar.gz" >&2
  exit "$report_rc"
fi
echo "gpu_suite: wrote $OUT/suite.json, $OUT/suite.md, $OUT/logs.tar.gz"
