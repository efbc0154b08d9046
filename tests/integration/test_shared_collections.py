"""The shared collections and Pyserini's topic tables read as expected (``../shared`` data)."""

from __future__ import annotations

from conftest import shared

from csplade_pyserini.datasets import load_qrels, load_topics, read_corpus, topics_kind


def test_real_collections_and_topics():
    assert sum(1 for _ in read_corpus(shared() / "data" / "beir" / "scifact")) == 5183
    assert sum(1 for _ in read_corpus(shared() / "data" / "msmarco-dl19-mini")) == 14581
    assert len(load_topics("beir-v1.0.0-scifact.test")) == 300
    assert len(load_topics("dl19-passage")) == 43 and len(load_qrels("dl19-passage")) == 43
    assert len(load_qrels(shared() / "data" / "beir" / "scifact" / "qrels" / "test.tsv")) == 300
    assert topics_kind("dl19-passage") == "dl" and topics_kind("beir-v1.0.0-scifact.test") == "beir"
