#!/usr/bin/env bash
# Run every test: unit tests of the helper package, every chapter and solution notebook (nbval),
# the grading workflow end to end, and the book build (which reuses the chapters' execution).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/cache.sh
book_cache_reset   # the chapters are executed afresh by this run, the book reuses that
exec .venv/bin/python -m pytest --nbval-lax --nbval-cell-timeout=900 tests chapters solutions "$@"
