"""Lion's comparison on the CPU budget: one backbone trained as a sparse and as a dense retriever.

    python -m benchmarks.dense_vs_sparse        # make bench-dense (after make train)

1. Both models are trained by the same command (``train contrastive``) from twin recipes that differ only
   in the representation (``configs/cpu-smollm2-lora-{sparse,dense}.yaml``): SmolLM2-135M causal, the
   bottom 28 layers read from the CPU recipe's activation cache, LoRA on the top 2, the same data, teacher,
   objective, steps and batch. Each training run is a measured process (wall time, peak RSS).
2. Each model's best validated checkpoint is scored on SciFact test through a real engine: its document
   vectors come from the same cache through its own top layers (the frozen bottom is identical, so they
   equal a full forward up to bf16 rounding; this saves a full corpus encode per model), queries are
   encoded live. Sparse: integer impacts -> JsonVectorCollection -> Anserini impact index ->
   ``LuceneImpactSearcher``. Dense: float32 vectors -> FAISS ``IndexFlatIP`` (the layout
   ``pyserini.encode --to-faiss`` writes) -> Pyserini's ``FaissSearcher``. Runs scored by ir-measures.
3. Index size on disk, and encoding speed of a full forward (backbone included) on a fixed sample of
   documents, in this process, one model at a time.
4. ``--dl19-pool``: both twins zero-shot on the DL19 pool (14,581 passages, 43 judged queries), every
   passage encoded by the whole model (no cache covers this corpus): the sparse twin through the main
   job's pipeline (encode, Anserini impact index, Lucene search), the dense twin into a FAISS index
   searched by Pyserini's ``FaissSearcher``.

Writes ``eval/results/bench-dense-vs-sparse.{md,json}``. Steps whose outputs exist are reused.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import time
from pathlib import Path

import torch

from csplade_pyserini.atomic import atomic_file
from benchmarks.measured import run_measured
from benchmarks.report import RESULTS, write_report
from csplade_pyserini.cli import run_cli, set_threads
from csplade_pyserini.errors import InputError
from csplade_pyserini.paths import PACKAGE_DIR, RUNS_DIR, shared_path

logger = logging.getLogger(__name__)
REPRESENTATIONS = ("sparse", "dense")
FROZEN = 28  # the recipes' --frozen-layers: the layer whose input the cache holds


def recipe_config(representation: str) -> Path:
    return PACKAGE_DIR / "configs" / f"cpu-smollm2-lora-{representation}.yaml"


def train(args, representation: str) -> dict:
    """Train one twin where its model is missing; returns the measured process (or the stored one)."""
    out = Path(args.output_dir) / representation
    record = out / "benchmark-train.json"
    if (out / "final").exists():
        return json.loads(record.read_text()) if record.exists() else {}
    recipe = Path(args.recipe_dir)
    needed = [recipe / "negatives.bm25.trec", recipe / "teacher.txt", recipe / "cache" / "causal-docs"]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        raise InputError(f"the CPU recipe's outputs are missing ({', '.join(missing)}): run make train first",
                         path=recipe)
    command = ["-m", "csplade_pyserini.train", "contrastive", "--config", str(recipe_config(representation)),
               "--data", args.data, "--run", str(recipe / "negatives.bm25.trec"), "--teacher-scores",
               str(recipe / "teacher.txt"), "--cache-dir", str(recipe / "cache"), "--output-dir", str(out),
               "--threads", str(args.threads)]
    logger.info("training the %s twin: python %s", representation, " ".join(command))
    proc = run_measured(command)
    if proc["returncode"] != 0:
        raise SystemExit(f"training the {representation} model failed (exit {proc['returncode']})")
    proc["measured"] = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
    with atomic_file(record) as handle:
        json.dump(proc, handle, indent=2)
    return proc


def checkpoint(args, representation: str) -> Path:
    out = Path(args.output_dir) / representation
    return out / "best" if (out / "best").exists() else out / "final"


def test_vectors(model, args, qids: list[str], queries: dict[str, str], docids: list[str]):
    """Query vectors (live) and document vectors (cache of the frozen bottom, then the model's top layers),
    as the training's validation computes them: sparse COO ``[n, vocab]`` (top-k weights) or dense."""
    from csplade_pyserini.datasets import read_corpus
    from csplade_pyserini.train.cache import ActivationCache, texts_fingerprint
    from csplade_pyserini.train.collator import CacheSource, TextSource
    from csplade_pyserini.train.model import SparseBiEncoder
    from csplade_pyserini.train.validation import RetrievalValidation

    folder = Path(args.recipe_dir) / "cache" / "causal-docs"
    meta = json.loads((folder / "cache.json").read_text(encoding="utf-8"))
    corpus = {d.docid: d.contents for d in read_corpus(Path(args.data))}
    if meta.get("layer") != FROZEN or meta.get("texts") != texts_fingerprint([corpus[d] for d in corpus]):
        raise InputError(f"this cache does not hold layer {FROZEN}'s input for {args.data}'s corpus",
                         path=folder / "cache.json")
    if list(corpus) != docids:
        raise InputError("the corpus order changed since the cache was built", path=args.data)
    source = CacheSource(ActivationCache(folder, meta), {d: i for i, d in enumerate(docids)},
                         model.encoder.tokenizer.pad_token_id or 0)
    bi = SparseBiEncoder(model.encoder, start_layer=FROZEN, use_pooled=False).eval()
    validation = RetrievalValidation(qids, docids, {}, TextSource(model.encoder, queries, "query"), source)
    with torch.inference_mode():
        q = validation.encode(bi, validation.queries, qids, "query", "cpu")
        d = validation.encode(bi, validation.docs, docids, "doc", "cpu")
    return q, d


def search_sparse(model, spec: str, q, d, qids, queries, docids, work: Path, threads: int) -> tuple[dict, float]:
    """Integer impacts of ``d`` into an Anserini impact index; the live query encoder searches it."""
    from csplade_pyserini.index import build_index, folder_size
    from csplade_pyserini.search import search
    from csplade_pyserini.vectors.jsonvec import JsonVectorWriter
    from csplade_pyserini.vectors.quantize import quantize_tensor

    vectors, index = work / "sparse-vectors", work / "sparse-index"
    if not index.exists():
        d = d.coalesce()
        rows, cols = d.indices()
        values = quantize_tensor(d.values(), model.card.quant_scale)
        terms = model.term_map.terms
        per_doc: list[dict[str, int]] = [{} for _ in docids]
        for r, c, v in zip(rows.tolist(), cols.tolist(), values.tolist()):
            if v > 0 and terms[c] is not None:
                per_doc[r][terms[c]] = int(v)
        with JsonVectorWriter(vectors, info=model.info()) as writer:
            for docid, vector in zip(docids, per_doc):
                writer.write(docid, "", vector)
        build_index(vectors, index, threads=threads)
    results, _ = search(index, {q: queries[q] for q in qids}, spec, hits=1000, threads=threads)
    return {q: dict(hits) for q, hits in results.items()}, folder_size(index) / 2**20


def search_dense(model, spec: str, d, qids, queries, docids, work: Path) -> tuple[dict, float]:
    """``d`` into a FAISS inner-product index laid out as ``pyserini.encode --to-faiss`` writes it;
    Pyserini's FaissSearcher searches it with the live query encoder."""
    from pyserini.search.faiss import FaissSearcher

    from csplade_pyserini.index import folder_size, write_faiss_index
    from csplade_pyserini.integration.encoders import CspladeDenseQueryEncoder

    index_dir = work / "dense-faiss"
    if not (index_dir / "index").exists():
        write_faiss_index((d.to_dense() if d.is_sparse else d).float().numpy(), list(docids), index_dir, model.info())
    searcher = FaissSearcher(str(index_dir), CspladeDenseQueryEncoder(spec))
    hits = searcher.batch_search([queries[q] for q in qids], qids, k=1000, threads=1)
    return {q: {h.docid: float(h.score) for h in hits[q]} for q in qids}, folder_size(index_dir) / 2**20


def encoding_speed(model, texts: list[str]) -> dict:
    """Documents per second of a full forward (backbone included) on ``texts``, with the machine's 1-minute
    load average before and after (another busy process shows there: it halves a 2-thread job's speed)."""
    import os

    before = os.getloadavg()[0]
    model.encode_dense(texts[:8], "doc") if model.card.is_dense else model.encode(texts[:8], "doc")  # warm-up
    start = time.perf_counter()
    if model.card.is_dense:
        model.encode_dense(texts, "doc")
    else:
        model.encode(texts, "doc")
    return {"docs_per_s": round(len(texts) / (time.perf_counter() - start), 2),
            "load_before": round(before, 2), "load_after": round(os.getloadavg()[0], 2)}


def evaluate(args, representation: str, qids, queries, qrels, docids, sample: list[str]) -> dict:
    from csplade_pyserini.evaluate.measures import evaluate_run, measures_for
    from csplade_pyserini.model.encoder import CspladeModel

    path = checkpoint(args, representation)
    spec = f"{'csplade-dense' if representation == 'dense' else 'csplade'}:{path}"
    model = CspladeModel.from_spec(spec)
    work = Path(args.output_dir) / representation / "scifact-test"
    start = time.perf_counter()
    q, d = test_vectors(model, args, qids, queries, docids)
    vectors_s = time.perf_counter() - start
    start = time.perf_counter()
    if representation == "dense":
        run, size_mb = search_dense(model, spec, d, qids, queries, docids, work)
    else:
        run, size_mb = search_sparse(model, spec, q, d, qids, queries, docids, work, args.threads)
    search_s = time.perf_counter() - start
    scores = evaluate_run(run, qrels, measures_for("", ["nDCG@10", "R@100", "R@1000"]))
    card = json.loads((path / "csplade_card.json").read_text())
    notes = card.get("notes", {}).get("training", {})
    row = {"representation": representation, "checkpoint": str(path), "scores": scores, "index_mb": round(size_mb, 2),
           "doc_vectors_s": round(vectors_s, 1), "search_s": round(search_s, 1),
           "encoding": encoding_speed(model, sample),
           "validation_ndcg@10": notes.get("validation_ndcg@10"), "steps": notes.get("steps"),
           "dimensions_per_doc": (round(d._nnz() / d.shape[0], 1) if representation == "sparse" else d.shape[1])}
    logger.info("%s: %s", representation, row)
    return row


def dl19_pool_rows(args) -> list[dict]:
    """Both twins zero-shot on the DL19 pool with full-forward encoding (see the module docstring)."""
    from pyserini.search.faiss import FaissSearcher
    from tqdm import tqdm

    from csplade_pyserini.evaluate.measures import evaluate_run, measures_for
    from csplade_pyserini.integration.encoders import CspladeDenseQueryEncoder
    from csplade_pyserini.model.encoder import CspladeModel
    from csplade_pyserini.pipeline import load_task

    task = load_task("dl19-pool", None, None, None)
    measures = measures_for(task.topics_name, ["AP(rel=2)", "nDCG@10", "R(rel=2)@1000"])
    rows = []
    report = Path(args.output_dir) / "sparse" / "dl19-pool.json"
    if not report.exists():
        proc = run_measured(["-m", "csplade_pyserini.pipeline", "--collection", "dl19-pool", "--no-bm25", "--encoder",
                             f"csplade:{checkpoint(args, 'sparse')}", "--threads", str(args.threads), "--report",
                             str(report)])
        if proc["returncode"] != 0:
            raise SystemExit("the sparse twin's DL19-pool pipeline failed")
    row = json.loads(report.read_text())["rows"][0]
    rows.append({"representation": "sparse", "scores": evaluate_run(row["run"], task.topics_name, measures),
                 "docs_per_s": row.get("docs_per_s"), "index_mb": round(row["index_mb"], 2)})
    work = Path(args.output_dir) / "dense" / "dl19-pool"
    spec = f"csplade-dense:{checkpoint(args, 'dense')}"
    model = CspladeModel.from_spec(spec)
    if not (work / "index").exists():
        texts, docids = [d.contents for d in task.documents], [d.docid for d in task.documents]
        start = time.perf_counter()
        with tqdm(total=len(texts), desc="encode dl19-pool (dense)", unit="doc", dynamic_ncols=True) as bar:
            vectors = model.encode_dense(texts, "doc", progress=bar)
        seconds = time.perf_counter() - start
        from csplade_pyserini.index import write_faiss_index

        write_faiss_index(vectors, docids, work, model.info())
        (work / "encode.json").write_text(json.dumps({"seconds": seconds, "documents": len(texts)}))
    encoded = json.loads((work / "encode.json").read_text())
    searcher = FaissSearcher(str(work), CspladeDenseQueryEncoder(spec))
    qids = list(task.topics)
    hits = searcher.batch_search([task.topics[q] for q in qids], qids, k=1000, threads=1)
    run = {q: {h.docid: float(h.score) for h in hits[q]} for q in qids}
    from csplade_pyserini.index import folder_size

    rows.append({"representation": "dense", "scores": evaluate_run(run, task.topics_name, measures),
                 "docs_per_s": round(encoded["documents"] / encoded["seconds"], 2),
                 "index_mb": round(folder_size(work) / 2**20, 2)})
    return rows


def remeasure_speed(rows: list[dict], sample: list[str]) -> None:
    """``--speed-only``: measure the encoding speed again (models from the stored rows), keep the rest."""
    from csplade_pyserini.model.encoder import CspladeModel

    for row in rows:
        prefix = "csplade-dense" if row["representation"] == "dense" else "csplade"
        row["encoding"] = encoding_speed(CspladeModel.from_spec(f"{prefix}:{row['checkpoint']}", cache=False), sample)


def report_text(rows: list[dict], trained: dict[str, dict], args, threads: int) -> str:
    lines = ["# Sparse vs dense on one backbone (Lion's comparison, CPU budget)", "",
             f"SmolLM2-135M causal, LoRA r16 on the top 2 layers above the CPU recipe's layer-{FROZEN} cache, the same "
             "data, teacher, objective (InfoNCE + KL to splade-tiny), 120 steps of 8 queries x 4 documents; "
             "configs/cpu-smollm2-lora-{sparse,dense}.yaml. SciFact test (300 queries, 5,183 documents), each "
             "model's best checkpoint on 100 held-out training queries. Sparse: Anserini impact index + "
             "LuceneImpactSearcher; dense: FAISS IndexFlatIP + Pyserini FaissSearcher. "
             f"{threads} torch threads. Written {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC.",
             "", "| model | nDCG@10 | R@100 | R@1000 | dims per doc | index MB | encode docs/s (full forward) | "
             "load avg (before / after) | training s | training peak MB | validation nDCG@10 by step |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        proc = trained.get(row["representation"], {})
        curve = ", ".join(f"{s}: {v}" for s, v in (row["validation_ndcg@10"] or []))
        lines.append(f"| {row['representation']} | {row['scores']['nDCG@10']:.4f} | {row['scores']['R@100']:.4f} | "
                     f"{row['scores']['R@1000']:.4f} | {row['dimensions_per_doc']} | {row['index_mb']} | "
                     f"{row['encoding']['docs_per_s']} | {row['encoding']['load_before']} / "
                     f"{row['encoding']['load_after']} | {round(proc['wall_s']) if proc.get('wall_s') else '-'} | "
                     f"{round(proc['peak_rss_mb']) if proc.get('peak_rss_mb') else '-'} | {curve} |")
    dl19 = getattr(args, "dl19_rows", None)
    if dl19:
        lines += ["", "## DL19 pool, zero-shot (14,581 passages, 43 judged queries; every passage encoded by the "
                  "whole model)", "", "| model | AP(rel=2) | nDCG@10 | R(rel=2)@1000 | index MB | encode docs/s |",
                  "|---|---|---|---|---|---|"]
        for row in dl19:
            sc = row["scores"]
            lines.append(f"| {row['representation']} | {sc['AP(rel=2)']:.4f} | {sc['nDCG@10']:.4f} | "
                         f"{sc['R(rel=2)@1000']:.4f} | {row['index_mb']} | {row['docs_per_s']} |")
    lines += ["", f"Encoding speed: the first {args.sample} SciFact documents through the whole model (backbone "
              "included), in this process, one model at a time, after an 8-document warm-up; the machine's "
              "1-minute load average before and after shows whether anything else ran (2 cores: a load near 2 "
              "is this job alone). Training s is the training process's wall time. Document vectors for the test "
              "runs came from the activation cache (see the module docstring)."]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.dense_vs_sparse", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(shared_path("data", "beir", "scifact")), help="SciFact BEIR folder")
    parser.add_argument("--recipe-dir", default=str(RUNS_DIR / "train" / "cpu-recipe"),
                        help="the CPU recipe's run (negatives, teacher scores, activation cache)")
    parser.add_argument("--output-dir", default=str(RUNS_DIR / "train" / "lion"), help="where the twins are trained")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sample", type=int, default=256, help="documents for the encoding-speed measurement")
    parser.add_argument("--name", default="bench-dense-vs-sparse")
    parser.add_argument("--dl19-pool", action="store_true",
                        help="also run both twins zero-shot on the DL19 pool (full-forward encoding: about an hour)")
    parser.add_argument("--speed-only", action="store_true",
                        help="keep the stored results and measure the encoding speed again (run it alone)")
    return parser


def main(argv: list[str] | None = None) -> int:
    from csplade_pyserini.datasets import beir_file, load_qrels, read_corpus, read_queries

    args = build_parser().parse_args(argv)
    threads = set_threads(args.threads)
    stored_path = RESULTS / f"{args.name}.json"
    stored = json.loads(stored_path.read_text(encoding="utf-8")) if stored_path.exists() else {}
    args.dl19_rows = stored.get("dl19_pool")
    if args.speed_only:
        corpus = list(read_corpus(Path(args.data)))
        remeasure_speed(stored["rows"], [d.contents for d in corpus[:args.sample]])
        return write_results(stored["rows"], stored["training"], args, threads)
    if args.dl19_pool and stored.get("rows"):  # the SciFact rows exist: add the DL19 pool's
        args.dl19_rows = dl19_pool_rows(args)
        return write_results(stored["rows"], stored["training"], args, threads)
    trained = {rep: train(args, rep) for rep in REPRESENTATIONS}
    qrels = load_qrels(beir_file(Path(args.data), "qrels", "test"))
    texts = read_queries(beir_file(Path(args.data), "queries"))
    qids = sorted(q for q in qrels if q in texts)
    corpus = list(read_corpus(Path(args.data)))
    docids = [d.docid for d in corpus]
    sample = [d.contents for d in corpus[:args.sample]]
    rows = [evaluate(args, rep, qids, {q: texts[q] for q in qids}, qrels, docids, sample) for rep in REPRESENTATIONS]
    if args.dl19_pool:
        args.dl19_rows = dl19_pool_rows(args)
    return write_results(rows, trained, args, threads)


def write_results(rows: list[dict], trained: dict, args, threads: int) -> int:
    data = {"rows": rows, "training": trained, "threads": threads, "dl19_pool": getattr(args, "dl19_rows", None),
            "measured": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M")}
    write_report(args.name, data, report_text(rows, trained, args, threads))
    return 0


if __name__ == "__main__":
    run_cli(main)
