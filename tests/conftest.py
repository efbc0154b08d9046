"""Shared fixtures: the real SmolLM2 tokenizer with tiny random Llama models built from a config.

Real backbones are too slow for the default test run; a 2-layer Llama with SmolLM2's tokenizer
exercises exactly the same code paths (tokenisation, term mapping, pooling, Anserini) in seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from csplade_pyserini.paths import shared_dir

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
RUN_FIXTURES = FIXTURES / "runs"  # TREC run files, each good or with one known problem
# the word channel's card fields (the packaged default's channel)
WORDS = {"term_scheme": "words-porter-v1", "expansion": False, "query_side": "idf-tokens"}
INTEGRATION = Path(__file__).resolve().parent / "integration"


def pytest_collection_modifyitems(config, items) -> None:
    """Every test under tests/integration/ (the JVM, subprocesses, ../shared data) carries the ``integration``
    marker: ``make test-fast`` runs the others, ``make test`` all."""
    for item in items:
        if INTEGRATION in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.integration)


def shared() -> Path:
    found = shared_dir()
    if found is None:
        raise RuntimeError("../shared is required by the tests (set CSPLADE_SHARED)")
    return found


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    from transformers import AutoTokenizer

    from csplade_pyserini.model.backbone import smollm2_gguf

    gguf = smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    folder = tmp_path_factory.mktemp("smollm2-tokenizer")
    tokenizer.save_pretrained(folder)
    return folder


def make_tiny_llama(folder: Path, tokenizer_dir: Path, seed: int = 0, config: dict | None = None,
                    **card) -> Path:
    """A 2-layer random Llama with the SmolLM2 vocabulary, saved as a CSPLADE checkpoint folder (``config``
    overrides the Llama configuration)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from csplade_pyserini.model.card import ModelCard

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    shape = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
             "num_key_value_heads": 1, **(config or {})}
    config = LlamaConfig(vocab_size=len(tokenizer), max_position_embeddings=1024, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, **shape)
    model = LlamaForCausalLM(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    defaults = {"backbone": ".", "doc_top_k": 48, "query_top_k": 16, "dtype": "float32", "max_doc_length": 128}
    ModelCard(**{**defaults, **card}).save(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tokenizer_dir) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny") / "ckpt", tokenizer_dir)


@pytest.fixture(scope="module")
def words_checkpoint(tmp_path_factory, tokenizer_dir):
    """A tiny random Llama with a random term-frequency head on its layer 1."""
    import torch

    from csplade_pyserini.model.words import TermFrequencyHead

    folder = make_tiny_llama(tmp_path_factory.mktemp("words") / "ckpt", tokenizer_dir, max_doc_length=16,
                             doc_top_k=None, query_top_k=None, tf_head="tf_head.safetensors", tf_layer=1,
                             bm25_avgdl=10.0, **WORDS)
    torch.manual_seed(3)
    head = TermFrequencyHead(32, 8)
    torch.nn.init.normal_(head.out.weight, std=0.5)
    head.save(folder)
    return folder


@pytest.fixture
def topics(tmp_path: Path) -> Path:
    """A topics TSV with the two topics of the run fixtures (``RUN_FIXTURES``)."""
    path = tmp_path / "topics.tsv"
    path.write_text("1\tfirst query\n2\tsecond query\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint):
    from csplade_pyserini.model.encoder import CspladeModel

    return CspladeModel.from_spec(f"csplade:{tiny_checkpoint}", cache=False)


def run_python(*args: str, cwd: Path | None = None, env: dict | None = None, check: bool = True,
               timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``python ARGS`` with the test interpreter (the literal CLI commands a user types)."""
    result = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, "CSPLADE_LOG": "WARNING", **(env or {})})
    if check and result.returncode != 0:
        raise AssertionError(f"python {' '.join(args)} failed ({result.returncode}):\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def beir_slice(source: Path, target: Path, *, split: str = "test", queries: int | None = None, extra_docs: int = 0,
               first_docs: int | None = None, extra_ids=(), as_split: str | None = None) -> dict[str, dict[str, int]]:
    """A small BEIR folder (corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv) cut from a real one, returning its
    qrels. Either the first ``queries`` judged queries of ``split`` with their judged documents and the first
    ``extra_docs`` others, or (``first_docs``) the first documents plus ``extra_ids`` and the judgements that
    fall on them. ``as_split`` renames the qrels file (``train`` for a training domain)."""
    import csv

    from csplade_pyserini.datasets import read_queries

    # read as tab-separated fields: some ids hold spaces (the Climate-FEVER sentences)
    qrels: dict[str, dict[str, int]] = {}
    with open(source / "qrels" / f"{split}.tsv", encoding="utf-8") as handle:
        for number, (qid, docid, grade, *_) in enumerate(csv.reader(handle, delimiter="\t")):
            if number:
                qrels.setdefault(qid, {})[docid] = int(grade)
    texts = read_queries(source / "queries.jsonl")
    judged: set[str] = set()
    if first_docs is None:
        qrels = {q: qrels[q] for q in sorted(qrels)[:queries]}
        judged = {d for q in qrels for d in qrels[q]}
    (target / "qrels").mkdir(parents=True)
    kept: set[str] = set()
    others = 0
    with open(source / "corpus.jsonl", encoding="utf-8") as src, open(target / "corpus.jsonl", "w", encoding="utf-8") as dst:
        for line in src:
            docid = json.loads(line)["_id"]
            wanted = first_docs is not None and (len(kept) < first_docs or docid in extra_ids)
            if wanted or docid in judged or (first_docs is None and others < extra_docs):
                dst.write(line)
                kept.add(docid)
                others += docid not in judged
    if first_docs is not None:
        qrels = {q: kept_judgements for q, judgements in qrels.items()
                 if (kept_judgements := {d: r for d, r in judgements.items() if d in kept})}
    (target / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": texts[q]}) + "\n" for q in qrels),
                                          encoding="utf-8")
    (target / "qrels" / f"{as_split or split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t{r}\n" for q, judgements in qrels.items() for d, r in judgements.items()), encoding="utf-8")
    return qrels


def scifact_slice(folder: Path, n_queries: int = 12, extra_docs: int = 30) -> tuple[Path, Path, Path]:
    """A real SciFact slice (:func:`beir_slice`: the first test queries' judged documents plus others) as
    (a folder holding only corpus.jsonl, a topics TSV, a TREC qrels file)."""
    from csplade_pyserini.datasets import read_queries

    source = shared() / "data" / "beir" / "scifact"
    beir = folder / "beir"
    qrels = beir_slice(source, beir, queries=n_queries, extra_docs=extra_docs)
    queries = read_queries(beir / "queries.jsonl")
    corpus = folder / "corpus"
    corpus.mkdir(parents=True)
    os.replace(beir / "corpus.jsonl", corpus / "corpus.jsonl")
    topics = folder / "topics.tsv"
    topics.write_text("".join(f"{q}\t{queries[q]}\n" for q in qrels), encoding="utf-8")
    qrels_path = folder / "qrels.txt"
    qrels_path.write_text("".join(f"{q} 0 {d} {r}\n" for q in qrels for d, r in qrels[q].items()), encoding="utf-8")
    return corpus, topics, qrels_path


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module's tests (the tiny models are faster so, and results reproducible)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
