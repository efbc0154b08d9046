"""Training-data readers (good and bad fixtures, errors located by file and line), groups and packing."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pytest
import torch
from conftest import FIXTURES

from csplade_pyserini.errors import InputError
from csplade_pyserini.train.data import (
    Passage,
    TrainingExample,
    group_by_query,
    load_collection,
    make_groups,
    read_beir_train,
    read_id_triples,
    read_run,
    read_teacher_scores,
    read_tevatron,
    read_text_triples,
    text_id,
)
from csplade_pyserini.train.packing import pack_sequences

FIXTURES = FIXTURES / "training"
SCIFACT = Path("/work/shared/data/beir/scifact")


def assert_located(excinfo, path: Path, line: int | None, field: str | None = None) -> None:
    """The error names the file and line (and field), as attributes and in its message."""
    error = excinfo.value
    assert error.path == str(path)
    assert error.line == line
    if line is not None:
        assert f"{path}:{line}" in str(error)
    else:
        assert str(path) in str(error)
    if field is not None:
        assert error.field == field
        assert f"field '{field}'" in str(error)


def write_bytes(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# --- text triples ----------------------------------------------------------------------------------
def test_text_triples_good():
    examples = list(read_text_triples(FIXTURES / "text_triples.tsv"))
    assert len(examples) == 3
    first = examples[0]
    assert first.query == "what is a cat"
    assert first.query_id == text_id("what is a cat")
    assert first.positives == [Passage(text_id("a cat is a small feline"), "a cat is a small feline")]
    assert [p.text for p in first.negatives] == ["the stock market fell"]
    # Lines of the same query share its id and merge into one example with two negatives.
    assert examples[2].query_id == first.query_id
    grouped = group_by_query(examples)
    assert [g.query for g in grouped] == ["what is a cat", "what is a dog"]
    assert len(grouped[0].positives) == 1
    assert [p.text for p in grouped[0].negatives] == ["the stock market fell", "catalonia is in spain"]


def test_text_triples_gzip(tmp_path):
    raw = (FIXTURES / "text_triples.tsv").read_bytes()
    path = tmp_path / "triples.tsv.gz"
    with gzip.open(path, "wb") as handle:
        handle.write(raw)
    assert list(read_text_triples(path)) == list(read_text_triples(FIXTURES / "text_triples.tsv"))


def test_text_triples_malformed_line():
    path = FIXTURES / "text_triples_malformed.tsv"
    with pytest.raises(InputError, match="got 2 tab-separated fields") as excinfo:
        list(read_text_triples(path))
    assert_located(excinfo, path, 2)


def test_text_triples_empty_passage():
    path = FIXTURES / "text_triples_empty_passage.tsv"
    with pytest.raises(InputError, match="empty positive passage") as excinfo:
        list(read_text_triples(path))
    assert_located(excinfo, path, 3, "positive")


def test_text_triples_empty_query(tmp_path):
    path = write_bytes(tmp_path, "t.tsv", b"q\tp\tn\n \tp\tn\n")
    with pytest.raises(InputError, match="empty query") as excinfo:
        list(read_text_triples(path))
    assert_located(excinfo, path, 2, "query")


def test_text_triples_non_utf8(tmp_path):
    path = write_bytes(tmp_path, "t.tsv", b"q\tp\tn\nq\xff\tp\tn\n")
    with pytest.raises(InputError, match="not valid UTF-8") as excinfo:
        list(read_text_triples(path))
    assert_located(excinfo, path, 2)


def test_missing_file_is_reported_at_call(tmp_path):
    path = tmp_path / "nope.tsv"
    with pytest.raises(InputError, match="does not exist") as excinfo:
        read_text_triples(path)  # no iteration needed
    assert_located(excinfo, path, None)


# --- id triples ------------------------------------------------------------------------------------
def test_id_triples_good():
    examples = list(read_id_triples(FIXTURES / "id_triples.tsv", FIXTURES / "collection.tsv",
                                    FIXTURES / "queries.tsv"))
    assert [(e.query_id, e.query) for e in examples] == [("q1", "what is a cat"), ("q2", "what is a dog"),
                                                         ("q1", "what is a cat")]
    assert examples[0].positives == [Passage("0", "a cat is a small feline")]
    assert examples[0].negatives == [Passage("1", "the stock market fell")]
    grouped = group_by_query(examples)
    assert [p.docid for p in grouped[0].negatives] == ["1", "4"]


def test_id_triples_accept_loaded_mappings():
    collection = load_collection(FIXTURES / "collection.tsv")
    examples = list(read_id_triples(FIXTURES / "id_triples.tsv", collection, {"q1": "cat?", "q2": "dog?"}))
    assert examples[1].query == "dog?" and examples[1].positives[0].text == "a dog is a canine"


def test_id_triples_unknown_pid():
    path = FIXTURES / "id_triples_unknown_pid.tsv"
    with pytest.raises(InputError, match="passage id '99'") as excinfo:
        list(read_id_triples(path, FIXTURES / "collection.tsv", FIXTURES / "queries.tsv"))
    assert_located(excinfo, path, 3, "pid_neg")


def test_id_triples_unknown_qid():
    path = FIXTURES / "id_triples_unknown_qid.tsv"
    with pytest.raises(InputError, match="query id 'q3'") as excinfo:
        list(read_id_triples(path, FIXTURES / "collection.tsv", FIXTURES / "queries.tsv"))
    assert_located(excinfo, path, 2, "qid")


def test_id_triples_malformed_line():
    path = FIXTURES / "id_triples_malformed.tsv"
    with pytest.raises(InputError, match="got 2 columns") as excinfo:
        list(read_id_triples(path, FIXTURES / "collection.tsv", FIXTURES / "queries.tsv"))
    assert_located(excinfo, path, 2)


def test_id_triples_empty_collection_passage():
    path = FIXTURES / "collection_empty_passage.tsv"
    with pytest.raises(InputError, match="empty") as excinfo:
        read_id_triples(FIXTURES / "id_triples.tsv", path, FIXTURES / "queries.tsv")
    assert_located(excinfo, path, 2, "text")


def test_id_triples_empty_query_and_bad_bytes(tmp_path):
    queries = write_bytes(tmp_path, "queries.tsv", b"q1\tcat\nq2\t \n")
    with pytest.raises(InputError, match="empty") as excinfo:
        read_id_triples(FIXTURES / "id_triples.tsv", FIXTURES / "collection.tsv", queries)
    assert_located(excinfo, queries, 2, "text")
    triples = write_bytes(tmp_path, "triples.tsv", b"q1\t0\t1\nq2\t2\t\xfe3\n")
    with pytest.raises(InputError, match="UTF-8") as excinfo:
        list(read_id_triples(triples, FIXTURES / "collection.tsv", FIXTURES / "queries.tsv"))
    assert_located(excinfo, triples, 2)


# --- Tevatron --------------------------------------------------------------------------------------
def test_tevatron_good():
    examples = list(read_tevatron(FIXTURES / "tevatron.jsonl"))
    assert len(examples) == 3  # the blank line is skipped
    cat, dog, war = examples
    assert cat.query_id == "q1"
    assert cat.positives == [Passage("0", "Cat a cat is a small feline")]
    assert cat.negatives == [Passage("1", "the stock market fell"), Passage("4", "catalonia is in spain")]
    assert dog.query_id == text_id("what is a dog") and dog.negatives == []
    assert war.query_id == "7" and war.query == "who wrote dogs of war"


def test_tevatron_empty_passage():
    path = FIXTURES / "tevatron_empty_passage.jsonl"
    with pytest.raises(InputError, match="empty passage '5'") as excinfo:
        list(read_tevatron(path))
    assert_located(excinfo, path, 2, "negative_passages[1].text")


def test_tevatron_malformed_json():
    path = FIXTURES / "tevatron_malformed.jsonl"
    with pytest.raises(InputError, match="not valid JSON") as excinfo:
        list(read_tevatron(path))
    assert_located(excinfo, path, 2)


def test_tevatron_empty_query():
    path = FIXTURES / "tevatron_empty_query.jsonl"
    with pytest.raises(InputError, match="empty query") as excinfo:
        list(read_tevatron(path))
    assert_located(excinfo, path, 1, "query")


def test_tevatron_no_positive():
    path = FIXTURES / "tevatron_no_positive.jsonl"
    with pytest.raises(InputError, match="no positive") as excinfo:
        list(read_tevatron(path))
    assert_located(excinfo, path, 2, "positive_passages")


def test_tevatron_non_utf8_and_missing_docid(tmp_path):
    good = (FIXTURES / "tevatron.jsonl").read_bytes().splitlines()[0]
    path = write_bytes(tmp_path, "t.jsonl", good + b"\n" + good.replace(b"cat", b"c\xc3t") + b"\n")
    with pytest.raises(InputError, match="UTF-8") as excinfo:
        list(read_tevatron(path))
    assert_located(excinfo, path, 2)
    record = {"query": "q", "positive_passages": [{"text": "no id"}]}
    path = write_bytes(tmp_path, "n.jsonl", json.dumps(record).encode())
    with pytest.raises(InputError, match="passage id") as excinfo:
        list(read_tevatron(path))
    assert_located(excinfo, path, 1, "positive_passages[0].docid")


# --- BEIR train split (real SciFact) ---------------------------------------------------------------
needs_scifact = pytest.mark.skipif(not (SCIFACT / "qrels" / "train.tsv").exists(), reason="no shared SciFact")


@needs_scifact
def test_beir_scifact_train_with_run_negatives():
    run = FIXTURES / "scifact_train_run.trec"
    examples = read_beir_train(SCIFACT, run=run, n_negatives=3)
    assert len(examples) == 809
    assert sum(len(e.positives) for e in examples) == 919  # 919 judgments, all relevant
    by_id = {e.query_id: e for e in examples}
    zero = by_id["0"]
    assert zero.query == "0-dimensional biomaterials lack inductive properties."
    assert [p.docid for p in zero.positives] == ["31715818"]
    assert zero.positives[0].text.startswith("New opportunities: the use of nanotechnologies")
    # Ranked by score (12 positive, skipped; 11, 10, 9), not by the rank column; the 4th is cut off.
    assert [p.docid for p in zero.negatives] == ["7912", "4983", "5836"]
    assert zero.negatives[0].text.startswith("BC1 RNA, the transcript from a mas")
    # Query 946 has four positives; two of its run documents are positives, one is left.
    assert len(by_id["946"].positives) == 4
    assert [p.docid for p in by_id["946"].negatives] == ["19238"]
    # Test query 1 is not a training query: its run line (an unknown docid) is ignored.
    assert "1" not in by_id
    assert sum(1 for e in examples if e.negatives) == 2
    # All non-positive run documents when n_negatives is None.
    everything = read_beir_train(SCIFACT, run=run, n_negatives=None)
    assert [p.docid for p in everything[0].negatives] == ["7912", "4983", "5836", "18670"]
    # Without a run there are no negatives.
    assert all(not e.negatives for e in read_beir_train(SCIFACT))


@needs_scifact
def test_beir_run_unknown_doc_and_malformed():
    path = FIXTURES / "scifact_run_unknown_doc.trec"
    with pytest.raises(InputError, match="'not-in-scifact' is not in the corpus") as excinfo:
        read_beir_train(SCIFACT, run=path)
    assert_located(excinfo, path, 3, "docid")
    path = FIXTURES / "scifact_run_malformed.trec"
    with pytest.raises(InputError, match="score 'ten'") as excinfo:
        read_beir_train(SCIFACT, run=path)
    assert_located(excinfo, path, 2, "score")


def _mini_beir(tmp_path: Path, qrels: str) -> Path:
    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text(
        '{"_id": "d1", "title": "T", "text": "one"}\n{"_id": "d2", "text": "two"}\n')
    (folder / "queries.jsonl").write_text('{"_id": "q1", "text": "first"}\n{"_id": "q2", "text": "second"}\n')
    (folder / "qrels" / "train.tsv").write_text(qrels)
    return folder


def test_beir_unknown_ids_in_qrels(tmp_path):
    folder = _mini_beir(tmp_path, "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td9\t1\n")
    qrels = folder / "qrels" / "train.tsv"
    with pytest.raises(InputError, match="'d9' is not in the corpus") as excinfo:
        read_beir_train(folder)
    assert_located(excinfo, qrels, 3, "corpus-id")
    qrels.write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq7\td2\t1\n")
    with pytest.raises(InputError, match="query id 'q7'") as excinfo:
        read_beir_train(folder)
    assert_located(excinfo, qrels, 3, "query-id")
    # Judged non-relevant only: skipped, not an error; the title is joined to the text.
    qrels.write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq7\td2\t0\n")
    examples = read_beir_train(folder)
    assert [(e.query_id, e.positives) for e in examples] == [("q1", [Passage("d1", "T one")])]
    with pytest.raises(InputError, match="qrels/dev.tsv"):
        read_beir_train(folder, split="dev")


def test_read_run_orders_by_score():
    ranked = read_run(FIXTURES / "scifact_train_run.trec")
    assert [d for d, _, _ in ranked["0"]] == ["31715818", "7912", "4983", "5836", "18670"]
    assert ranked["0"][1] == ("7912", 11.0, 3)  # (docid, score, line)
    assert set(read_run(FIXTURES / "scifact_train_run.trec", {"946"})) == {"946"}


# --- teacher scores --------------------------------------------------------------------------------
def test_teacher_scores_good():
    scores = read_teacher_scores(FIXTURES / "teacher_scores.txt")
    assert scores == {"q1": {"0": 12.5, "1": -3.25}, "q2": {"2": 7.0, "3": 0.01}}


@pytest.mark.parametrize("name, line, field, message", [
    ("teacher_scores_bad_score.txt", 2, "score", "score 'high' is not a number"),
    ("teacher_scores_malformed.txt", 2, None, "got 2 columns"),
    ("teacher_scores_duplicate.txt", 3, "pid", "first on line 1"),
])
def test_teacher_scores_bad(name, line, field, message):
    path = FIXTURES / name
    with pytest.raises(InputError, match=message) as excinfo:
        read_teacher_scores(path)
    assert_located(excinfo, path, line, field)


def test_teacher_scores_not_finite_and_bad_bytes(tmp_path):
    path = write_bytes(tmp_path, "s.txt", b"q1 0 1.0\nq1 1 nan\n")
    with pytest.raises(InputError, match="not finite") as excinfo:
        read_teacher_scores(path)
    assert_located(excinfo, path, 2, "score")
    path = write_bytes(tmp_path, "b.txt", b"q1 0 1.0\nq1 1 2.0\nq\x80 2 3.0\n")
    with pytest.raises(InputError, match="UTF-8") as excinfo:
        read_teacher_scores(path)
    assert_located(excinfo, path, 3)


# --- groups ----------------------------------------------------------------------------------------
def _example(n_negatives: int, n_positives: int = 1) -> TrainingExample:
    return TrainingExample("q", "query", [Passage(f"p{i}", f"pos {i}") for i in range(n_positives)],
                           [Passage(f"n{i}", f"neg {i}") for i in range(n_negatives)])


def test_make_groups_enough_negatives_without_replacement():
    example = _example(10)
    group = make_groups(example, 4, random.Random(13))
    assert len(group) == 5 and group[0] == example.positives[0]
    assert len({p.docid for p in group[1:]}) == 4 and all(p in example.negatives for p in group[1:])
    # Deterministic for a seed; another seed gives another draw.
    assert make_groups(example, 4, random.Random(13)) == group
    assert any(make_groups(example, 4, random.Random(s)) != group for s in range(1, 5))


def test_make_groups_too_few_negatives_samples_with_replacement():
    example = _example(2)
    group = make_groups(example, 5, random.Random(0))
    assert len(group) == 6 and group[0].docid == "p0"
    negatives = [p.docid for p in group[1:]]
    assert set(negatives) == {"n0", "n1"}  # every negative used at least once, then repeats
    assert make_groups(example, 5, random.Random(0)) == group


def test_make_groups_positive_choice_and_edge_cases():
    example = _example(3, n_positives=3)
    chosen = {make_groups(example, 1, random.Random(seed))[0].docid for seed in range(20)}
    assert chosen <= {"p0", "p1", "p2"} and len(chosen) > 1
    assert make_groups(_example(0), 0, random.Random(0)) == [Passage("p0", "pos 0")]
    with pytest.raises(InputError, match="no negative"):
        make_groups(_example(0), 2, random.Random(0))
    with pytest.raises(InputError, match="no positive"):
        make_groups(_example(3, n_positives=0), 2, random.Random(0))


# --- packing ---------------------------------------------------------------------------------------
EOS = 0


def test_pack_sequences_exact_blocks():
    docs = [[1, 2, 3], [4, 5], [], [6, 7, 8, 9]]
    # stream: 1 2 3 E 4 5 E 6 7 8 9 E  (the empty document adds nothing)
    packed = pack_sequences(docs, seq_len=4, eos_id=EOS, return_document_ids=True)
    assert packed.input_ids.tolist() == [[1, 2, 3, 0], [4, 5, 0, 6], [7, 8, 9, 0]]
    assert packed.labels.tolist() == packed.input_ids.tolist()
    assert packed.labels.data_ptr() != packed.input_ids.data_ptr()
    assert packed.document_ids.tolist() == [[0, 0, 0, 0], [1, 1, 1, 3], [3, 3, 3, 3]]
    assert packed.input_ids.dtype == torch.long and len(packed) == 3 and packed.dropped_tokens == 0


def test_pack_sequences_drops_remainder_and_splits_long_documents():
    # stream: 1 2 3 4 5 6 7 E 8 E  -> blocks of 3: [1 2 3] [4 5 6] [7 E 8], tail [E] dropped
    packed = pack_sequences([[1, 2, 3, 4, 5, 6, 7], [8]], seq_len=3, eos_id=99)
    assert packed.input_ids.tolist() == [[1, 2, 3], [4, 5, 6], [7, 99, 8]]
    assert packed.dropped_tokens == 1 and packed.document_ids is None
    # Too little text for a block: zero blocks, with the right shape.
    empty = pack_sequences([[1, 2]], seq_len=8, eos_id=EOS)
    assert tuple(empty.input_ids.shape) == (0, 8) and empty.dropped_tokens == 3


def test_pack_sequences_validates():
    with pytest.raises(ValueError, match="seq_len"):
        pack_sequences([[1, 2]], seq_len=1, eos_id=EOS)
    with pytest.raises(ValueError, match="eos_id"):
        pack_sequences([[1, 2]], seq_len=4, eos_id=-1)
    with pytest.raises(TypeError, match="token ids"):
        pack_sequences(["some text"], seq_len=4, eos_id=EOS)
