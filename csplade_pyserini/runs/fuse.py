"""Reciprocal-rank fusion (Cormack et al., SIGIR 2009): score(d) = sum over runs of 1 / (k + rank(d)).

A document's rank in a run is its position after sorting that run's topic by score descending, docid
descending (trec_eval's order), with duplicate docids dropped (as :mod:`~csplade_pyserini.runs.fix` does); the rank column
as written is ignored, so two runs that differ only in how they number ties fuse the same way. A
document absent from a run contributes nothing for that run.

``pyserini.fusion.reciprocal_rank_fusion`` is not used because it is not exact for these inputs: its
``TrecRun`` reader parses numeric qids as numbers (``0042`` becomes ``42``) and trusts the rank
column, and its sum depends on the order of the runs, so documents with mathematically equal fused
scores can differ in the last bit and escape the docid tie-break. Here every sum is ``math.fsum``
(correctly rounded, so independent of order) and the output is sorted by score descending, docid
descending.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from csplade_pyserini.errors import InputError
from csplade_pyserini.runs.format import Hit, by_topic, rank_hits, read_run, write_run

logger = logging.getLogger(__name__)

METHODS = ("rrf",)


def rrf(runs: list[list[Hit]], k: float = 60, depth: int | None = 1000, tag: str = "rrf") -> dict[str, list[Hit]]:
    """Fuse runs (lists of hits) into ranked topics."""
    if k < 0:
        raise InputError(f"RRF k must be non-negative, got {k}", field="k")
    terms: dict[str, dict[str, list[float]]] = {}
    for hits in runs:
        for qid, topic in by_topic(hits).items():
            for hit in rank_hits(topic):
                terms.setdefault(qid, {}).setdefault(hit.docid, []).append(1.0 / (k + hit.rank))
    return {qid: rank_hits((Hit(qid, docid, 0, math.fsum(values), tag) for docid, values in docs.items()), depth)
            for qid, docs in terms.items()}


def fuse_runs(paths: list[str | Path], output: str | Path, method: str = "rrf", k: float = 60,
              depth: int | None = 1000, tag: str = "rrf") -> int:
    """Read, fuse and atomically write; returns the number of lines written."""
    if method not in METHODS:
        raise InputError(f"unknown fusion method {method!r}; known: {', '.join(METHODS)}", field="method")
    if len(paths) < 2:
        raise InputError(f"fusion needs at least two runs, got {len(paths)}")
    runs = [read_run(path) for path in paths]
    topics = rrf(runs, k=k, depth=depth, tag=tag)
    logger.info("fused %d runs with RRF (k=%s) into %d topics", len(runs), k, len(topics))
    return write_run(output, topics, tag)
