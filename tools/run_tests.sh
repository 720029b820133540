#!/usr/bin/env bash
# Runs the whole test suite twice: TensorFlow 2.x (.venv, this machine's python3) and
# TensorFlow 1.15 (.venv-tf1, Python 3.7 — what Ascend's CANN stack runs).
# Creates both environments from the pinned requirements on first use.
# Extra arguments go to pytest (e.g. tools/run_tests.sh -k nets).
# Tests run in TEST_WORKERS processes (default: one per core, at most 4), a test file per
# process at a time (pytest-xdist --dist loadfile): most of a test's time is one core's
# (TensorFlow's start-up, small graphs), and each process stays under ~3 GB.
set -u
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
results=()
status=0
workers=${TEST_WORKERS:-$(nproc 2>/dev/null || echo 1)}
[ "$workers" -gt 4 ] && workers=4
parallel=()
[ "$workers" -gt 1 ] && parallel=(-n "$workers" --dist loadfile)

run_suite() {  # label venv
  echo "== $1: $("$2/bin/python" -c 'import sys, tensorflow as tf; print("Python %d.%d, TensorFlow %s" % (sys.version_info[0], sys.version_info[1], tf.__version__))' 2>/dev/null)"
  local start=$SECONDS log
  log=$(mktemp)
  "$2/bin/python" -m pytest ${parallel[@]+"${parallel[@]}"} "${@:3}" | tee "$log"
  local rc=${PIPESTATUS[0]}
  # pytest's closing counts, and how many tests skipped for want of ../shared/data
  local counts shared
  counts=$(grep -E '^=* ?[0-9]+ (passed|failed)|^=* ?no tests ran' "$log" | tail -n 1 | tr -d '=' | sed 's/^ *//; s/ in [0-9.]*s.*$//')
  shared=$(grep -E '^SKIPPED \[[0-9]+\].*\.\./shared/data not present' "$log" | sed -E 's/^SKIPPED \[([0-9]+)\].*/\1/' | awk '{n += $1} END {print n + 0}')
  rm -f "$log"
  local note=""
  [ "$shared" -gt 0 ] && note="; $shared skipped: ../shared/data not present (real-data tests)"
  if [ $rc -eq 0 ]; then results+=("$1: passed in $((SECONDS - start)) s ($counts$note)")
  else results+=("$1: FAILED (pytest exit $rc; $counts$note)"); status=1; fi
}

tools/venv.sh python3 .venv requirements.txt || { echo "could not create .venv"; exit 1; }
run_suite "TensorFlow 2.x" .venv "$@"

py37=$(tools/find_python37.sh)
if [ -z "$py37" ]; then
  results+=("TensorFlow 1.15: SKIPPED — no Python 3.7 found (install it with pyenv, or put python3.7 on PATH)")
else
  tools/venv.sh "$py37" .venv-tf1 requirements-tf1.txt || { echo "could not create .venv-tf1"; exit 1; }
  run_suite "TensorFlow 1.15" .venv-tf1 "$@"
fi

echo "== summary"
printf '%s\n' "${results[@]}"
exit $status
