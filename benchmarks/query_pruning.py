"""Query pruning, chosen on validation: what the default model's query terms cost in Lucene, and what
dropping some of them gives.

    python -m benchmarks.query_pruning            # make bench-query-pruning

The default's query vectors carry ~9 analysed words and up to 64 LM-head terms; many LM-head terms (``lm_Ġ.``,
``lm_Ġthe``) are in most documents, and a term's cost in Lucene grows with its postings. Each setting below
searches the default's own impact index of a training domain (built by the pipeline: ``index/NAME.csplade``)
with the domain's **validation** queries (the splits the channels were validated on: SciFact's 100 held-out
train queries, seed 42, and NFCorpus's dev split; never a test split), exactly as
``pyserini.search.lucene --impact`` does per query (Pyserini's ``LuceneImpactSearcher.search``, its query map
included, ``--hits 1000``):

- ``min-idf X``: Pyserini's own ``--min-idf X`` (a term whose idf in the index is at most ``X`` is dropped);
- ``query_top_k=K``: the card's LM-head top-k per query (64 in the default);
- ``words only``: the LM-head terms dropped (the word channel's query alone, searching the same index).

Columns: validation nDCG@10 per domain and their mean, the paired change against the unpruned query
(bootstrap interval and randomisation p, ``evaluate/significance.py``), query terms, and search time per query
(after an untimed pass; the median of ``--passes`` timed passes, settings interleaved so that a slow moment
of the machine falls on all of them); BM25 searches its own index with the same query texts in the same passes.
The query vectors are encoded once per top-k by ``runtime=onnx-int8`` (float32's terms and weights) and are not
timed here (``make bench-latency`` times encoding). Writes ``eval/results/bench-query-pruning.{md,json}``.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import time

from benchmarks.report import write_report
from csplade_pyserini.cli import run_cli, set_threads
from csplade_pyserini.errors import InputError
from csplade_pyserini.paths import shared_path

logger = logging.getLogger(__name__)
DOMAINS = ("scifact", "nfcorpus")
MIN_IDF = (0.5, 1.0, 1.25, 1.5, 2.0)
TOP_K = (48, 32, 16)


def time_settings(searcher, texts: list[str], settings: dict[str, dict[str, dict[str, int]]], bm25, hits: int,
                  passes: int) -> dict[str, float]:
    """Milliseconds per query of each setting (its vectors by text) and of BM25 (key ``bm25``): one untimed
    pass, then ``passes`` timed passes with the settings interleaved; the median pass."""
    from csplade_pyserini.search import PrecomputedQueries

    timings: dict[str, list[float]] = {name: [] for name in [*settings, "bm25"]}
    for _ in range(passes + 1):
        for name, vectors in settings.items():
            searcher.query_encoder = PrecomputedQueries(vectors)
            start = time.perf_counter()
            for text in texts:
                searcher.search(text, k=hits)
            timings[name].append((time.perf_counter() - start) / len(texts) * 1000)
        start = time.perf_counter()
        for text in texts:
            bm25.search(text, k=hits)
        timings["bm25"].append((time.perf_counter() - start) / len(texts) * 1000)
    return {name: statistics.median(values[1:]) for name, values in timings.items()}


def measure_domain(name: str, spec: str, hits: int, passes: int) -> dict:
    """Every setting's validation run, nDCG@10 and search time on one training domain."""
    from pyserini.search.lucene import LuceneImpactSearcher, LuceneSearcher

    from csplade_pyserini.evaluate.measures import evaluate_run, measures_for
    from csplade_pyserini.integration.encoders import CspladeQueryEncoder
    from csplade_pyserini.model.encoder import EXPANSION_PREFIX
    from csplade_pyserini.search import PrecomputedQueries, searched_terms
    from csplade_pyserini.train.domains import load_domain

    folder = shared_path("data", "beir", name)
    if folder is None or not folder.is_dir():
        raise InputError(f"no {name} data: ../shared/data/beir/{name} (or CSPLADE_SHARED) is missing", path=folder)
    domain = load_domain(folder, held_out=100, seed=42)
    qids = list(domain.validation.queries)
    texts = [domain.validation.queries[q] for q in qids]
    index = f"index/{name}.csplade"
    encoder = CspladeQueryEncoder(spec)
    searcher = LuceneImpactSearcher(index, encoder)  # checks the index's model, hands the encoder its idf
    idf = searcher.idf
    full = dict(zip(texts, encoder.encode_batch(texts)))
    settings = {"unpruned": full, "words only": {t: {k: w for k, w in v.items() if not k.startswith(EXPANSION_PREFIX)}
                                                 for t, v in full.items()}}
    for value in MIN_IDF:
        settings[f"min-idf {value}"] = {t: searched_terms(v, idf, value) for t, v in full.items()}
    for k in TOP_K:
        other = CspladeQueryEncoder(f"{spec},query_top_k={k}")
        other.attach_index(index, idf)
        settings[f"query_top_k={k}"] = dict(zip(texts, other.encode_batch(texts)))
    bm25 = LuceneSearcher(f"index/{name}.bm25/lucene")
    bm25.set_bm25(0.9, 0.4)
    measures = measures_for("", ["nDCG@10"])
    out = {"validation": domain.validation_source, "queries": len(qids), "settings": {}}
    for setting, vectors in settings.items():
        searcher.query_encoder = PrecomputedQueries(vectors)
        run = {qid: {h.docid: float(h.score) for h in searcher.search(text, k=hits)} for qid, text in zip(qids, texts)}
        scores, per_query = evaluate_run(run, domain.validation.qrels, measures, per_query=True)
        out["settings"][setting] = {"nDCG@10": scores["nDCG@10"],
                                    "per_query": {q: per_query.get(q, {}).get("nDCG@10", 0.0) for q in qids},
                                    "terms_per_query": statistics.fmean(len(v) for v in vectors.values())}
        logger.info("%s %s: validation nDCG@10 %.4f", name, setting, scores["nDCG@10"])
    for setting, ms in time_settings(searcher, texts, settings, bm25, hits, passes).items():
        out["settings"].setdefault(setting, {})["search_ms"] = ms
    searcher.close()
    bm25.close()
    return out


def report(result: dict) -> str:
    from csplade_pyserini.evaluate.significance import paired_comparison

    domains = list(result["domains"])
    names = list(result["domains"][domains[0]]["settings"])
    names.remove("bm25")
    lines = [f"# Query pruning on validation ({result['spec']}, --hits {result['hits']}, measured {result['measured']}, "
             f"{result['threads']} torch threads; 1-minute load average {result['load'][0]:.2f} at the start, "
             f"{result['load'][1]:.2f} at the end)", "",
             "| setting | " + " | ".join(f"{d} nDCG@10 (change [95% CI], p) | {d} terms/q | {d} search ms/q"
                                        for d in domains) + " | mean nDCG@10 |",
             "|---|" + "---|---|---|" * len(domains) + "---|"]
    for name in names:
        cells, means = [], []
        for d in domains:
            entry = result["domains"][d]["settings"][name]
            base = result["domains"][d]["settings"]["unpruned"]
            change = paired_comparison(base["per_query"], entry["per_query"])
            means.append(entry["nDCG@10"])
            cells += [f"{entry['nDCG@10']:.4f} ({change.describe()})", f"{entry['terms_per_query']:.1f}",
                      f"{entry['search_ms']:.2f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {statistics.fmean(means):.4f} |")
    lines.append("| BM25 (its own index, the same texts) | " + " | ".join(
        f"- | - | {result['domains'][d]['settings']['bm25']['search_ms']:.2f}" for d in domains) + " | - |")
    lines += ["", "Validation: " + "; ".join(f"{d}: {result['domains'][d]['validation']} "
                                           f"({result['domains'][d]['queries']} queries)" for d in domains) + ". "
              "Search ms/q: Pyserini's `LuceneImpactSearcher.search` per query with the vectors encoded beforehand "
              "(its query map, Lucene, the 1,000 hits), the median of the timed passes."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.query_pruning", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", default="csplade,runtime=onnx-int8", help="the query side (its index: the default's)")
    parser.add_argument("--hits", type=int, default=1000)
    parser.add_argument("--passes", type=int, default=5, help="timed passes over the queries (after an untimed one)")
    parser.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime threads")
    parser.add_argument("--name", default="bench-query-pruning")
    args = parser.parse_args(argv)
    if args.passes < 1:
        parser.error("--passes must be at least 1 (the untimed pass comes before them)")
    threads = set_threads(args.threads)
    load_start = os.getloadavg()[0]  # another busy process shows here
    result = {"spec": args.encoder, "hits": args.hits, "threads": threads,
              "measured": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
              "domains": {name: measure_domain(name, args.encoder, args.hits, args.passes) for name in DOMAINS}}
    result["load"] = [load_start, os.getloadavg()[0]]
    write_report(args.name, result, report(result))
    return 0


if __name__ == "__main__":
    run_cli(main)
