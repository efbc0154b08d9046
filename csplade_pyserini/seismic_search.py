"""Seismic (``pyseismic-lsr``) as a second engine over the same CSPLADE vectors.

    python -m csplade_pyserini.search --engine seismic --index encode/scifact.csplade \
        --topics beir-v1.0.0-scifact.test --encoder csplade --output runs/run.seismic.txt [--seismic-exact]

Seismic is an approximate engine built for learned sparse vectors: it prunes each posting list to its
largest weights, groups the postings into blocks with a summary vector each, and at query time skips the
blocks whose summary cannot beat the current top-k (``heap_factor``), looking only at the query's
``query_cut`` largest terms. ``--index`` is the JsonVectorCollection folder the encoders wrote (the very
input Anserini indexes), built into a Seismic index in memory. With ``--seismic-exact`` nothing is pruned
(every posting kept, summaries keep all the energy, every query term used, no heap slack): the scores are
the exact dot products Lucene's impact search computes, which the tests check on a small index.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)


@dataclass
class SeismicSettings:
    """Seismic's knobs; the defaults follow its README's SPLADE settings, ``exact`` disables every approximation."""

    n_postings: int = 3500
    centroid_fraction: float = 0.1
    summary_energy: float = 0.4
    max_fraction: float = 1.5
    doc_cut: int = 15
    query_cut: int = 20
    heap_factor: float = 0.7

    @classmethod
    def exact(cls, documents: int) -> "SeismicSettings":
        return cls(n_postings=max(1, documents), centroid_fraction=0.1, summary_energy=1.0, max_fraction=1.0,
                   doc_cut=15, query_cut=1_000_000, heap_factor=1.0)


def _require_seismic():
    try:
        import seismic
    except ImportError:
        from csplade_pyserini.errors import InputError

        raise InputError("the Seismic engine needs `pip install pyseismic-lsr`", field="engine") from None
    return seismic


@dataclass
class SeismicCollection:
    index: object
    documents: int
    idf: dict[str, float]
    build_seconds: float
    settings: SeismicSettings
    """What it was built with; its query-time knobs (``query_cut``, ``heap_factor``) serve :func:`search`."""


def build(vector_folder: str | Path, settings: SeismicSettings | None, exact: bool = False,
          threads: int = 1) -> SeismicCollection:
    """Read a JsonVectorCollection folder (validated line by line) into a Seismic index."""
    import numpy as np

    from csplade_pyserini.vectors.jsonvec import read_vectors

    seismic = _require_seismic()
    start = time.perf_counter()
    string = seismic.get_seismic_string()
    dataset = seismic.SeismicDataset()
    df: Counter = Counter()
    count = 0
    for record in read_vectors(vector_folder):
        terms = list(record["vector"])
        if not terms:
            continue
        df.update(terms)
        dataset.add_document(record["id"], np.array(terms, dtype=string),
                             np.array([record["vector"][t] for t in terms], dtype=np.float32))
        count += 1
    settings = SeismicSettings.exact(count) if exact else (settings or SeismicSettings())
    index = seismic.SeismicIndex.build_from_dataset(
        dataset, n_postings=settings.n_postings, centroid_fraction=settings.centroid_fraction,
        summary_energy=settings.summary_energy, max_fraction=settings.max_fraction, doc_cut=settings.doc_cut,
        num_threads=threads)
    idf = {term: math.log(count / n) for term, n in df.items()}  # as Pyserini's impact searcher computes it
    return SeismicCollection(index, count, idf, time.perf_counter() - start, settings)


def search(collection: SeismicCollection, qids: list[str], vectors: list[dict[str, int]], hits: int
           ) -> tuple[dict[str, list[tuple[str, float]]], list[float]]:
    """Each query alone (batch 1, the latency a user sees), with the collection's settings: results and
    per-query seconds."""
    import numpy as np

    seismic = _require_seismic()
    string = seismic.get_seismic_string()
    settings = collection.settings
    results, seconds = {}, []
    for qid, vector in zip(qids, vectors):
        terms = list(vector)
        begin = time.perf_counter()
        found = collection.index.search(qid, np.array(terms, dtype=string),
                                        np.array([vector[t] for t in terms], dtype=np.float32), k=hits,
                                        query_cut=max(1, min(settings.query_cut, len(terms) or 1)),
                                        heap_factor=settings.heap_factor) if terms else []
        seconds.append(time.perf_counter() - begin)
        results[qid] = [(docid, float(score)) for _, score, docid in found]
    return results, seconds
