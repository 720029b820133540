# The README's two commands are `make demo` and `make test`.
.PHONY: test demo train-orl bench bench-quick

test:
	tools/run_tests.sh

demo:
	tools/demo.sh

# Real faces: ../shared/data/orl_faces, about 5 minutes on 2 CPU cores (4.5 of them training).
# Elsewhere: make train-orl ORL_DATA=<folder> (README, "Data", says how to build it).
train-orl:
	tools/train_orl.sh

# Performance on this machine, both environments: output/bench/ (JSON + Markdown).
bench:
	tools/bench.sh

bench-quick:
	tools/bench.sh --quick
