# The few verbs people type. Each is a thin wrapper over scripts/.
.PHONY: demo test lint bench install

install:
	bash -c '. scripts/lib.sh && ensure_tmux && ensure_venv "[dev]"'

demo:
	scripts/demo

test:
	scripts/test

lint: install
	.venv/bin/ruff check netskyd netsky_shared client tests bench
	.venv/bin/mypy
	.venv/bin/lint-imports

bench: install
	.venv/bin/python bench/status_latency.py
