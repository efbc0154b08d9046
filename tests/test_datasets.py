"""Corpus, topics and qrels readers: real data reads cleanly, bad input is located precisely."""

from __future__ import annotations

import pytest

from conftest import shared
from csplade_pyserini.datasets import load_qrels, load_topics, read_corpus, topics_kind
from csplade_pyserini.errors import InputError


def test_real_collections_and_topics():
    assert sum(1 for _ in read_corpus(shared() / "data" / "beir" / "scifact")) == 5183
    assert sum(1 for _ in read_corpus(shared() / "data" / "msmarco-dl19-mini")) == 14581
    assert len(load_topics("beir-v1.0.0-scifact.test")) == 300
    assert len(load_topics("dl19-passage")) == 43 and len(load_qrels("dl19-passage")) == 43
    assert len(load_qrels(shared() / "data" / "beir" / "scifact" / "qrels" / "test.tsv")) == 300
    assert topics_kind("dl19-passage") == "dl" and topics_kind("beir-v1.0.0-scifact.test") == "beir"


@pytest.mark.parametrize("content,line,field,message", [
    (b'{"_id": "1", "text": "a"}\n{"title": "t", "text": "b"}\n', 2, "_id", "missing document id"),
    (b'{"_id": "1", "text": "a"}\n{"_id": "2", "title": "t"}\n', 2, "text", "missing document text"),
    (b'{"_id": "1", "text": "a"}\n{"_id": "2", "title": "", "text": "  "}\n', 2, "text", "empty"),
    (b'{"_id": "1", "text": "a"}\n{"_id": "1", "text": "b"}\n', 2, "_id", "duplicate document id"),
    (b'{"_id": "1", "text": "a"}\n{"_id": "2", "text": "caf\xe9"}\n', 2, None, "UTF-8"),
    (b'{"_id": "1", "text": "a"}\n{"_id": "2", "text": \n', 2, None, "not valid JSON"),
    (b'{"_id": "a b", "text": "a"}\n', 1, "_id", "whitespace"),
])
def test_bad_corpus_lines_are_located(tmp_path, content, line, field, message):
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message) as info:
        list(read_corpus(tmp_path))
    assert info.value.path == str(path) and info.value.line == line and info.value.field == field


def test_empty_documents_can_be_allowed(tmp_path):
    (tmp_path / "corpus.jsonl").write_text('{"_id": "1", "text": ""}\n')
    assert [d.docid for d in read_corpus(tmp_path, allow_empty=True)] == ["1"]


def test_unknown_topics_name():
    with pytest.raises(InputError, match="unknown topics"):
        load_topics("no-such-topics")
