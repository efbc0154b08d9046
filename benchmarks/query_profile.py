"""Where a query's encoding time goes, and what the int8 alternatives cost: the model query side's floor.

    python -m benchmarks.query_profile            # make bench-query-profile

Part 1, timing (SciFact test queries, batch 1, the card's precision): tokenisation alone, the decoder
forward at the production padding (widths rounded up to ``SHAPE_MULTIPLE`` tokens) and unpadded, and the
whole encode as ``pyserini.search.lucene --encoder csplade`` calls it (decoder, LM-head pooling, lexical
head, top-k, integer weights) and with an unpadded decoder, counting the query vectors that padding
changes. It shows which part a faster query side would have to shrink.

Part 2, effectiveness (SciFact test and the DL19 pool, each on the default model's impact index): three
int8 dynamic quantisations of the decoder's projections (torch.ao, weights and activations in int8):
the card's ``quantization=int8-dynamic`` (per-tensor weights), per-channel weights, and per-tensor with
the MLP down-projections kept in float (the projections whose inputs carry the largest activation
outliers). Each row: encode ms per query, nDCG@10 and its change against float32 with a paired 95%
interval and p-value (``evaluate/significance.py``). Writes ``eval/results/bench-query-profile.{md,json}``.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import time
import warnings

from benchmarks.report import write_report
from benchmarks.query_latency import WARM_UP, time_query_side
from csplade_pyserini.cli import run_cli, set_threads
from csplade_pyserini.evaluate.significance import PairedComparison, paired_comparison

logger = logging.getLogger(__name__)

SETS = {"beir-v1.0.0-scifact.test": "index/scifact.csplade.runs-train-cpu-recipe-model-best",
        "dl19-passage": "index/dl19-pool.csplade.runs-train-cpu-recipe-model-best"}
INT8_ROWS = ("float32", "int8-dynamic (card: per-tensor weights)", "int8 per-channel weights",
             "int8 per-tensor, MLP down-projections in float")


def _mean_ms(seconds: list[float]) -> float:
    return 1000 * statistics.fmean(seconds)


def _timed(function, texts: list[str]) -> list[float]:
    for text in WARM_UP:
        function(text)
    seconds = []
    for text in texts:
        start = time.perf_counter()
        function(text)
        seconds.append(time.perf_counter() - start)
    return seconds


def profile(model: str, texts: list[str]) -> dict:
    """Part 1: mean ms per query of each stage of the batch-1 encode."""
    import torch

    from csplade_pyserini.integration.encoders import CspladeQueryEncoder
    from csplade_pyserini.model.pooling import SHAPE_MULTIPLE

    encoder = CspladeQueryEncoder(model)
    sparse = encoder.model.encoder

    def decoder(text: str, multiple: int) -> None:
        batch = sparse.collate(sparse.tokenize([text], "query"), pad_multiple=multiple, kind="query")
        with torch.inference_mode():
            sparse.encoder_states(batch.input_ids, batch.attention_mask)

    def unpadded(text: str) -> dict[str, int]:
        ids, weights = sparse.encode_sequences(sparse.tokenize([text], "query"), top_k=encoder.model.card.top_k("query"),
                                               pad_multiple=1, kind="query")[0]
        return encoder.model.to_impacts(ids, weights)

    tokens = [len(ids) for ids in sparse.tokenize(texts, "query")]
    # The decoder passes come first and build every matrix shape's kernels, so the later rows pay none; the
    # whole encode runs before anything else puts these texts in the query encoder's cache.
    stages = {
        "tokenise": _mean_ms(_timed(lambda t: sparse.tokenize([t], "query"), texts)),
        f"decoder forward, padded to {SHAPE_MULTIPLE}": _mean_ms(_timed(lambda t: decoder(t, SHAPE_MULTIPLE), texts)),
        "decoder forward, unpadded": _mean_ms(_timed(lambda t: decoder(t, 1), texts)),
        "whole encode (encode_batch)": _mean_ms(_timed(lambda t: encoder.encode_batch([t]), texts)),
        "whole encode, decoder unpadded": _mean_ms(_timed(unpadded, texts)),
    }
    production = [encoder.encode_batch([t])[0] for t in texts]
    changed = sum(unpadded(t) != v for t, v in zip(texts, production))
    return {"model": model, "dtype": str(next(sparse.model.parameters()).dtype), "queries": len(texts),
            "tokens_mean": statistics.fmean(tokens), "tokens_max": max(tokens),
            "unpadded_vectors_changed": changed, "stages_ms": stages}


def _quantise(encoder, row: str) -> None:
    """Apply part 2's custom int8 variants to a float32 encoder's decoder layers in place."""
    import torch
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

    from csplade_pyserini.model.sparse import decoder_and_head

    layers = decoder_and_head(encoder.model.encoder.model)[0].layers
    qconfig = per_channel_dynamic_qconfig if "per-channel" in row else default_dynamic_qconfig
    keep_float = "down_proj" if "down-projections" in row else None
    spec = {name: qconfig for name, module in layers.named_modules()
            if isinstance(module, torch.nn.Linear) and not (keep_float and name.endswith(keep_float))}
    with warnings.catch_warnings():  # torch marks its quantized tensor constructors as deprecated
        warnings.simplefilter("ignore", UserWarning)
        quantize_dynamic(layers, spec, dtype=torch.qint8, inplace=True)


def int8_rows(model: str, topics_name: str, index: str, hits: int) -> list[dict]:
    """Part 2 on one topic set: every row of :data:`INT8_ROWS`, searched on ``index``."""
    from csplade_pyserini.datasets import load_topics
    from csplade_pyserini.evaluate.measures import evaluate_run, measures_for
    from csplade_pyserini.integration.encoders import CspladeQueryEncoder
    from csplade_pyserini.model import encoder as encoder_module

    topics = load_topics(topics_name)
    qids, texts = list(topics), [topics[q] for q in topics]
    measures = measures_for(topics_name, ["nDCG@10"])
    rows: list[dict] = []
    for row in INT8_ROWS:
        encoder_module._CACHE.clear()
        card_mode = row.startswith("int8-dynamic")
        encoder = CspladeQueryEncoder(f"{model},quantization=int8-dynamic" if card_mode else f"{model},dtype=float32")
        if row != "float32" and not card_mode:
            _quantise(encoder, row)
        _, seconds, run, _ = time_query_side(encoder, index, qids, texts, hits)
        scores, per_query = evaluate_run(run, topics_name, measures, per_query=True)
        entry = {"row": row, "encode_ms": _mean_ms(seconds), "nDCG@10": scores["nDCG@10"],
                 "per_query": {q: v["nDCG@10"] for q, v in per_query.items()}}
        if rows:
            entry["vs_fp32"] = paired_comparison(rows[0]["per_query"], entry["per_query"]).as_dict()
        rows.append(entry)
        logger.info("%s %s: %.1f ms, nDCG@10 %.4f", topics_name, row, entry["encode_ms"], entry["nDCG@10"])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.query_profile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="csplade", help="encoder spec (its impact indexes: --scifact-index, --dl19-index)")
    parser.add_argument("--scifact-index", default=SETS["beir-v1.0.0-scifact.test"])
    parser.add_argument("--dl19-index", default=SETS["dl19-passage"])
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--hits", type=int, default=1000)
    parser.add_argument("--name", default="bench-query-profile")
    args = parser.parse_args(argv)
    threads = set_threads(args.threads)
    load_start = os.getloadavg()[0]

    from csplade_pyserini.datasets import load_topics

    scifact = load_topics("beir-v1.0.0-scifact.test")
    stages = profile(args.model, [scifact[q] for q in scifact])
    sets = {"beir-v1.0.0-scifact.test": args.scifact_index, "dl19-passage": args.dl19_index}
    int8 = {name: int8_rows(args.model, name, index, args.hits) for name, index in sets.items()}
    result = {"torch_threads": threads, "measured": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
              "profile": stages, "int8": int8}
    whole = stages["stages_ms"]["whole encode (encode_batch)"]
    lines = [f"# Batch-1 query encoding: where the time goes ({threads} torch threads, measured {result['measured']}; "
             f"1-minute load average {load_start:.2f} at the start, {os.getloadavg()[0]:.2f} at the end)", "",
             f"Model `{stages['model']}` at {stages['dtype']}, {stages['queries']} SciFact test queries of "
             f"{stages['tokens_mean']:.1f} tokens on average (at most {stages['tokens_max']}), one at a time.", "",
             "| stage | ms per query | share of the whole encode |", "|---|---|---|"]
    for stage, ms in stages["stages_ms"].items():
        lines.append(f"| {stage} | {ms:.1f} | {ms / whole:.0%} |")
    lines += ["", f"Unpadded, {stages['unpadded_vectors_changed']} of the {stages['queries']} query vectors get other "
              "integer weights than at the production padding (at bf16, rounding follows the matrix shapes).",
              "", "## int8 dynamic quantisation variants (float32 weights quantised at load; default index)", "",
              "| topics | variant | encode ms/q | speed-up vs float32 | nDCG@10 | change vs float32 [95% CI], p |",
              "|---|---|---|---|---|---|"]
    for name, rows in int8.items():
        for row in rows:
            change = PairedComparison(**row["vs_fp32"]).describe() if "vs_fp32" in row else "-"
            lines.append(f"| {name} | {row['row']} | {row['encode_ms']:.1f} | "
                         f"{rows[0]['encode_ms'] / row['encode_ms']:.2f}x | {row['nDCG@10']:.4f} | {change} |")
    write_report(args.name, result, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    run_cli(main)
