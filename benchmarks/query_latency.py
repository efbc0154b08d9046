"""The quantization study: batch-1 query latency of the CSPLADE query encoder in each precision and runtime,
against BM25.

    python -m benchmarks.query_latency            # make bench-latency

What ``python -m pyserini.search.lucene --impact --encoder csplade`` does per query, timed apart: encode one
query (the model, batch 1) and search the impact index with it (Lucene, one thread); BM25 searches its own
index the same way in the same run. Each query side (``dtype=float32``, ``dtype=bfloat16``, ONNX Runtime
(``runtime=onnx``, float32, and ``runtime=onnx-int8``, its dynamic int8), the torch-quantized ones:
``int8-dynamic`` (torch.ao, weights + activations), ``int8-weight-only`` and ``int4-weight-only`` (torchao),
``bnb-int8`` and ``bnb-nf4`` (bitsandbytes)) searches the same index, built once by the pipeline with the model at its card's precision, so the nDCG@10
column shows what the query side costs. The splade-tiny baseline is timed the same way (Pyserini's
``SpladeQueryEncoder``, then its own impact index), beside BM25. Term-set agreement is against the float32 query vectors. Per
variant also: the model's size (its serialised weights), the process's peak RSS while the variant loads and
runs (the high-water mark is reset between variants), and document throughput (a fixed sample of documents
encoded in batches). Model start-up is reported apart (it is paid once per process).
Writes ``eval/results/bench-latency.{md,json,png}``.
"""

from __future__ import annotations

import argparse
import os
import logging
import statistics
import time
from pathlib import Path

from benchmarks.report import RESULTS, write_report
from csplade_pyserini.cli import run_cli, set_threads
from csplade_pyserini.evaluate.significance import PairedComparison, paired_comparison
from csplade_pyserini.model.quantization import model_bytes
from csplade_pyserini.paths import shared_path

logger = logging.getLogger(__name__)
VARIANTS = ("dtype=float32", "dtype=bfloat16", "runtime=onnx", "runtime=onnx-int8", "quantization=int8-dynamic",
            "quantization=int8-weight-only", "quantization=int4-weight-only", "quantization=bnb-int8",
            "quantization=bnb-nf4")


def reset_peak_rss() -> None:
    """Reset the process's resident-set high-water mark (Linux: ``/proc/self/clear_refs``)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_mb() -> float | None:
    """The process's resident-set high-water mark since the last reset (Linux ``VmHWM``), in MB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"mean": 1000 * statistics.fmean(ordered), "median": 1000 * statistics.median(ordered),
            "p90": 1000 * ordered[int(0.9 * (len(ordered) - 1))]}


def query_model_mb(model) -> float:
    """The size of what encodes a query: the ONNX graph file, or the PyTorch weights as stored (a word-channel
    model's LM-head channel; its words need no model)."""
    side = model.expansion if model.expansion is not None else model
    graph = getattr(side.encoder, "graph", None)
    if graph is not None:
        return graph.stat().st_size / 2**20
    return model_bytes(side.encoder.model) / 2**20


def timed_search(searcher, qids: list[str], texts: list[str], hits: int) -> tuple[dict, list[float]]:
    """Each query searched alone and timed, after an untimed pass over the same queries: the JVM compiles
    Lucene's scoring loops as it goes, and a short warm-up left later rows of the table faster than earlier
    ones (BM25's first)."""
    for text in texts:
        searcher.search(text, k=hits)
    run, seconds = {}, []
    for qid, text in zip(qids, texts):
        start = time.perf_counter()
        found = searcher.search(text, k=hits)
        seconds.append(time.perf_counter() - start)
        run[qid] = {h.docid: float(h.score) for h in found}
    return run, seconds


WARM_UP = ("warm-up query one", "a second warm-up query", "and a third one")
"""Encoded before the timed queries (first calls allocate and build kernels); never the measured texts, which a
query encoder would then answer from its cache."""


def time_query_side(encoder, index: str, qids: list[str], texts: list[str],
                    hits: int) -> tuple[list[dict], list[float], dict, list[float]]:
    """What ``pyserini.search.lucene --impact`` does per query, timed apart: each query encoded alone by
    ``encoder`` (any Pyserini query encoder), then ``index`` searched with the vectors (after an
    untimed pass). The searcher is built with ``encoder`` itself first, so a CSPLADE encoder checks the index's
    model and takes its idf. Returns the vectors, encode seconds, the run and search seconds."""
    from pyserini.search.lucene import LuceneImpactSearcher

    from csplade_pyserini.search import PrecomputedQueries

    searcher = LuceneImpactSearcher(index, encoder)
    for text in WARM_UP:
        encoder.encode(text)
    vectors, encode_s = [], []
    for text in texts:
        begin = time.perf_counter()
        vectors.append(encoder.encode(text))
        encode_s.append(time.perf_counter() - begin)
    searcher.query_encoder = PrecomputedQueries(dict(zip(texts, vectors)))
    run, search_s = timed_search(searcher, qids, texts, hits)
    searcher.close()
    return vectors, encode_s, run, search_s


def splade_row(model_dir: Path, index: str, qids: list[str], texts: list[str], topics: str, measures: list,
               hits: int) -> dict:
    """The splade-tiny baseline's query side, timed the same way: Pyserini's own ``SpladeQueryEncoder`` (a
    4-layer BERT) at batch 1, then its own impact index."""
    from csplade_pyserini.baselines import splade_query_encoder
    from csplade_pyserini.evaluate.measures import evaluate_run

    reset_peak_rss()
    start = time.perf_counter()
    encoder = splade_query_encoder(model_dir)
    load_s = time.perf_counter() - start
    vectors, encode_s, run, search_s = time_query_side(encoder, index, qids, texts, hits)
    scores, per_query = evaluate_run(run, topics, measures, per_query=True)
    return {"system": "splade-tiny (Pyserini SpladeQueryEncoder, its own index)", "load_s": load_s,
            "encode_ms": _ms(encode_s), "search_ms": _ms(search_s),
            "total_ms": _ms([e + s for e, s in zip(encode_s, search_s)]),
            "terms_per_query": statistics.fmean(len(v) for v in vectors), "term_jaccard_vs_fp32": None,
            "model_mb": model_bytes(encoder.model) / 2**20, "peak_rss_mb": peak_rss_mb(), "docs_per_s": None,
            "scores": scores, "per_query": per_query}


def _paired(reference: dict, row: dict, measure: str = "nDCG@10") -> dict:
    """The paired comparison of ``row`` against ``reference`` on ``measure`` (mean change, 95% CI, p)."""
    return paired_comparison({q: v[measure] for q, v in reference["per_query"].items()},
                             {q: v[measure] for q, v in row["per_query"].items()}).as_dict()


def plot(rows: list[dict], path: Path, topics: str) -> None:
    """nDCG@10 against total per-query time (log scale), one point per query side and BM25."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import NullFormatter, ScalarFormatter

    fig, ax = plt.subplots(figsize=(8.4, 4.4))
    markers = "osD^vP*Xhp<>"
    for number, row in enumerate(rows):
        x, y = row["total_ms"]["mean"], row["scores"]["nDCG@10"]
        name = row["system"].replace("csplade query encoder, ", "").split(" (")[0]
        ax.scatter([x], [y], s=45, marker=markers[number % len(markers)], label=name)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ticks = [t for t in (5, 10, 15, 20, 30, 50, 70, 100, 150, 200, 300) if
             min(r["total_ms"]["mean"] for r in rows) * 0.8 <= t <= max(r["total_ms"]["mean"] for r in rows) * 1.2]
    ax.set_xticks(ticks)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    ax.set_xlabel("ms per query at batch 1 (encoding + Lucene search), log scale")
    ax.set_ylabel(f"nDCG@10 ({topics})")
    ax.set_title("Query side: effectiveness against latency")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.query_latency", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="csplade", help="encoder spec whose index is searched")
    parser.add_argument("--index", default="index/scifact.csplade",
                        help="its impact index (the pipeline builds it)")
    parser.add_argument("--bm25-index", default="index/scifact.bm25/lucene")
    parser.add_argument("--splade-index", default="index/scifact.splade-tiny",
                        help="splade-tiny's impact index (the pipeline builds it); its row is skipped when absent")
    parser.add_argument("--topics", default="beir-v1.0.0-scifact.test")
    parser.add_argument("--hits", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (Lucene searches one query at a time)")
    parser.add_argument("--name", default="bench-latency")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="comma-separated query sides (card overrides), measured in this order")
    parser.add_argument("--docs", type=int, default=32, help="documents for the throughput column (0: skip)")
    args = parser.parse_args(argv)
    threads = set_threads(args.threads)
    load_start = os.getloadavg()[0]  # printed with the results: another busy process shows there

    from pyserini.search.lucene import LuceneSearcher

    from csplade_pyserini.datasets import load_topics
    from csplade_pyserini.evaluate.measures import evaluate_run, measures_for
    from csplade_pyserini.integration.encoders import CspladeQueryEncoder

    topics = load_topics(args.topics)
    qids, texts = list(topics), [topics[q] for q in topics]
    measures = measures_for(args.topics, ["nDCG@10", "R@100"])
    rows = []
    bm25 = LuceneSearcher(args.bm25_index)
    bm25.set_bm25(0.9, 0.4)
    run, seconds = timed_search(bm25, qids, texts, args.hits)
    scores, per_query = evaluate_run(run, args.topics, measures, per_query=True)
    rows.append({"system": "BM25 (Pyserini, flat)", "encode_ms": None, "search_ms": _ms(seconds),
                 "total_ms": _ms(seconds), "scores": scores, "per_query": per_query})
    reference = None
    import gc

    from csplade_pyserini.datasets import read_corpus
    from csplade_pyserini.model import encoder as encoder_module

    corpus = shared_path("data", "beir", "scifact")
    sample = [d.contents for _, d in zip(range(args.docs), read_corpus(corpus))] if args.docs and corpus else []
    for variant in args.variants.split(","):
        spec = f"{args.model},{variant}"
        encoder_module._CACHE.clear()
        gc.collect()
        reset_peak_rss()
        start = time.perf_counter()
        encoder = CspladeQueryEncoder(spec)
        load_s = time.perf_counter() - start
        vectors, encode_s, run, search_s = time_query_side(encoder, args.index, qids, texts, args.hits)
        docs_per_s = None
        if sample and not (encoder.model.card.is_words and encoder.model.card.runtime != "torch"):
            begin = time.perf_counter()
            encoder.model.encode_documents(sample)
            docs_per_s = len(sample) / (time.perf_counter() - begin)
        size_mb = query_model_mb(encoder.model)
        if reference is None:
            reference = vectors
        jaccard = [len(a.keys() & b.keys()) / max(1, len(a.keys() | b.keys())) for a, b in zip(reference, vectors)]
        rows.append({"system": f"csplade query encoder, {variant}", "spec": spec, "load_s": load_s,
                     "encode_ms": _ms(encode_s), "search_ms": _ms(search_s),
                     "total_ms": _ms([e + s for e, s in zip(encode_s, search_s)]),
                     "terms_per_query": statistics.fmean(len(v) for v in vectors),
                     "term_jaccard_vs_fp32": statistics.fmean(jaccard), "model_mb": size_mb,
                     "peak_rss_mb": peak_rss_mb(), "docs_per_s": docs_per_s,
                     **dict(zip(("scores", "per_query"), evaluate_run(run, args.topics, measures, per_query=True)))})
        rows[-1]["vs_fp32"] = _paired(rows[1], rows[-1])
        logger.info("%s: %s", variant, rows[-1]["scores"])
        del encoder
    splade_model = shared_path("models", "splade-tiny")
    if splade_model is not None and Path(args.splade_index).is_dir():
        rows.append(splade_row(splade_model, args.splade_index, qids, texts, args.topics, measures, args.hits))
    else:
        logger.warning("no splade-tiny row: %s or %s missing", splade_model, args.splade_index)
    result = {"index": args.index, "topics": args.topics, "queries": len(qids), "torch_threads": threads,
              "measured": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "rows": rows}
    fp32 = rows[1]["encode_ms"]["mean"]
    lines = [f"# Batch-1 query latency ({args.topics}, {len(qids)} queries, {threads} torch threads, measured "
             f"{result['measured']}; 1-minute load average {load_start:.2f} at the start, {os.getloadavg()[0]:.2f} "
             "at the end)", "",
             "| system | encode ms/q (mean / median / p90) | search ms/q (mean) | total ms/q (mean) | vs BM25 | "
             "encode speed-up vs fp32 | nDCG@10 | change vs fp32 [95% CI], p | R@100 | terms/q | term Jaccard vs fp32 | "
             "model MB | peak RSS MB | docs/s (batched) | load s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    bm25_total = rows[0]["total_ms"]["mean"]
    for row in rows:
        enc = row["encode_ms"]
        lines.append("| " + " | ".join([
            row["system"], "-" if enc is None else f"{enc['mean']:.1f} / {enc['median']:.1f} / {enc['p90']:.1f}",
            f"{row['search_ms']['mean']:.2f}", f"{row['total_ms']['mean']:.1f}",
            f"{row['total_ms']['mean'] / bm25_total:.1f}x", "-" if enc is None else f"{fp32 / enc['mean']:.2f}x",
            f"{row['scores']['nDCG@10']:.4f}",
            PairedComparison(**row["vs_fp32"]).describe() if "vs_fp32" in row else "-",
            f"{row['scores']['R@100']:.4f}",
            "-" if enc is None else f"{row['terms_per_query']:.1f}",
            "-" if row.get("term_jaccard_vs_fp32") is None else f"{row['term_jaccard_vs_fp32']:.3f}",
            "-" if enc is None else f"{row['model_mb']:.0f}",
            "-" if row.get("peak_rss_mb") is None else f"{row['peak_rss_mb']:.0f}",
            "-" if row.get("docs_per_s") is None else f"{row['docs_per_s']:.2f}",
            "-" if enc is None else f"{row['load_s']:.1f}"]) + " |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    plot(rows, RESULTS / f"{args.name}.png", args.topics)
    lines += ["", "Change vs fp32: the mean per-query nDCG@10 difference, its 95% bootstrap interval and the p-value "
              "of a paired randomisation test (evaluate/significance.py); an interval that holds 0 is not a "
              "measurable change on these queries.", "", "Model MB: what encodes a query, as stored (the ONNX graph file; PyTorch's quantized tensors and packed "
              "parameters; the LM head stays float). Peak RSS: the whole process's high-water mark while the variant loaded, encoded the "
              "queries and the document sample (it includes the BM25 searcher and the JVM). docs/s: "
              f"{len(sample)} SciFact documents encoded in batches by the same model.", "",
              f"![effectiveness against latency]({args.name}.png)"]
    write_report(args.name, result, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    run_cli(main)
