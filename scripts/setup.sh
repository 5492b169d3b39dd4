#!/usr/bin/env bash
# Create (or refresh) the course's virtual environment in .venv: Python 3.11, requirements.txt,
# and the helper package `dcv` in editable mode; install the Debian packages listed in
# scripts/apt/*.txt where they are missing. Safe to run again: it reinstalls only when
# requirements.txt or pyproject.toml changed, and installs only missing Debian packages.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages (one name per line in scripts/apt/*.txt, '#' starts a comment).
want_apt=$(shopt -s nullglob; cat /dev/null scripts/apt/*.txt | sed 's/#.*//' | tr -s ' \t' '\n' | sed '/^$/d' | sort -u)
missing_apt=$(for p in $want_apt; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
if [ -n "$missing_apt" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Debian packages:" $missing_apt
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing_apt >/dev/null
  else
    echo "setup: these Debian packages are missing; install them (as root): apt-get install" $missing_apt >&2
    exit 1
  fi
fi

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      PY="$candidate"; break
    fi
  done
fi
if [ -z "$PY" ]; then
  echo "setup: Python 3.11 is required (set PYTHON=/path/to/python3.11)." >&2
  exit 1
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $("$PY" --version)"
  "$PY" -m venv .venv
fi

UV_VERSION=0.13.9  # the installer (PyPI: uv), itself installed by the pip every virtual environment has
stamp=.venv/.dcv-requirements.sha256
want=$( (cat requirements.txt pyproject.toml; echo "uv $UV_VERSION") | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing requirements (a minute or two the first time)"
  # uv installs what pip would (the same versions: the newest that requirements.txt allows), but links
  # the files from its cache instead of unpacking every wheel again on one core: 2 s instead of 37 CPU-s
  # when the wheels are cached, 9 s when they are downloaded. --system-certs: the system's certificates
  # too, as pip uses them (a network whose proxy signs with its own authority installs it there).
  .venv/bin/python -m pip install -q "uv==$UV_VERSION"
  .venv/bin/python -m uv pip install --system-certs -q --python .venv/bin/python --upgrade-package pip pip -r requirements.txt
  .venv/bin/python -m uv pip install --system-certs -q --python .venv/bin/python --no-deps --no-build-isolation -e .
  # Every installed module compiled on every core, once: graded kernels run as a user who may not write
  # the .pyc files a first import would. Like pip, it goes on past a file that does not compile.
  .venv/bin/python -m compileall -q -j 0 "$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" >/dev/null || true
  echo "$want" > "$stamp"
fi
echo "setup: .venv ready ($(.venv/bin/python --version))"
