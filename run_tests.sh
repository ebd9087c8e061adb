#!/usr/bin/env bash
# Set up .venv (idempotent), then run every test in both precisions:
#   1. the unit tests with MMLIB_PRECISION=fp32;
#   2. the unit tests with MMLIB_PRECISION=bf16 — all of them where the CPU (or GPU) has bf16 units,
#      the named subset `-m bf16` (every autocast path) where bf16 is emulated (~45x slower than fp32);
#   3. every notebook under the smoke profile with nbval, in the automatic precision.
# MMLIB_PRECISION=fp32 (or bf16) ./run_tests.sh runs everything, unit tests and notebooks, in that one
# precision. Extra arguments go to every pytest call (e.g. ./run_tests.sh -k world).
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
export MMLIB_PROFILE=smoke HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
py=.venv/bin/python
nbval=(notebooks --nbval-lax --nbval-kernel-name mmlib --nbval-cell-timeout 600)

pass() {  # pass NAME PRECISION PYTEST-ARGS...: one pytest run; exit 5 (nothing selected, e.g. by -k) is no failure
  local name=$1 precision=$2; shift 2
  echo "[run_tests] $name (MMLIB_PRECISION=$precision)"
  local rc=0
  MMLIB_PRECISION=$precision "$py" -m pytest -q -p no:cacheprovider "$@" || rc=$?
  [ "$rc" = 0 ] || [ "$rc" = 5 ] || exit "$rc"
}

want=${MMLIB_PRECISION:-auto}
if [ "$want" != auto ]; then
  pass "unit tests + notebooks" "$want" tests "${nbval[@]}" "$@"
  exit 0
fi
pass "unit tests" fp32 tests "$@"
if [ "$("$py" -c 'from mmlib import device; print(int(device.fast_bf16()))')" = 1 ]; then
  pass "unit tests" bf16 tests "$@"
else
  pass "unit tests, bf16 subset (bf16 is emulated on this CPU)" bf16 tests -m bf16 "$@"
fi
pass "notebooks (nbval, smoke)" auto "${nbval[@]}" "$@"
