#!/usr/bin/env bash
# Build the HTML book into _build/html: set-up, released assignments, every chapter executed
# (or taken from the execution cache when its code and the helper package are unchanged).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python scripts/stage_assignments.py
source scripts/cache.sh
book_cache_check
.venv/bin/jupyter-book build . -n -W --keep-going "$@"
