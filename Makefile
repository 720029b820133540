# The README's two commands are `make demo` and `make test`.
.PHONY: test demo train-orl train-lfw bench bench-quick bench-peer bench-scale

test:
	@tools/run_tests.sh

# Every recipe is tools/recipe.sh with its settings in tools/recipes/<name>.sh.
demo:
	@tools/recipe.sh demo

# Real faces: ../shared/data/orl_faces, 4 to 6 minutes on 2 CPU cores (bfloat16 or float32).
# Elsewhere: make train-orl ORL_DATA=<folder> (docs/data.md says how to build it).
train-orl:
	@tools/recipe.sh orl

# Faces in the wild: ../shared/data/lfw_faces, about 25 minutes on 2 CPU cores.
# Elsewhere: make train-lfw LFW_DATA=<folder> (docs/data.md says how to build it).
train-lfw:
	@tools/recipe.sh lfw

# Performance on this machine, both environments: output/bench/ (JSON + Markdown).
bench:
	@tools/bench.sh

bench-quick:
	@tools/bench.sh --quick

# This port's training step beside insightface's PyTorch step, float32 and bfloat16
# (builds .venv-peer with PyTorch on first use): output/bench/peer.json.
bench-peer:
	@tools/bench_peer.sh

# The margin head at 100k and 1M classes: data-parallel vs Partial FC, two workers on this
# machine (TF 2.x; up to ~95% of the free memory): output/bench/scale.json and scale.md.
bench-scale:
	@tools/venv.sh python3 .venv requirements.txt && .venv/bin/python test/benchmark/bench_scale.py
