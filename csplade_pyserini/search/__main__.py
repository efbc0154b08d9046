"""Search a CSPLADE impact index with Anserini, writing a TREC run.

    python -m csplade_pyserini.search --index index/scifact.csplade --topics beir-v1.0.0-scifact.test \
        --encoder csplade --output runs/run.scifact.csplade.txt --hits 1000

Same flags as ``python -m pyserini.search.lucene --impact``; queries are encoded in sorted batches
first (one model call per batch instead of per query), then searched with Lucene's threads.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from tqdm import tqdm

from csplade_pyserini.cli import add_model_args, run_cli, set_threads
from csplade_pyserini.datasets import load_topics
from csplade_pyserini.search import SearchStats, search, write_trec_run
from csplade_pyserini.seismic_search import SeismicSettings

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m csplade_pyserini.search", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", required=True)
    parser.add_argument("--topics", required=True, help="Pyserini topics name or a qid<TAB>text / queries.jsonl file")
    parser.add_argument("--output", required=True, help="TREC run file")
    add_model_args(parser)
    parser.add_argument("--hits", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--min-idf", type=float, default=0.0)
    parser.add_argument("--run-tag", default="csplade")
    engine = parser.add_argument_group("engine", "Lucene impact search (Anserini), or Seismic over the vectors")
    engine.add_argument("--engine", choices=("lucene", "seismic"), default="lucene",
                        help="seismic: --index is the JsonVectorCollection folder (pip install pyseismic-lsr)")
    engine.add_argument("--seismic-exact", action="store_true", help="no approximation: Lucene's exact scores")
    defaults = SeismicSettings()
    for name, kind, help_text in (("n_postings", int, "postings kept per term (average)"),
                                  ("summary_energy", float, "energy each block summary keeps"),
                                  ("query_cut", int, "query terms used (largest first)"),
                                  ("heap_factor", float, "block skipping slack (1 = only provably useless blocks)")):
        engine.add_argument(f"--seismic-{name.replace('_', '-')}", type=kind, default=getattr(defaults, name),
                            help=help_text)
    return parser


def check_arguments(args, topics: dict[str, str]) -> None:
    """Everything that can be checked before a model or the JVM loads (seconds of start-up saved)."""
    from csplade_pyserini.errors import InputError

    if args.hits < 1:
        raise InputError(f"--hits must be at least 1, got {args.hits}", field="hits")
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {args.batch_size}", field="batch_size")
    if not topics:
        raise InputError("the topics hold no query", path=args.topics, field="topics")
    if not Path(args.index).is_dir():
        raise InputError("index folder does not exist", path=args.index, field="index")


def search_seismic(args, topics: dict[str, str], threads: int) -> SearchStats:
    """``--engine seismic``: the vector folder into a Seismic index, the queries encoded as for Lucene."""
    from csplade_pyserini import seismic_search
    from csplade_pyserini.errors import InputError
    from csplade_pyserini.integration.encoders import query_encoder
    from csplade_pyserini.vectors.jsonvec import read_info, vector_files

    if not vector_files(args.index):
        raise InputError("--engine seismic searches a JsonVectorCollection folder (what the encoders write), "
                         "not a Lucene index", path=args.index, field="index")
    settings = SeismicSettings(n_postings=args.seismic_n_postings, summary_energy=args.seismic_summary_energy,
                               query_cut=args.seismic_query_cut, heap_factor=args.seismic_heap_factor)
    collection = seismic_search.build(args.index, settings, exact=args.seismic_exact, threads=threads)
    encoder = query_encoder(args.encoder, device=args.device)
    encoder.attach_index(args.index, collection.idf, info=read_info(args.index))
    qids = list(topics)
    start = time.perf_counter()
    with tqdm(total=len(qids), desc="encode queries", unit="q", dynamic_ncols=True) as bar:
        vectors = encoder.encode_batch([topics[q] for q in qids], progress=bar)
    encode_seconds = time.perf_counter() - start
    results, seconds = seismic_search.search(collection, qids, vectors, args.hits)
    write_trec_run(results, args.output, args.run_tag)
    return SearchStats(len(qids), encode_seconds, sum(seconds), sum(len(v) for v in vectors) / max(1, len(vectors)),
                       extra={"build_seconds": collection.build_seconds})


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    topics = load_topics(args.topics)
    check_arguments(args, topics)
    threads = set_threads(args.threads)
    if args.engine == "seismic":
        stats = search_seismic(args, topics, threads)
        logger.info("%d queries (Seismic%s, index built in %.1f s): encoding %.1f ms/q, search %.2f ms/q; run written "
                    "to %s", stats.queries, ", exact" if args.seismic_exact else "", stats.extra["build_seconds"],
                    stats.encode_ms_per_query, stats.search_ms_per_query, args.output)
        return 0
    _, stats = search(args.index, topics, args.encoder, hits=args.hits, threads=threads, batch_size=args.batch_size,
                      min_idf=args.min_idf, device=args.device, output=args.output, tag=args.run_tag)
    logger.info("%d queries: encoding %.1f ms/q, search %.1f ms/q, %.1f terms/q; run written to %s", stats.queries,
                stats.encode_ms_per_query, stats.search_ms_per_query, stats.avg_query_terms, args.output)
    return 0


if __name__ == "__main__":
    run_cli(main)
