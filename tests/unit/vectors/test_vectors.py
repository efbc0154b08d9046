"""Term mapping, quantisation and the JsonVectorCollection writer/reader."""

from __future__ import annotations

import json

import pytest
import torch

from csplade_pyserini.errors import InputError
from csplade_pyserini.vectors.jsonvec import JsonVectorWriter, info_path, read_vectors
from csplade_pyserini.vectors.quantize import (
    quantize_tensor,
    quantize_vector,
    quantize_weight,
)
from csplade_pyserini.vectors.terms import TermMap, escape_term, unescape_term


@pytest.mark.parametrize("weight,expected", [(0.0, 0), (0.004, 0), (0.005, 1), (0.0149, 1), (1.2345, 123),
                                             (2.675, 268), (3.0, 300)])
def test_quantize_by_hand(weight, expected):
    assert quantize_weight(weight, 100) == expected


def test_quantize_tensor_matches_scalar_rule():
    weights = torch.tensor([0.0, 0.004, 0.005, 0.0149, 1.2345, 3.0])
    assert quantize_tensor(weights, 100).tolist() == [quantize_weight(w, 100) for w in weights.tolist()]


def test_quantize_rejects_negative_and_nan_and_drops_zeros():
    with pytest.raises(ValueError):
        quantize_weight(-0.1, 100)
    with pytest.raises(ValueError):
        quantize_weight(float("nan"), 100)
    assert quantize_vector({"a": 0.001, "b": 0.5}, 100) == {"b": 50}


@pytest.mark.parametrize("token,term", [("Ġthe", "Ġthe"), ("a b", "a%20b"), ("100%", "100%25"),
                                        ("tab\there", "tab%09here"), ("\u00a0x", "%C2%A0x"), ("▁word", "▁word")])
def test_escape_is_whitespace_free_and_reversible(token, term):
    assert escape_term(token) == term
    assert not any(c.isspace() for c in term)
    assert unescape_term(term) == token


def test_term_map_of_smollm2_is_unique_reversible_and_excludes_specials(tokenizer_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    term_map = TermMap.from_tokenizer(tokenizer)
    terms = [t for t in term_map.terms if t is not None]
    assert len(terms) == len(set(terms))
    assert not any(any(c.isspace() for c in t) for t in terms)
    for special in tokenizer.all_special_ids:
        assert term_map.term(special) is None
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    assert all(unescape_term(term_map.terms[i]) == tokens[i] for i in range(len(tokens)) if term_map.terms[i])
    assert term_map.fingerprint() == TermMap.from_tokenizer(tokenizer).fingerprint()


def test_writer_shards_and_records_info(tmp_path):
    out = tmp_path / "vec"
    with JsonVectorWriter(out, shard_size=2, info={"model": "x"}) as writer:
        for i in range(5):
            writer.write(f"d{i}", f"text {i}", {"a": i + 1} if i else {})
    assert sorted(p.name for p in out.iterdir()) == ["docs-00000.jsonl", "docs-00001.jsonl", "docs-00002.jsonl"]
    info = json.loads(info_path(out).read_text())
    assert info["documents"] == 5 and info["empty_vectors"] == 1 and info["model"] == "x"
    assert [r["id"] for r in read_vectors(out)] == [f"d{i}" for i in range(5)]


@pytest.mark.parametrize("vector,message", [({"a": 1.5}, "integers"), ({"a b": 1}, "whitespace"),
                                            ({"a": 0}, "positive"), ({"": 2}, "empty")])
def test_writer_refuses_bad_vectors_and_leaves_nothing(tmp_path, vector, message):
    out = tmp_path / "vec"
    with pytest.raises(InputError, match=message):
        with JsonVectorWriter(out) as writer:
            writer.write("ok", "fine", {"a": 1})
            writer.write("bad", "x", vector)
    assert not out.exists() and not info_path(out).exists()
    assert list(tmp_path.iterdir()) == []


def test_writer_refuses_duplicate_ids(tmp_path):
    with pytest.raises(InputError, match="duplicate"):
        with JsonVectorWriter(tmp_path / "vec") as writer:
            writer.write("d", "x", {"a": 1})
            writer.write("d", "y", {"a": 2})


def test_reader_names_file_line_and_field(tmp_path):
    folder = tmp_path / "vec"
    folder.mkdir()
    (folder / "a.jsonl").write_text('{"id": "1", "vector": {"x": 1}}\n{"id": "2", "vector": {"y": 0.7}}\n')
    with pytest.raises(InputError) as info:
        list(read_vectors(folder))
    assert f"{folder / 'a.jsonl'}:2" in str(info.value) and "field 'vector'" in str(info.value)
    (folder / "a.jsonl").write_bytes(b'{"id": "1", "vector": {"x": 1}}\n{"id": "\xff"}\n')
    with pytest.raises(InputError, match="UTF-8") as info:
        list(read_vectors(folder))
    assert ":2" in str(info.value)
    (folder / "a.jsonl").write_text('{"id": "1", "vector": {"x": 1}}\n{"vector": {"x": 1}}\n')
    with pytest.raises(InputError, match="field 'id'"):
        list(read_vectors(folder))


def test_model_impacts_are_integers_with_recorded_scale(tiny_model):
    vector = tiny_model.encode(["sparse retrieval with causal models"], kind="doc")[0]
    assert vector and all(isinstance(w, int) and w > 0 for w in vector.values())
    assert len(vector) <= tiny_model.card.doc_top_k
    ids, weights = tiny_model.encode_weights(["sparse retrieval with causal models"], "doc")[0]
    by_term = {tiny_model.term_map.terms[i]: w for i, w in zip(ids.tolist(), weights.tolist())}
    assert all(vector[t] == quantize_weight(by_term[t], tiny_model.card.quant_scale) for t in vector)
