"""The dense counterpart (Lion-DS): pooling on hand-computed values, cards and specs, and the literal
Pyserini FAISS commands (``pyserini.encode ... --to-faiss`` and ``pyserini.search.faiss``) through the hook
with a tiny random model on a real SciFact slice."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import make_tiny_llama, run_python, scifact_slice

from csplade_pyserini.errors import InputError, ModelSpecError
from csplade_pyserini.model.card import ModelCard
from csplade_pyserini.model.dense import pool_dense
from csplade_pyserini.model.spec import card_from_spec, is_csplade_spec, is_dense_spec


def test_mean_pooling_averages_unit_token_states():
    states = torch.tensor([[[3.0, 4.0], [1.0, 0.0], [9.0, 9.0]], [[0.0, 2.0], [5.0, 5.0], [1.0, 1.0]]])
    mask = torch.tensor([[1, 1, 0], [0, 0, 0]])
    pooled = pool_dense(states, mask, "mean")
    assert torch.allclose(pooled[0], torch.tensor([0.8, 0.4]))  # ((0.6, 0.8) + (1, 0)) / 2, the third not pooled
    assert torch.equal(pooled[1], torch.zeros(2))  # nothing pooled: the zero vector


def test_last_pooling_takes_the_last_pooled_position_normalised():
    states = torch.tensor([[[3.0, 4.0], [0.0, 2.0], [9.0, 9.0]], [[6.0, 8.0], [1.0, 1.0], [1.0, 0.0]]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])  # right padding / a single pooled token
    pooled = pool_dense(states, mask, "last")
    assert torch.allclose(pooled, torch.tensor([[0.0, 1.0], [0.6, 0.8]]))


def test_dense_cards_refuse_sparse_only_fields():
    with pytest.raises(InputError) as info:
        ModelCard(representation="dense", doc_top_k=64)
    assert info.value.field == "doc_top_k"
    with pytest.raises(InputError) as info:
        ModelCard(representation="dense", query_side="idf-tokens")
    assert info.value.field == "query_side"
    with pytest.raises(InputError) as info:
        ModelCard(representation="dense", dense_pooling="max")
    assert info.value.field == "dense_pooling"


def test_dense_specs(tiny_checkpoint):
    assert is_dense_spec("csplade-dense") and is_dense_spec("csplade-dense:x,dense_pooling=last")
    assert not is_csplade_spec("csplade-dense") and not is_dense_spec("csplade:x")
    card, base = card_from_spec("csplade-dense")
    assert card.is_dense and card.backbone == "smollm2" and card.doc_top_k is None and base is None
    card, _ = card_from_spec("csplade-dense:some/hub-model,dense_pooling=last,variant=echo")
    assert (card.backbone, card.dense_pooling, card.variant) == ("some/hub-model", "last", "echo")
    with pytest.raises(ModelSpecError, match="sparse model"):
        card_from_spec(f"csplade-dense:{tiny_checkpoint}")


@pytest.fixture(scope="module")
def faiss_pipeline(tmp_path_factory, tokenizer_dir):
    """pyserini.encode --to-faiss, then pyserini.search.faiss, exactly as a Pyserini user types them (the
    default --dimension 768 is left as typed: the model's is 32)."""
    work = tmp_path_factory.mktemp("dense")
    checkpoint = make_tiny_llama(work / "ckpt", tokenizer_dir, representation="dense", doc_top_k=None,
                                 query_top_k=None)
    corpus, topics, qrels = scifact_slice(work)
    spec = f"csplade-dense:{checkpoint}"
    run_python("-m", "pyserini.encode", "input", "--corpus", str(corpus), "--fields", "title", "text",
               "output", "--embeddings", str(work / "faiss"), "--to-faiss", "encoder", "--encoder", spec,
               "--fields", "title", "text", "--device", "cpu", "--batch-size", "8")
    run_python("-m", "pyserini.search.faiss", "--index", str(work / "faiss"), "--topics", "beir-v1.0.0-scifact.test",
               "--encoder", spec, "--output", str(work / "run.txt"), "--hits", "100", "--device", "cpu")
    return {"work": work, "corpus": corpus, "topics": topics, "qrels": qrels, "spec": spec, "checkpoint": checkpoint}


def test_pyserini_encode_writes_a_faiss_index_of_the_models_dimension(faiss_pipeline):
    import faiss

    work = faiss_pipeline["work"]
    index = faiss.read_index(str(work / "faiss" / "index"))
    docids = (work / "faiss" / "docid").read_text().split()
    corpus = [json.loads(line)["_id"] for line in open(faiss_pipeline["corpus"] / "corpus.jsonl")]
    assert index.d == 32 and index.ntotal == len(corpus) and docids == corpus
    info = json.loads((work / "faiss" / "csplade-index.info").read_text())
    assert info["card"]["representation"] == "dense" and info["dimension"] == 32
    assert not (work / "faiss" / "csplade-encoding.partial").exists()


def test_faiss_search_ranks_by_the_exact_inner_product(faiss_pipeline):
    from csplade_pyserini.datasets import join_title
    from csplade_pyserini.model.encoder import CspladeModel

    work = faiss_pipeline["work"]
    run = [line.split() for line in (work / "run.txt").read_text().splitlines()]
    assert len({r[0] for r in run}) == 300 and all(len(r) == 6 and r[1] == "Q0" for r in run)
    model = CspladeModel.from_spec(faiss_pipeline["spec"], cache=False)
    records = [json.loads(line) for line in open(faiss_pipeline["corpus"] / "corpus.jsonl")]
    docs = model.encode_dense([join_title(r.get("title"), r["text"]) for r in records], "doc")
    for qid, text in [line.split("\t", 1) for line in faiss_pipeline["topics"].read_text().splitlines()[:3]]:
        query = model.encode_dense([text.strip()], "query")[0]
        exact = [records[i]["_id"] for i in np.argsort(-(docs @ query), kind="stable")[:5]]
        found = [r[2] for r in run if r[0] == qid][:5]
        assert found[0] == exact[0] and len(set(found) & set(exact)) >= 4


def test_faiss_search_refuses_another_models_index(faiss_pipeline, tmp_path):
    result = run_python("-m", "pyserini.search.faiss", "--index", str(faiss_pipeline["work"] / "faiss"), "--topics",
                        "beir-v1.0.0-scifact.test", "--encoder", faiss_pipeline["spec"] + ",dense_pooling=last",
                        "--output", str(tmp_path / "run.txt"), check=False)
    assert result.returncode != 0 and "dense_pooling: 'mean' (index) vs 'last'" in result.stderr


def test_a_sparse_encoder_in_the_faiss_search_says_where_it_goes(faiss_pipeline, tmp_path):
    result = run_python("-m", "pyserini.search.faiss", "--index", str(faiss_pipeline["work"] / "faiss"), "--topics",
                        "beir-v1.0.0-scifact.test", "--encoder", "csplade", "--output", str(tmp_path / "run.txt"),
                        check=False)
    assert result.returncode != 0 and "pyserini.search.lucene --impact" in result.stderr


def test_other_pyserini_encoders_are_untouched():
    import pyserini.encode as encode
    from pyserini.encode.optional import FaissRepresentationWriter

    assert list(encode.document_encoder_class_map)[:3] == ["csplade-dense", "csplade", "dpr"]
    assert list(encode.query_encoder_class_map)[:3] == ["csplade-dense", "csplade", "dkrr"]
    assert encode.query_encoder_class_map["dpr"] is encode.DprQueryEncoder
    assert encode.document_encoder_class_map["splade"] is encode.SpladeDocumentEncoder
    assert FaissRepresentationWriter.__exit__  # patched, but without a CSPLADE dense encoder it keeps --dimension


def test_faiss_writer_keeps_the_dimension_of_other_encoders(tmp_path):
    import faiss
    from pyserini.encode.optional import FaissRepresentationWriter

    from csplade_pyserini.integration import encoders

    assert not encoders.ACTIVE_DENSE_MODELS  # no CSPLADE dense encoder in this process
    writer = FaissRepresentationWriter(str(tmp_path / "out"), dimension=8)
    with writer:
        writer.write({"id": ["a", "b"], "vector": np.eye(2, 8, dtype=np.float32)})
    assert faiss.read_index(str(tmp_path / "out" / "index")).d == 8
    assert not (tmp_path / "out" / "csplade-index.info").exists()
