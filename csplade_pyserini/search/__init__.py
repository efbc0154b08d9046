"""Searching impact indexes: batch search with Lucene's threads, TREC run files, and the search statistics
every benchmark reports. The command, ``python -m csplade_pyserini.search``, is ``__main__.py``.

Queries are encoded in sorted batches first (one model call per batch instead of per query), then searched.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from tqdm import tqdm

from csplade_pyserini.atomic import atomic_file

logger = logging.getLogger(__name__)


@dataclass
class SearchStats:
    queries: int
    encode_seconds: float
    search_seconds: float
    avg_query_terms: float
    flops_per_query: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def encode_ms_per_query(self) -> float:
        return 1000 * self.encode_seconds / max(1, self.queries)

    @property
    def search_ms_per_query(self) -> float:
        return 1000 * self.search_seconds / max(1, self.queries)


def write_trec_run(results: dict[str, list[tuple[str, float]]], path: str | Path, tag: str) -> None:
    """Six-column TREC run in trec_eval's order (ties: docid descending), so reruns are byte-identical and
    the rank column agrees with what gets evaluated."""
    from csplade_pyserini.runs.format import trec_order

    with atomic_file(path) as handle:
        for qid, hits in results.items():
            ranked = sorted(hits, key=lambda h: trec_order(h[1], h[0]))
            for rank, (docid, score) in enumerate(ranked, start=1):
                handle.write(f"{qid} Q0 {docid} {rank} {score:.6f} {tag}\n")


def postings_per_query(query_vectors: list[dict[str, int]], doc_freq: dict[str, float]) -> float:
    """Multiply-adds per query: the summed document frequency of its terms (the FLOPS of SPLADE
    papers, counted on the real index instead of estimated from a sample)."""
    if not query_vectors:
        return 0.0
    return sum(sum(doc_freq.get(t, 0.0) for t in q) for q in query_vectors) / len(query_vectors)


def batch_search(searcher, qids: list[str], texts: list[str], hits: int, threads: int, batch_size: int,
                 desc: str = "search") -> dict[str, list[tuple[str, float]]]:
    """Any Pyserini Lucene searcher, in batches (a progress bar that moves, Lucene's own threads)."""
    results: dict[str, list[tuple[str, float]]] = {}
    with tqdm(total=len(qids), desc=desc, unit="q", dynamic_ncols=True) as bar:
        for begin in range(0, len(qids), batch_size):
            chunk_ids, chunk_texts = qids[begin:begin + batch_size], texts[begin:begin + batch_size]
            found = searcher.batch_search(chunk_texts, chunk_ids, k=hits, threads=threads)
            for qid in chunk_ids:
                results[qid] = [(h.docid, float(h.score)) for h in found.get(qid, [])]
            bar.update(len(chunk_ids))
    return results


class PrecomputedQueries:
    """A query encoder that hands back vectors encoded beforehand (by text), so that a searcher's
    ``batch_search`` does not encode again and its timing is the search alone."""

    def __init__(self, vectors: dict[str, dict[str, int]]):
        self.vectors = vectors

    def encode(self, text: str, **_ignored) -> dict[str, int]:
        return self.vectors[text]


def searched_terms(vector: Mapping[str, int], idf: Mapping[str, float], min_idf: float = 0.0) -> dict[str, int]:
    """The terms of a query vector that Pyserini's impact search sends to Lucene: those the index holds with
    an idf above ``min_idf`` (``--min-idf``; its own test, ``idf > min_idf``)."""
    return {t: w for t, w in vector.items() if t in idf and idf[t] > min_idf}


def search(index_dir: str | Path, topics: dict[str, str], encoder, hits: int = 1000, threads: int = 1,
           batch_size: int = 64, min_idf: float = 0.0, device: str = "cpu", output: str | Path | None = None,
           tag: str = "csplade") -> tuple[dict[str, list[tuple[str, float]]], SearchStats]:
    """Search ``topics``; ``encoder`` is a csplade spec, a pre-encoded query file or any Pyserini query
    encoder (baselines)."""
    from pyserini.search.lucene import LuceneImpactSearcher

    if isinstance(encoder, str):
        from csplade_pyserini.integration.encoders import query_encoder

        encoder = query_encoder(encoder, device=device)
    searcher = LuceneImpactSearcher(str(index_dir), encoder, min_idf=min_idf)
    attach = getattr(encoder, "attach_index", None)
    if attach is not None:  # explicit: also without the start-up hook's patch of Pyserini
        attach(index_dir, searcher.idf)
    qids, texts = list(topics), [topics[q] for q in topics]
    start = time.perf_counter()
    with tqdm(total=len(texts), desc="encode queries", unit="q", dynamic_ncols=True) as bar:
        if hasattr(encoder, "encode_batch"):
            vectors = encoder.encode_batch(texts, progress=bar)
        else:
            vectors = []
            for text in texts:
                vectors.append(encoder.encode(text))
                bar.update(1)
    encode_seconds = time.perf_counter() - start
    searcher.query_encoder = PrecomputedQueries(dict(zip(texts, vectors)))  # batch_search must not re-encode
    start = time.perf_counter()
    results = batch_search(searcher, qids, texts, hits, threads, batch_size)
    search_seconds = time.perf_counter() - start
    kept = [searched_terms(v, searcher.idf, min_idf) for v in vectors]
    # Pyserini keeps idf = ln(N / df) per index term; invert it rather than re-reading the index.
    doc_freq = {t: searcher.num_docs * math.exp(-searcher.idf[t]) for q in kept for t in q}
    stats = SearchStats(len(qids), encode_seconds, search_seconds,
                        avg_query_terms=sum(len(v) for v in kept) / max(1, len(kept)),
                        flops_per_query=postings_per_query(kept, doc_freq))
    if output is not None:
        write_trec_run(results, output, tag)
    searcher.close()
    return results, stats
