#!/usr/bin/env bash
# Run every test, stage by stage, and print each stage's wall time: set-up, unit tests of the helper
# package, the chapters and the solutions executed with nbval, the grading workflow end to end, the
# book build (which reuses the chapters' execution), the browser tests. With arguments, one pytest
# run with them instead (e.g. `bash scripts/test.sh -m "not slow"`); that never touches the book's cache.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
bash scripts/setup.sh
source scripts/cache.sh
book_cache_check   # drops the book's execution cache only when the helper package or requirements changed
DCV_SETUP_SECONDS=$(( $(date +%s) - start )) exec .venv/bin/python scripts/run_tests.py "$@"
