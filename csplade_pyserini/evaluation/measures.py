"""Standard measure sets, scored with ir-measures (the same numbers trec_eval prints).

TREC DL: nDCG@10, AP and R@1000 with relevance >= 2 for the binary measures (as Pyserini reports);
MS MARCO dev: RR@10, R@1000; BEIR: nDCG@10, R@100.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import ir_measures
from ir_measures import AP, R, RR, nDCG

from csplade_pyserini.datasets import load_qrels, topics_kind

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
    run_map = run if isinstance(run, Mapping) else _read_run(Path(run))
    run_map = {qid: docs for qid, docs in run_map.items() if qid in qrels_map}
    aggregate = {str(m): float(v) for m, v in ir_measures.calc_aggregate(measures, qrels_map, run_map).items()}
    if run_map and len(run_map) < len(qrels_map):
        # ir-measures averages over the judged queries present in the run; like `trec_eval -c`, count
        # the judged queries that the run lacks as zeros.
        aggregate = {k: v * len(run_map) / len(qrels_map) for k, v in aggregate.items()}
    if not per_query:
        return aggregate
    rows: dict[str, dict[str, float]] = {}
    for metric in ir_measures.iter_calc(measures, qrels_map, run_map):
        rows.setdefault(metric.query_id, {})[str(metric.measure)] = float(metric.value)
    return aggregate, rows


def _read_run(path: Path) -> dict[str, dict[str, float]]:
    run: dict[str, dict[str, float]] = {}
    for scored in ir_measures.read_trec_run(str(path)):
        run.setdefault(scored.query_id, {})[scored.doc_id] = float(scored.score)
    return run
