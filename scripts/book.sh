#!/usr/bin/env bash
# Build the HTML book into _build/html: set-up, MathJax (served by the book, for offline reading),
# released assignments, every chapter executed (or taken from the execution cache when its code and
# the helper package are unchanged). A rebuild with nothing changed re-stages and re-reads nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

# MathJax from npm, pinned by scripts/mathjax/package-lock.json (npm ci checks its integrity hash);
# installed again only when the lock file changes.
mathjax=scripts/mathjax
mathjax_stamp=$mathjax/node_modules/.dcv-lock.sha256
mathjax_want=$(sha256sum "$mathjax/package-lock.json" | cut -d' ' -f1)
if [ ! -f "$mathjax/node_modules/mathjax/es5/tex-mml-chtml.js" ] ||
   [ "$(cat "$mathjax_stamp" 2>/dev/null)" != "$mathjax_want" ]; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "book: npm is needed to install MathJax for the book (Debian: apt-get install npm)" >&2
    exit 1
  fi
  echo "book: installing MathJax from npm into $mathjax/node_modules"
  npm ci --prefix "$mathjax" --no-audit --no-fund --loglevel=error >/dev/null
  echo "$mathjax_want" > "$mathjax_stamp"
fi

.venv/bin/python scripts/stage_assignments.py
source scripts/cache.sh
book_cache_check
.venv/bin/jupyter-book build . -n -W --keep-going "$@"
