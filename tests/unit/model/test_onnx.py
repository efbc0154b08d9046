"""The ONNX Runtime encoder gives PyTorch float32's vectors, for every variant and head, on tiny random models."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import WORDS, make_tiny_llama

from csplade_pyserini.errors import InputError
from csplade_pyserini.model.card import ModelCard
from csplade_pyserini.model.encoder import CspladeModel

TEXTS = ["Cells respond to viral infection in the lung.", "short", "",
         "A much longer text about mitochondria, the powerhouse of the cell, and what they do in muscle tissue."]
TOLERANCE = 1e-4  # on float weights (log1p scale); ONNX Runtime and PyTorch order their sums differently


@pytest.fixture(autouse=True)
def onnx_cache(tmp_path_factory, monkeypatch):
    """One cache for the whole module (exports are reused across tests, as a user's would be)."""
    monkeypatch.setenv("CSPLADE_CACHE", str(tmp_path_factory.getbasetemp() / "onnx-cache"))


def with_heads(folder, lexical: bool = False, bias: bool = False, context: bool = False, **changes):
    """Give a tiny checkpoint random heads (non-zero, so each one changes the vectors) and card changes."""
    from csplade_pyserini.model.context import ContextHead
    from csplade_pyserini.model.lexical import LexicalHead
    from csplade_pyserini.model.logit_bias import save_logit_bias

    torch.manual_seed(5)
    card = ModelCard.load(folder)
    vocab = json.loads((folder / "config.json").read_text())["vocab_size"]
    if bias:
        changes["logit_bias"] = save_logit_bias(torch.randn(vocab) * 0.5 - 0.5, folder)
    if lexical:
        head = LexicalHead(32)
        for parameter in head.parameters():
            torch.nn.init.normal_(parameter, std=0.5)
        changes.update(lexical_head=head.save(folder), lexical_layer=1)
    if context:
        head = ContextHead(32)
        torch.nn.init.normal_(head.map.weight, std=0.2)
        changes.update(context_head=head.save(folder), context_layer=1)
    card.replace(**changes).save(folder)
    return folder


CASES = {
    "causal": {},
    "echo": {"variant": "echo"},
    "bidirectional": {"variant": "bidirectional"},
    "bias+lexical": {"bias": True, "lexical": True, "expansion_weight": 0.6},
    "lexical-only": {"lexical": True, "expansion": False},
    "context+bias": {"context": True, "bias": True},
}


@pytest.fixture(scope="module", params=list(CASES))
def case(request, tmp_path_factory, tokenizer_dir):
    folder = make_tiny_llama(tmp_path_factory.mktemp(request.param) / "ckpt", tokenizer_dir, seed=2,
                             doc_top_k=None, query_top_k=None)
    return with_heads(folder, **CASES[request.param])


def dense(encoded, vocab: int) -> torch.Tensor:
    return torch.stack([torch.zeros(vocab).index_put_((ids,), w.float()) for ids, w in encoded])


@pytest.mark.parametrize("kind", ["doc", "query"])
def test_onnx_weights_equal_pytorch_float32(case, kind):
    torch_model = CspladeModel.from_spec(f"csplade:{case}", cache=False)
    onnx_model = CspladeModel.from_spec(f"csplade:{case},runtime=onnx", cache=False)
    assert onnx_model.encoder.model is None  # no PyTorch model behind it
    vocab = torch_model.encoder.vocab
    expected = dense(torch_model.encode_weights(TEXTS, kind), vocab)
    got = dense(onnx_model.encode_weights(TEXTS, kind), vocab)
    assert expected[0].count_nonzero() > 0 and expected[2].count_nonzero() == 0  # the empty text has no terms
    assert (got - expected).abs().max() < TOLERANCE
    assert torch.equal(got > TOLERANCE, expected > TOLERANCE) or bool(
        ((got > TOLERANCE) != (expected > TOLERANCE)).logical_and(expected.sub(TOLERANCE).abs() < TOLERANCE).all())


def test_int8_graph_keeps_float32_top_k(case):
    """The int8 head only chooses candidates: a top-k side gets float32's terms and weights; a side without a
    top-k runs the float32 graph. Special tokens stay out and the empty text empty."""
    float32 = CspladeModel.from_spec(f"csplade:{case},runtime=onnx,query_top_k=8", cache=False)
    int8 = CspladeModel.from_spec(f"csplade:{case},runtime=onnx-int8,query_top_k=8", cache=False)
    assert int8.encoder.graph.name.endswith(".int8.onnx") and float32.encoder.graph != int8.encoder.graph
    import onnx

    ops = [n.op_type for n in onnx.load(str(int8.encoder.graph), load_external_data=False).graph.node]
    float_ops = [n.op_type for n in onnx.load(str(float32.encoder.graph), load_external_data=False).graph.node]
    vocab = float32.encoder.vocab
    if int8.card.expansion:  # the screening product alone is int8; the candidates' product is float
        assert ops.count("MatMulInteger") == 1 and "TopK" in ops and ops.count("MatMul") == float_ops.count("MatMul")
        assert int8.encoder.screen == 256 and 8 <= int8.encoder.screen // 4
    else:  # no LM head: the decoder's products with a weight matrix (not attention's scores)
        assert 0 < ops.count("MatMulInteger") < float_ops.count("MatMul")
    for kind in ("query", "doc"):  # queries: the screened int8 graph; documents (no top-k): the float32 graph
        got = dense(int8.encode_weights(TEXTS, kind), vocab)
        assert got[2].count_nonzero() == 0 and got[0].count_nonzero() > 0
        assert got[:, int8.encoder.excluded_ids(vocab, "cpu")].count_nonzero() == 0
        if int8.card.expansion:
            expected = dense(float32.encode_weights(TEXTS, kind), vocab)
            assert (got - expected).abs().max() < TOLERANCE


def test_the_graph_is_keyed_by_what_enters_it(tiny_checkpoint, monkeypatch):
    """Lengths, prefixes and top-k act outside the graph: changing them reuses the export; the logit bias is
    inside it. A second load never exports again."""
    from csplade_pyserini.model import onnx
    from csplade_pyserini.model.spec import card_from_spec

    card, base = card_from_spec(f"csplade:{tiny_checkpoint},runtime=onnx")
    same = card.replace(query_top_k=3, max_doc_length=64, query_prefix="q: ")
    assert onnx.graph_fingerprint(card, base) == onnx.graph_fingerprint(same, base)
    assert onnx.graph_fingerprint(card, base) != onnx.graph_fingerprint(card.replace(variant="bidirectional"), base)
    assert onnx.graph_fingerprint(card, base) != onnx.graph_fingerprint(card.replace(logit_bias="b.safetensors"), base)
    CspladeModel.from_spec(f"csplade:{tiny_checkpoint},runtime=onnx", cache=False)

    def refuse(*args, **kwargs):
        raise AssertionError("exported a second time")

    monkeypatch.setattr(onnx, "write_export", refuse)
    model = CspladeModel.from_spec(f"csplade:{tiny_checkpoint},runtime=onnx,query_top_k=3", cache=False)
    assert all(len(ids) <= 3 for ids, _ in model.encode_weights(TEXTS, "query"))


def test_an_unwritable_cache_exports_for_the_process_only(tiny_checkpoint, tmp_path, monkeypatch):
    """A read-only cache (a shared install): the graph is exported into a temporary folder and loaded from it."""
    import errno

    from csplade_pyserini.model import onnx

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / "cache"))

    monkeypatch.setenv("CSPLADE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(onnx, "export_folder", read_only)
    model = CspladeModel.from_spec(f"csplade:{tiny_checkpoint},runtime=onnx-int8,query_top_k=8", cache=False)
    assert not model.encoder.graph.exists() and not (tmp_path / "cache").exists()
    assert any(len(ids) for ids, _ in model.encode_weights(TEXTS, "query"))
    assert all(len(ids) for ids, _ in model.encode_weights(TEXTS[:2], "doc"))  # its float32 graph, loaded before


def test_an_export_folder_is_self_contained(tmp_path, tokenizer_dir, monkeypatch):
    """``export onnx`` writes the card (runtime onnx), its weight files and the graphs; the folder then serves
    as a spec without touching the cache, and ``runtime=torch`` on it gives the same vectors."""
    from csplade_pyserini.model.onnx import GRAPH_FILE, INT8_FILE, RECORD_FILE, export_model
    from csplade_pyserini.model.spec import card_from_spec

    source = with_heads(make_tiny_llama(tmp_path / "src", tokenizer_dir, seed=4, doc_top_k=None), bias=True)
    card, base = card_from_spec(f"csplade:{source}")
    out = tmp_path / "export"
    out.mkdir()
    exported, record = export_model(card, base, out)
    assert {GRAPH_FILE, INT8_FILE, RECORD_FILE, "csplade_card.json", "logit_bias.safetensors"} <= {
        p.name for p in out.iterdir()}
    assert exported.runtime == "onnx" and ModelCard.load(out).logit_bias == "logit_bias.safetensors"
    assert ModelCard.load(out).backbone == str(source.resolve())  # the relative backbone made absolute
    cache = tmp_path / "empty-cache"
    monkeypatch.setenv("CSPLADE_CACHE", str(cache))
    onnx_model = CspladeModel.from_spec(f"csplade:{out}", cache=False)
    assert onnx_model.encoder.graph == out / GRAPH_FILE and not (cache / "onnx").exists()
    torch_model = CspladeModel.from_spec(f"csplade:{out},runtime=torch", cache=False)
    vocab = torch_model.encoder.vocab
    assert (dense(onnx_model.encode_weights(TEXTS, "query"), vocab)
            - dense(torch_model.encode_weights(TEXTS, "query"), vocab)).abs().max() < TOLERANCE
    assert onnx_model.weight_files() == torch_model.weight_files()  # the index check sees the same model


def test_word_channel_queries_in_onnx_documents_refused(tmp_path, tokenizer_dir):
    """A word channel with LM-head expansion: its query vectors (idf-weighted words + the LM-head terms) are the
    same with the LM-head channel in ONNX Runtime; its documents need PyTorch and say so."""
    from csplade_pyserini.model.words import TermFrequencyHead

    folder = make_tiny_llama(tmp_path / "words", tokenizer_dir, seed=6, doc_top_k=None, query_top_k=8,
                             tf_head="tf_head.safetensors", tf_layer=1, bm25_avgdl=10.0,
                             **{**WORDS, "expansion": True}, expansion_weight=0.5)
    TermFrequencyHead(32, 8).save(folder)
    torch_model = CspladeModel.from_spec(f"csplade:{folder}", cache=False)
    onnx_model = CspladeModel.from_spec(f"csplade:{folder},runtime=onnx", cache=False)
    pieces = torch_model.expansion.encode_weights(TEXTS, "query")
    idf = {term: 1.0 for p in pieces for term in torch_model.expansion_impacts(p, 30.0)}
    idf.update({"cell": 2.0, "lung": 1.5, "viral": 3.0})
    assert onnx_model.idf_token_vectors(TEXTS, idf) == torch_model.idf_token_vectors(TEXTS, idf)
    with pytest.raises(InputError, match="runtime=torch"):
        onnx_model.encode_documents(["a document"])


def test_an_export_without_int8_graph_refuses_onnx_int8(tmp_path):
    """Graphs over 2 GB keep their weights in an external file and get no int8 twin: asked for, it is refused."""
    from csplade_pyserini.model.onnx import GRAPH_FILE, graph_file

    record = {"files": {"float32": GRAPH_FILE, "int8": None}}
    assert graph_file(tmp_path, record, "float32") == tmp_path / GRAPH_FILE
    with pytest.raises(InputError, match="runtime=onnx"):
        graph_file(tmp_path, record, "int8")


def test_card_rules_for_runtime():
    with pytest.raises(InputError, match="runtime"):
        ModelCard(runtime="tensorrt")
    with pytest.raises(InputError, match="onnx-int8"):
        ModelCard(runtime="onnx", quantization="int8-dynamic")
    with pytest.raises(InputError, match="dense"):
        ModelCard(runtime="onnx", representation="dense")
    assert ModelCard(runtime="onnx-int8").runtime == "onnx-int8"

