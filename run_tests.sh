#!/usr/bin/env bash
# Set up .venv (idempotent), then run every test: unit tests and every notebook under the smoke
# profile with nbval. Extra arguments go to pytest (e.g. ./run_tests.sh -k world).
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
export MMLIB_PROFILE=smoke HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
.venv/bin/python -m pytest -q tests notebooks --nbval-lax --nbval-kernel-name mmlib \
  --nbval-cell-timeout 600 -p no:cacheprovider "$@"
