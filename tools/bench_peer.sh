#!/usr/bin/env bash
# `make bench-peer`: this port's training step beside insightface's PyTorch step (CPU),
# float32 and bfloat16, in one run on this machine (test/benchmark/bench_peer.py).
# Builds .venv-peer (CPU PyTorch, requirements-peer.txt) on first use. Arguments go to
# bench_peer.py (e.g. --rounds 3).
set -eu
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
tools/venv.sh python3 .venv requirements.txt
tools/venv.sh python3 .venv-peer requirements-peer.txt
mkdir -p output/bench
.venv/bin/python test/benchmark/bench_peer.py --peer_python .venv-peer/bin/python \
  --output output/bench/peer.json "$@"
