# The README's two commands: `make demo` and `make test`.
.PHONY: test demo

test:
	tools/run_tests.sh
