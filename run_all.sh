#!/usr/bin/env bash
# Set up .venv (idempotent), then reproduce the report: every notebook in order with papermill,
# then report.md and figures/ from the saved results (arguments go to python -m mmlib.runner).
#   ./run_all.sh [--profile smoke|cpu|paper] [--only NN]... [--force] [--threads N] [--no-report] [--allow-mixed]
# --threads N (or MMLIB_THREADS=N): threads per notebook, default all available cores (fewer on a shared machine).
# --allow-mixed: build the report even from results of several commits or a dirty tree (it says so at the top).
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
export MMLIB_PROFILE=${MMLIB_PROFILE:-cpu}
start=$(date +%s)
.venv/bin/python -m mmlib.runner "$@"
echo "[run_all] done in $(( $(date +%s) - start )) s"
