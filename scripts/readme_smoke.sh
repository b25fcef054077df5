#!/usr/bin/env bash
# Runs the README's Quickstart block exactly as a user types it, in a clean clone of
# this checkout, with relative paths, in its short form: `configs/quickstart.py`
# becomes `configs/quickstart.py:runlocal` (20 steps) and `python3.12` the Python
# given as $1 (default python3.12). Fails when any of its commands fails.
set -euo pipefail
SRC="$(cd "$(dirname "$0")/.." && pwd)"
PY="${1:-python3.12}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
git clone -q "$SRC" "$WORK/pose_jax"
cd "$WORK/pose_jax"
# The first ```bash block after "## Quickstart".
block="$(awk '/^## Quickstart/{q=1} q&&/^```bash/{b=1; next} b&&/^```/{exit} b{print}' README.md)"
[ -n "$block" ] || { echo "readme_smoke: no bash block under '## Quickstart' in README.md" >&2; exit 1; }
block="${block//configs\/quickstart.py/configs/quickstart.py:runlocal}"
block="${block//python3.12 /$PY }"
echo "readme_smoke: running in $PWD:"
echo "$block" | sed 's/^/  $ /'
while IFS= read -r line; do
  [ -z "$line" ] && continue
  echo "+ $line"
  bash -euo pipefail -c "$line"
done <<< "$block"
test -f runs/quickstart/eval/results.json || { echo "readme_smoke: no runs/quickstart/eval/results.json" >&2; exit 1; }
echo "readme_smoke: OK"
