"""The Sentence Transformers export gives our weights: ``SparseEncoder.encode_query/encode_document`` against
:meth:`CspladeModel.encode_weights` on 20 SciFact documents and 20 queries, for a checkpoint with every
channel the default model has (LM head with logit bias, lexical head, channel weight)."""

from __future__ import annotations

import json

import pytest
from conftest import make_tiny_llama, shared

pytest.importorskip("sentence_transformers", minversion="5.0")  # in the test extras: installed by `make test`


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tokenizer_dir):
    import torch

    from csplade_pyserini.model.card import ModelCard
    from csplade_pyserini.model.lexical import LexicalHead
    from csplade_pyserini.model.logit_bias import save_logit_bias

    folder = make_tiny_llama(tmp_path_factory.mktemp("st") / "ckpt", tokenizer_dir, seed=3)
    card = ModelCard.load(folder)
    torch.manual_seed(3)
    vocab = json.loads((folder / "config.json").read_text())["vocab_size"]
    head = LexicalHead(32)  # the tiny model's hidden size
    bias = save_logit_bias(torch.randn(vocab) * 0.5 - 1.0, folder)
    card.replace(logit_bias=bias, lexical_head=head.save(folder), lexical_layer=1, expansion_weight=0.6,
                 doc_top_k=40, query_top_k=12).save(folder)
    return folder


def texts():
    docs, queries = [], []
    base = shared() / "data" / "beir" / "scifact"
    from csplade_pyserini.datasets import join_title, read_queries

    with open(base / "corpus.jsonl", encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            docs.append(join_title(record.get("title"), record.get("text")))
            if len(docs) == 20:
                break
    queries = list(read_queries(base / "queries.jsonl").values())[:20]
    return docs, queries


def dense(rows, vocab):
    import torch

    out = torch.zeros(len(rows), vocab)
    for i, (ids, weights) in enumerate(rows):
        out[i, ids] = weights.float()
    return out


def test_sentence_transformers_export_gives_our_weights(checkpoint, tmp_path, one_thread):
    import torch
    from sentence_transformers import SparseEncoder

    from csplade_pyserini.model.encoder import CspladeModel
    from csplade_pyserini.train.checkpoint import export_merged
    from csplade_pyserini.vectors.quantize import quantize_tensor

    out = export_merged(checkpoint, tmp_path / "st", sentence_transformers=True)
    assert json.loads((out / "modules.json").read_text())[0]["type"].endswith("CspladeSparseModule")
    ours = CspladeModel.from_spec(f"csplade:{checkpoint}", cache=False)
    st = SparseEncoder(str(out), trust_remote_code=True, device="cpu")
    vocab = ours.encoder.vocab
    assert st.get_sentence_embedding_dimension() == vocab
    docs, queries = texts()
    for kind, items, theirs in (("doc", docs, st.encode_document(docs, convert_to_tensor=True)),
                                ("query", queries, st.encode_query(queries, convert_to_tensor=True))):
        mine = dense(ours.encode_weights(items, kind), vocab)
        theirs = theirs.to_dense().float()
        assert theirs.shape == mine.shape
        assert ((mine > 0).sum(1) == (theirs > 0).sum(1)).all()  # the card's top-k: 40 per document, 12 per query
        assert torch.allclose(mine, theirs, atol=1e-5), (mine - theirs).abs().max()
        assert (mine > 0).sum() > 0
    # integer impacts as Pyserini writes them, from the Sentence Transformers weights
    impacts = ours.encode(docs[:3], kind="doc")
    st_rows = st.encode_document(docs[:3], convert_to_tensor=True).to_dense()
    for vector, row in zip(impacts, st_rows):
        quantized = quantize_tensor(row, ours.card.quant_scale)
        st_impacts = {ours.term_map.terms[i]: int(quantized[i]) for i in quantized.nonzero().flatten().tolist()}
        assert st_impacts.keys() ^ vector.keys() <= {t for t, w in {**st_impacts, **vector}.items() if w <= 1}
        assert all(abs(st_impacts.get(t, 0) - vector.get(t, 0)) <= 1 for t in st_impacts.keys() | vector.keys())
        assert sum(st_impacts.get(t) == w for t, w in vector.items()) >= 0.95 * len(vector)
