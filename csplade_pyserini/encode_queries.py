"""Encode topics once into a pre-encoded query file in Pyserini's format, so runs repeat without the model.

    python -m csplade_pyserini.encode_queries --topics beir-v1.0.0-scifact.test --encoder csplade \
        --output encode/queries.scifact.csplade.jsonl
    python -m pyserini.search.lucene --index index/scifact.csplade --topics beir-v1.0.0-scifact.test \
        --encoder encode/queries.scifact.csplade.jsonl --impact --output run.txt --hits 1000

Each line is ``{"id": qid, "contents": query text, "vector": {term: int}}``: the records Pyserini's own
``CachedDataQueryEncoder`` reads when ``--encoder`` names a ``.jsonl`` file (it looks vectors up by the
query text). Beside the file, ``FILE.info.json`` records the model that encoded it (card, term
vocabulary, weight fingerprints); the start-up hook and ``csplade_pyserini.search`` compare it with the
index's model, exactly as they do for a live query encoder.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from tqdm import tqdm

from csplade_pyserini.atomic import atomic_file
from csplade_pyserini.cli import add_model_args, run_cli, set_threads
from csplade_pyserini.datasets import load_topics
from csplade_pyserini.errors import InputError
from csplade_pyserini.vectors.jsonvec import vector_line
from csplade_pyserini.vectors.queries import queries_info_path

logger = logging.getLogger(__name__)


def encode_queries(topics: dict[str, str], encoder: str, output: str | Path, device: str = "cpu") -> dict:
    """Write ``output`` (and its info file) atomically; returns the info (model, queries, seconds)."""
    from csplade_pyserini.model.encoder import CspladeModel

    model = CspladeModel.from_spec(encoder, device=device)
    if model.card.query_side != "model":
        raise InputError(f"query_side {model.card.query_side} vectors depend on the searched index (its idf); they "
                         "are computed at search time, not pre-encoded", field="query_side")
    qids = list(topics)
    texts = [topics[q].strip() for q in qids]  # Pyserini looks vectors up by the stripped text
    start = time.perf_counter()
    with tqdm(total=len(texts), desc="encode queries", unit="q", dynamic_ncols=True) as bar:
        vectors = model.encode(texts, kind="query", progress=bar)
    seconds = time.perf_counter() - start
    info = {**model.info(), "encoder": encoder, "queries": len(qids), "encode_seconds": round(seconds, 3)}
    with atomic_file(output) as handle:
        for qid, text, vector in zip(qids, texts, vectors):
            handle.write(vector_line(qid, text, vector))
    with atomic_file(queries_info_path(output)) as handle:
        json.dump(info, handle, indent=2, sort_keys=True)
        handle.write("\n")
    return info


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m csplade_pyserini.encode_queries", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--topics", required=True, help="Pyserini topics name or a qid<TAB>text / queries.jsonl file")
    parser.add_argument("--output", required=True, help="pre-encoded query file (.jsonl)")
    add_model_args(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.output.endswith(".jsonl"):
        raise InputError("Pyserini reads a pre-encoded query file only when its name ends in .jsonl",
                         path=args.output, field="output")
    topics = load_topics(args.topics)
    if not topics:
        raise InputError("the topics hold no query", path=args.topics, field="topics")
    set_threads(args.threads)
    info = encode_queries(topics, args.encoder, args.output, device=args.device)
    logger.info("%d queries encoded in %.1f s into %s", info["queries"], info["encode_seconds"], args.output)
    return 0


if __name__ == "__main__":
    run_cli(main)
