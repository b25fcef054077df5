#!/usr/bin/env bash
# Drift check (run weekly, or before refreshing constraints.txt): installs the package
# with the newest versions its setup.cfg allows, ignoring constraints.txt, runs the
# default test suite, and lists every package whose newest version differs from the
# pinned one. With --update it rewrites constraints.txt from that environment when the
# tests pass.
#   scripts/check_latest_deps.sh [--update] [python]
set -euo pipefail
cd "$(dirname "$0")/.."
UPDATE=0
if [ "${1:-}" = "--update" ]; then UPDATE=1; shift; fi
PY="${1:-python3.12}"
VENV="$(mktemp -d)/venv"
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q --upgrade --upgrade-strategy eager -e '.[test,plot]'
"$VENV/bin/python" -m pip freeze --exclude-editable | grep -iv '^pose.jax' | sort -f > "$VENV/../latest.txt"
grep -v '^#' constraints.txt | sort -f > "$VENV/../pinned.txt"
echo "check_latest_deps: newest allowed versions that differ from constraints.txt:"
diff "$VENV/../pinned.txt" "$VENV/../latest.txt" | grep '^[<>]' | sed 's/^</  pinned/; s/^>/  newest/' || echo "  (none)"
"$VENV/bin/python" -m pytest -n 2 -q -m "not slow" && "$VENV/bin/python" -m pytest -n 2 -q -m slow
if [ "$UPDATE" = 1 ]; then
  { sed -n '1,2p' constraints.txt; cat "$VENV/../latest.txt"; } > constraints.txt.new
  mv constraints.txt.new constraints.txt
  echo "check_latest_deps: constraints.txt updated; run .ci/run before committing it."
fi
