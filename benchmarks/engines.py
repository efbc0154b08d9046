"""Lucene impact search against Seismic on the same CSPLADE vectors and the same query vectors.

    python -m benchmarks.engines          # make bench-engines

The default model's SciFact vectors (written by the pipeline) are searched by Anserini's exact impact
search and by Seismic (``pyseismic-lsr``) with its default approximate settings, a few faster ones, and
configured for exactness; every engine gets the same query vectors (encoded once), one query at a time.
Reported: search latency per query, recall of Lucene's exact top-10, nDCG@10 and Seismic's build time.
Writes ``eval/results/bench-engines.{md,json}``.
"""

from __future__ import annotations

import argparse
import os
import logging
import statistics
import time

from benchmarks.report import write_report
from csplade_pyserini.cli import run_cli, set_threads

logger = logging.getLogger(__name__)


def top_ids(hits: list[tuple[str, float]], k: int = 10) -> set[str]:
    return {d for d, _ in sorted(hits, key=lambda h: -h[1])[:k]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.engines", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", default="csplade")
    parser.add_argument("--vectors", default="encode/scifact.csplade.runs-train-cpu-recipe-model-best")
    parser.add_argument("--index", default="index/scifact.csplade.runs-train-cpu-recipe-model-best")
    parser.add_argument("--topics", default="beir-v1.0.0-scifact.test")
    parser.add_argument("--hits", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--name", default="bench-engines")
    args = parser.parse_args(argv)
    threads = set_threads(args.threads)
    load_start = os.getloadavg()[0]  # printed with the results: another busy process shows there

    from pyserini.search.lucene import LuceneImpactSearcher

    from csplade_pyserini import seismic_search
    from benchmarks.query_latency import timed_search
    from csplade_pyserini.datasets import load_topics
    from csplade_pyserini.evaluate.measures import evaluate_run, measures_for
    from csplade_pyserini.integration.encoders import CspladeQueryEncoder
    from csplade_pyserini.search import PrecomputedQueries

    topics = load_topics(args.topics)
    qids, texts = list(topics), [topics[q] for q in topics]
    measures = measures_for(args.topics, ["nDCG@10", "R@100"])
    encoder = CspladeQueryEncoder(args.encoder)
    searcher = LuceneImpactSearcher(args.index, encoder)
    vectors = encoder.encode_batch(texts)
    searcher.query_encoder = PrecomputedQueries(dict(zip(texts, vectors)))
    timed_search(searcher, qids[:10], texts[:10], args.hits)
    lucene_run, seconds = timed_search(searcher, qids, texts, args.hits)
    searcher.close()
    exact_top = {q: top_ids(list(hits.items())) for q, hits in lucene_run.items()}
    rows = [{"engine": "Lucene impact (Anserini, exact)", "search_ms": 1000 * statistics.fmean(seconds),
             "recall_exact_top10": 1.0, "scores": evaluate_run(lucene_run, args.topics, measures), "build_s": None}]
    configs = [("Seismic, default settings", seismic_search.SeismicSettings(), False),
               ("Seismic, query_cut 5, heap_factor 0.6", seismic_search.SeismicSettings(query_cut=5, heap_factor=0.6), False),
               ("Seismic, exact configuration", None, True)]
    for label, settings, exact in configs:
        collection = seismic_search.build(args.vectors, settings, exact=exact, threads=threads)
        seismic_search.search(collection, qids[:10], vectors[:10], args.hits)  # warm-up
        results, seconds = seismic_search.search(collection, qids, vectors, args.hits)
        run = {q: dict(hits) for q, hits in results.items()}
        recall = statistics.fmean(len(top_ids(results[q]) & exact_top[q]) / max(1, len(exact_top[q]))
                                  for q in qids if exact_top[q])
        rows.append({"engine": label, "settings": vars(collection.settings), "search_ms": 1000 * statistics.fmean(seconds),
                     "recall_exact_top10": recall, "scores": evaluate_run(run, args.topics, measures),
                     "build_s": collection.build_seconds})
        logger.info("%s: %s", label, rows[-1])
    result = {"vectors": args.vectors, "topics": args.topics, "queries": len(qids), "threads": threads,
              "measured": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "rows": rows}
    lines = [f"# Engines on the same vectors ({args.topics}, {len(qids)} queries one at a time, {threads} threads "
             f"for building, measured {result['measured']}; 1-minute load average "
             f"{load_start:.2f} at the start, {os.getloadavg()[0]:.2f} at the end)", "",
             "| engine | search ms/q | recall of the exact top-10 | nDCG@10 | R@100 | build s |", "|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['engine']} | {row['search_ms']:.2f} | {row['recall_exact_top10']:.4f} | "
                     f"{row['scores']['nDCG@10']:.4f} | {row['scores']['R@100']:.4f} | "
                     f"{'-' if row['build_s'] is None else format(row['build_s'], '.1f')} |")
    write_report(args.name, result, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    run_cli(main)
