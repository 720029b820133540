#!/usr/bin/env bash
# `make bench` / `make bench-quick`: runs test/benchmark/bench.py in both environments
# (TF 2.x in .venv, TF 1.15 in .venv-tf1 when a Python 3.7 exists), then writes the two
# side by side to output/bench/bench.md. Arguments go to bench.py (e.g. --quick).
set -u
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
status=0
tools/venv.sh python3 .venv requirements.txt || { echo "could not create .venv"; exit 1; }
mkdir -p output/bench
rm -f output/bench/bench_tf*.json
.venv/bin/python test/benchmark/bench.py "$@" || status=1
py37=$(tools/find_python37.sh)
if [ -z "$py37" ]; then
  echo "bench: TensorFlow 1.15 SKIPPED — no Python 3.7 found (install it with pyenv)"
else
  tools/venv.sh "$py37" .venv-tf1 requirements-tf1.txt || { echo "could not create .venv-tf1"; exit 1; }
  .venv-tf1/bin/python test/benchmark/bench.py "$@" || status=1
  # A third column where the oneDNN build of TF 1.15 (requirements-cpu-tf1.txt) is set up.
  if [ -x .venv-tf1-onednn/bin/python ]; then
    .venv-tf1-onednn/bin/python test/benchmark/bench.py "$@" || status=1
  else
    echo "bench: oneDNN TF 1.15 column SKIPPED — to add it: tools/venv.sh $py37 .venv-tf1-onednn requirements-cpu-tf1.txt"
  fi
fi
if ls output/bench/bench_tf*.json >/dev/null 2>&1; then
  .venv/bin/python test/benchmark/bench.py --report $(ls -r output/bench/bench_tf*.json) \
    > output/bench/bench.md && { echo "== both environments (output/bench/bench.md)"; cat output/bench/bench.md; }
fi
exit $status
