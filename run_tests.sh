#!/usr/bin/env bash
# Set up .venv (idempotent), then run every test in both precisions:
#   1. the unit tests with MMLIB_PRECISION=fp32;
#   2. the unit tests with MMLIB_PRECISION=bf16 — all of them where the CPU (or GPU) has bf16 units,
#      the named subset `-m bf16` (every autocast path) where bf16 is emulated (~45x slower than fp32);
#   3. every notebook under the smoke profile with nbval, in the automatic precision;
#   4. the `paper` rehearsal (tests/rehearsal): notebooks 01-09 in paper on tiny random stand-ins of every hub
#      model (python -m mmlib.rehearse), about 4-5 minutes; MMLIB_SKIP_REHEARSAL=1 leaves it out.
# MMLIB_PRECISION=fp32 (or bf16) ./run_tests.sh runs everything, unit tests and notebooks, in that one
# precision. Extra arguments go to every pytest call (e.g. ./run_tests.sh -k world).
# Every stage runs even when an earlier one fails; a summary line per stage comes at the end, and the
# exit status is the first failing stage's (0 when all passed; pytest's 5, nothing selected, is a pass).
# The unit tests never compare this machine's runs/ with the committed report: python -m mmlib.compare_run does.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
export MMLIB_PROFILE=smoke HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
py=.venv/bin/python
nbval=(notebooks --nbval-lax --nbval-kernel-name mmlib --nbval-cell-timeout 600)

summary=() status=0
pass() {  # pass NAME PRECISION PYTEST-ARGS...: one pytest run; exit 5 (nothing selected, e.g. by -k) is no failure
  local name="$1 (MMLIB_PRECISION=$2)" precision=$2 start=$SECONDS rc=0 verdict; shift 2
  echo "[run_tests] $name"
  MMLIB_PRECISION=$precision "$py" -m pytest -q -p no:cacheprovider "$@" || rc=$?
  case $rc in
    0) verdict=passed ;;
    5) verdict="passed (nothing selected)" ;;
    *) verdict="FAILED (exit $rc)"; [ "$status" != 0 ] || status=$rc ;;
  esac
  summary+=("$name: $verdict in $((SECONDS - start)) s")
}
finish() {  # the summary of every stage run, then the first failing stage's exit status
  echo "[run_tests] summary:"
  [ "${#summary[@]}" = 0 ] || printf '[run_tests]   %s\n' "${summary[@]}"
  exit "$status"
}
trap 'echo "[run_tests] interrupted"; status=130; finish' INT

want=${MMLIB_PRECISION:-auto}
if [ "$want" != auto ]; then
  pass "unit tests + notebooks" "$want" tests --ignore=tests/rehearsal "${nbval[@]}" "$@"
  [ "${MMLIB_SKIP_REHEARSAL:-0}" = 1 ] || pass "paper rehearsal" "$want" tests/rehearsal "$@"
  finish
fi
pass "unit tests" fp32 tests --ignore=tests/rehearsal "$@"
if [ "$("$py" -c 'from mmlib import device; print(int(device.fast_bf16()))')" = 1 ]; then
  pass "unit tests" bf16 tests --ignore=tests/rehearsal "$@"
else
  pass "unit tests, bf16 subset (bf16 is emulated on this CPU)" bf16 tests --ignore=tests/rehearsal -m bf16 "$@"
fi
pass "notebooks (nbval, smoke)" auto "${nbval[@]}" "$@"
[ "${MMLIB_SKIP_REHEARSAL:-0}" = 1 ] || pass "paper rehearsal" auto tests/rehearsal "$@"
finish
