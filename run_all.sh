#!/usr/bin/env bash
# Set up .venv (idempotent), then reproduce the report: every notebook in order with papermill,
# then report.md and figures/ from the saved results.
#   ./run_all.sh [--profile smoke|cpu|paper] [--only NN]... [--force]
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
export MMLIB_PROFILE=${MMLIB_PROFILE:-cpu}
start=$(date +%s)
.venv/bin/python -m mmlib.runner "$@"
echo "[run_all] done in $(( $(date +%s) - start )) s"
