"""Standard measure sets, scored with ir-measures (the same numbers trec_eval prints).

TREC DL: nDCG@10, AP and R@1000 with relevance >= 2 for the binary measures (as Pyserini reports);
MS MARCO dev: RR@10, R@1000; BEIR: nDCG@10, R@100.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping

import ir_measures
from ir_measures import AP, R, RR, nDCG

from csplade_pyserini.datasets import load_qrels, topics_kind
from csplade_pyserini.errors import InputError

logger = logging.getLogger(__name__)

MEASURE_SETS = {
    "dl": [nDCG @ 10, AP(rel=2), R(rel=2) @ 1000],
    "msmarco-dev": [RR @ 10, R @ 1000],
    "beir": [nDCG @ 10, R @ 100],
}


def measures_for(topics: str, names: list[str] | None = None) -> list:
    if names:
        return [ir_measures.parse_measure(n) for n in names]
    return MEASURE_SETS[topics_kind(topics)]


def evaluate_run(run: str | Path | Mapping[str, Mapping[str, float]], qrels: str | Path | Mapping,
                 measures: list, per_query: bool = False):
    """Aggregate scores ``{str(measure): value}``; with ``per_query`` also ``{qid: {measure: value}}``.

    Queries without judgements are ignored (as trec_eval does); judged queries missing from the run
    count as zero, so a run that silently drops topics cannot look better.
    """
    qrels_map = load_qrels(qrels) if isinstance(qrels, (str, Path)) else qrels
    if not any(qrels_map.values()):
        raise InputError("the qrels hold no judgement", path=str(qrels) if isinstance(qrels, (str, Path)) else None)
    run_map = run if isinstance(run, Mapping) else read_run_scores(Path(run))
    foreign = sorted(set(run_map) - set(qrels_map))
    if foreign:
        logger.warning("%d run topics are not in the qrels and are ignored (first: %s)", len(foreign), foreign[0])
    run_map = {qid: docs for qid, docs in run_map.items() if qid in qrels_map}
    if not run_map:
        logger.warning("the run has no topic of the qrels: every score is 0")
    # ir-measures averages over every judged query, a query missing from the run counting as zero (as
    # `trec_eval -c` does); it needs no rescaling here (an earlier rescale counted the missing ones twice).
    computed = {str(m): float(v) for m, v in ir_measures.calc_aggregate(measures, qrels_map, run_map).items()}
    aggregate = {str(m): computed.get(str(m), 0.0) for m in measures}  # in the order asked for
    if not per_query:
        return aggregate
    rows: dict[str, dict[str, float]] = {}
    for metric in ir_measures.iter_calc(measures, qrels_map, run_map):
        rows.setdefault(metric.query_id, {})[str(metric.measure)] = float(metric.value)
    return aggregate, rows


def read_run_scores(path: Path) -> dict[str, dict[str, float]]:
    """``{qid: {docid: score}}`` through the one strict TREC run reader (bad lines named by number); a docid
    listed twice for one topic is refused, as trec_eval refuses it ("duplicate docs")."""
    from csplade_pyserini.runs.format import read_run

    run: dict[str, dict[str, float]] = {}
    first: dict[tuple[str, str], int] = {}
    for hit in read_run(path):
        key = (hit.qid, hit.docid)
        if key in first:
            raise InputError(f"topic {hit.qid!r} lists document {hit.docid!r} twice (first on line {first[key]}); "
                             "trec_eval refuses duplicate docs (python -m csplade_pyserini.runs fix repairs it)",
                             path=path, line=hit.line, field="docid")
        first[key] = hit.line
        run.setdefault(hit.qid, {})[hit.docid] = hit.score
    return run
