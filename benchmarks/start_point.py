"""Test scores of a frozen-backbone run at its start (step 0) and its end, from the run's activation cache.

    python -m benchmarks.start_point --checkpoint runs/train/cpu-recipe/pure/best \
        --cache runs/train/cpu-recipe/cache/echo-docs --data ../shared/data/beir/scifact

A run whose backbone is frozen (the pure CSPLADE CPU path trains the logit bias and a temperature) starts
from a logit bias calibrated to ``bias_target_df`` on a seeded sample of the corpus; the training recipe
cached every document's max-pooled LM-head logits, and scale and bias commute with the max, so both the
starting model and the trained one get their document vectors from that cache in seconds instead of
re-encoding the corpus (45 min for echo on 2 cores). Queries are encoded live. Every test query is ranked
against the whole corpus by exact sparse dot products of the integer impacts the index would hold, and
scored with ir-measures: one evaluator for both models, so the difference between the rows is the
training. The trained model's row can be checked against the full pipeline's (Anserini) figure.
Writes ``eval/results/NAME.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import random
import time
from pathlib import Path

import torch

from benchmarks.report import write_report
from csplade_pyserini.cli import run_cli, set_threads
from csplade_pyserini.errors import InputError
from csplade_pyserini.paths import shared_path

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def logit_bias(encoder, bias: torch.Tensor | None):
    """The encoder with ``bias`` in place of its own logit bias while the context is open."""
    saved = encoder.logit_bias
    encoder.logit_bias = None if bias is None else torch.nn.Parameter(bias.clone(), requires_grad=False)
    try:
        yield encoder
    finally:
        encoder.logit_bias = saved


@torch.inference_mode()
def document_impacts(pooled: torch.Tensor, encoder, top_k: int | None, scale: float, batch: int = 256) -> torch.Tensor:
    """Integer impacts (as the index holds them) of cached max-pooled logits, through the encoder's own
    LM-head channel (scale, bias, activation, channel weight, special tokens): dense ``[documents, vocab]``
    float32 (SciFact: 1 GB)."""
    from csplade_pyserini.model.pooling import keep_top_k
    from csplade_pyserini.vectors.quantize import quantize_tensor

    out = torch.zeros(pooled.shape[0], pooled.shape[1])
    for start in range(0, pooled.shape[0], batch):
        weights = encoder.combine(pooled[start:start + batch].float(), None, None, None)
        out[start:start + batch] = quantize_tensor(keep_top_k(weights, top_k), scale).float()
    return out


def query_impacts(model, texts: list[str]) -> torch.Tensor:
    """Integer query impacts, dense ``[queries, vocab]``."""
    from csplade_pyserini.vectors.quantize import quantize_tensor

    out = torch.zeros(len(texts), model.encoder.vocab)
    for i, (ids, weights) in enumerate(model.encode_weights(texts, "query")):
        out[i, ids] = quantize_tensor(weights, model.card.quant_scale).float()
    return out


def rank(queries: torch.Tensor, docs: torch.Tensor, qids: list[str], docids: list[str], depth: int = 1000
         ) -> dict[str, dict[str, float]]:
    scores = (docs @ queries.T).T  # [queries, docs]
    top = scores.topk(min(depth, scores.shape[1]), dim=1)
    return {q: {docids[j]: float(s) for s, j in zip(top.values[i].tolist(), top.indices[i].tolist()) if s > 0}
            for i, q in enumerate(qids)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.start_point", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="runs/train/cpu-recipe/pure/best", help="the trained frozen-backbone run")
    parser.add_argument("--cache", default="runs/train/cpu-recipe/cache/echo-docs", help="its document activation cache")
    parser.add_argument("--data", default=str(shared_path("data", "beir", "scifact")), help="BEIR folder (corpus, test)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--name", default="bench-training-start", help="results file stem")
    parser.add_argument("--untrained", default=None, metavar="SPEC",
                        help="also score this bare backbone (no bias), e.g. csplade:smollm2,variant=causal, from "
                             "--untrained-cache")
    parser.add_argument("--untrained-cache", default="runs/train/cpu-recipe/cache/causal-docs")
    args = parser.parse_args(argv)
    threads = set_threads(args.threads)

    from csplade_pyserini.datasets import beir_file, load_qrels, read_corpus, read_queries
    from csplade_pyserini.evaluate.measures import evaluate_run, measures_for
    from csplade_pyserini.model.encoder import CspladeModel
    from csplade_pyserini.train.cache import ActivationCache, texts_fingerprint
    from csplade_pyserini.train.model import calibrate_bias_to_df

    start_time = time.perf_counter()
    model = CspladeModel.from_spec(f"csplade:{args.checkpoint}")
    card, notes = model.card, model.card.notes.get("training", {})
    if card.adapter or card.lexical_head or notes.get("frozen_layers") != "all" or notes.get("bias_target_df") is None:
        raise InputError("needs a run with a frozen backbone, no adapter or lexical head, and a calibrated bias "
                         "(training notes frozen_layers 'all' and bias_target_df)", path=args.checkpoint)
    cache_dir = Path(args.cache)
    corpus = list(read_corpus(Path(args.data)))
    docs = {d.docid: d.contents for d in corpus}

    def cached_pooled(folder: Path, variant: str) -> torch.Tensor:
        meta = json.loads((folder / "cache.json").read_text(encoding="utf-8"))
        if not meta.get("pooled") or meta.get("texts") != texts_fingerprint(list(docs.values())) \
                or meta.get("variant") != variant:
            raise InputError(f"this cache does not hold the pooled logits of {args.data}'s corpus for the {variant} "
                             "variant", path=folder / "cache.json")
        return ActivationCache(folder, meta).pooled

    pooled = cached_pooled(cache_dir, card.variant)
    docids = list(docs)
    index = {d: i for i, d in enumerate(docids)}
    # the starting bias: the run's calibration, same seeded sample and target document frequency
    seed, sample_size = int(notes.get("seed", 42)), int(notes.get("bias_sample", 1000))
    sample = random.Random(f"bias:{seed}").sample(sorted(docs), min(sample_size, len(docs)))
    sample_rows = pooled[torch.as_tensor([index[d] for d in sample])]
    start_bias = calibrate_bias_to_df(sample_rows, float(notes["bias_target_df"]), model.encoder.logit_scale)
    trained_bias = model.encoder.logit_bias.detach().float().clone()

    qrels = load_qrels(beir_file(Path(args.data), "qrels", args.split))
    texts = read_queries(beir_file(Path(args.data), "queries"))
    qids = sorted(q for q in qrels if q in texts)
    systems = [(f"{args.checkpoint} at step 0 (its calibrated bias)", model, pooled, start_bias),
               (f"{args.checkpoint}, trained", model, pooled, trained_bias)]
    if args.untrained:
        bare = CspladeModel.from_spec(args.untrained)
        systems.insert(0, (f"untrained backbone ({args.untrained})", bare,
                           cached_pooled(Path(args.untrained_cache), bare.card.variant), None))
    rows = []
    for label, system, system_pooled, bias in systems:
        with logit_bias(system.encoder, bias):
            doc_vectors = document_impacts(system_pooled, system.encoder, system.card.doc_top_k,
                                           system.card.quant_scale)
            query_vectors = query_impacts(system, [texts[q] for q in qids])
        run = rank(query_vectors, doc_vectors, qids, docids)
        scores = evaluate_run(run, qrels, measures_for("", ["nDCG@10", "R@100"]))
        terms_doc = doc_vectors.gt(0).sum(1).float().mean().item()
        rows.append({"model": label, "scores": scores, "terms_per_doc": round(terms_doc, 1),
                     "terms_per_query": round(query_vectors.gt(0).sum(1).float().mean().item(), 1)})
        logger.info("%s: %s", label, scores)
    result = {"checkpoint": args.checkpoint, "cache": str(cache_dir), "split": args.split, "queries": len(qids),
              "documents": len(docids), "threads": threads, "seconds": round(time.perf_counter() - start_time, 1),
              "calibration": {"seed": seed, "sample": len(sample), "target_df": notes["bias_target_df"]},
              "rows": rows, "measured": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}
    lines = [f"# Starting points from the activation cache ({args.split} queries, measured {result['measured']})", "",
             "| model | nDCG@10 | R@100 | terms/doc | terms/query |", "|---|---|---|---|---|"]
    lines += [f"| {row['model']} | {row['scores']['nDCG@10']:.4f} | {row['scores']['R@100']:.4f} | "
              f"{row['terms_per_doc']} | {row['terms_per_query']} |" for row in rows]
    write_report(args.name, result, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    run_cli(main)
