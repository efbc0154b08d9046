"""Corpus, topics and qrels readers: real data reads cleanly, bad input is located precisely."""

from __future__ import annotations

import pytest

from csplade_pyserini.datasets import load_qrels, load_topics, read_corpus
from csplade_pyserini.errors import InputError


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


def test_a_leading_byte_order_mark_is_dropped_everywhere(tmp_path):
    """A BOM left in would become part of the first id, which then never matches (pyjnius strips it)."""
    from csplade_pyserini.datasets import read_queries

    bom = b"\xef\xbb\xbf"
    topics = tmp_path / "topics.tsv"
    topics.write_bytes(bom + b"q1\tfirst query\nq2\tsecond\n")
    assert list(read_queries(topics)) == ["q1", "q2"]
    corpus = tmp_path / "corpus.tsv"
    corpus.write_bytes(bom + b"p1\tone\np2\ttwo\n")
    assert [d.docid for d in read_corpus(corpus)] == ["p1", "p2"]
    jsonl = tmp_path / "corpus.jsonl"
    jsonl.write_bytes(bom + b'{"_id": "d1", "text": "a"}\n')
    assert [d.docid for d in read_corpus(jsonl)] == ["d1"]
    qrels = tmp_path / "qrels.txt"
    qrels.write_bytes(bom + b"q1 0 p1 1\n")
    assert load_qrels(qrels) == {"q1": {"p1": 1}}


@pytest.mark.parametrize("content,name", [(b"q 1\ttext\n", "topics.tsv"), (b"\ttext\n", "topics.tsv"),
                                          (b'{"_id": "q 1", "text": "t"}\n', "queries.jsonl"),
                                          (b'{"_id": "", "text": "t"}\n', "queries.jsonl")])
def test_query_ids_with_whitespace_or_empty_are_refused(tmp_path, content, name):
    from csplade_pyserini.datasets import read_queries

    path = tmp_path / name
    path.write_bytes(b"q0\tfine\n" + content if name.endswith(".tsv") else b'{"_id": "q0", "text": "t"}\n' + content)
    with pytest.raises(InputError, match="empty or contains whitespace") as error:
        read_queries(path)
    assert error.value.line == 2


def test_qrels_judging_a_document_twice_are_refused(tmp_path):
    qrels = tmp_path / "qrels.txt"
    qrels.write_text("q1 0 d1 1\nq1 0 d2 0\nq1 0 d1 2\n")
    with pytest.raises(InputError, match="twice") as error:
        load_qrels(qrels)
    assert error.value.line == 3


def test_a_run_listing_a_document_twice_is_refused_as_trec_eval_does(tmp_path):
    from csplade_pyserini.evaluate.measures import read_run_scores

    run = tmp_path / "run.txt"
    run.write_text("q1 Q0 d1 1 3.0 t\nq1 Q0 d2 2 2.0 t\nq1 Q0 d1 3 1.0 t\n")
    with pytest.raises(InputError, match="twice") as error:
        read_run_scores(run)
    assert error.value.line == 3


def test_a_truncated_or_fake_gzip_corpus_is_one_error_naming_the_file(tmp_path):
    import gzip
    import json

    whole = tmp_path / "whole.jsonl.gz"
    with gzip.open(whole, "wt", encoding="utf-8") as handle:
        for i in range(3000):
            handle.write(json.dumps({"_id": str(i), "text": f"document {i} " + "x" * (i % 97)}) + "\n")
    assert len(list(read_corpus(whole))) == 3000
    data = whole.read_bytes()
    truncated = tmp_path / "corpus.jsonl.gz"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="not a complete gzip file") as info:
        list(read_corpus(truncated))
    assert info.value.path == str(truncated) and info.value.line > 1
    fake = tmp_path / "fake.jsonl.gz"
    fake.write_text('{"_id": "a", "text": "plain text"}\n')
    with pytest.raises(InputError, match="not a complete gzip file"):
        list(read_corpus(fake))
