"""Train CSPLADE / Lion-SP models: adaptation, contrastive training, data preparation, export, and the
one-command CPU recipe.

    python -m csplade_pyserini.train words --data ../shared/data/beir/scifact --data ../shared/data/beir/nfcorpus \
        --output-dir runs/train/words                    # the default model (word channel), ``make train``
    python -m csplade_pyserini.train pure --data ../shared/data/beir/scifact --data ../shared/data/beir/nfcorpus \
        --output-dir runs/train/pure                     # pure CSPLADE (LM-head channel read early), ``make train-csplade``
    python -m csplade_pyserini.train join --words runs/train/words/model/best --lm-head runs/train/pure/model/best \
        --data ../shared/data/beir/scifact --data ../shared/data/beir/nfcorpus --output-dir runs/train/default
                                                         # the default: both channels, weighed on validation
    python -m csplade_pyserini.train recipe --data ../shared/data/beir/scifact --output-dir runs/cpu-recipe
    python -m csplade_pyserini.train adapt --config csplade_pyserini/configs/csplade-1b.yaml \\
        --data MSMARCO/collection.tsv --output-dir runs/adapt
    python -m csplade_pyserini.train mine-negatives --data ../shared/data/beir/scifact \\
        --output runs/scifact-train.bm25.trec
    python -m csplade_pyserini.train score-teacher --teacher ../shared/models/splade-tiny \\
        --run runs/scifact-train.bm25.trec --data ../shared/data/beir/scifact --output runs/teacher.txt
    python -m csplade_pyserini.train contrastive --config csplade_pyserini/configs/cpu-smollm2.yaml \\
        --data ../shared/data/beir/scifact --run runs/scifact-train.bm25.trec --output-dir runs/contrastive
    python -m csplade_pyserini.train export --checkpoint runs/contrastive/final --output-dir models/merged
    python -m pyserini.search.lucene ... --encoder csplade:runs/contrastive/best --impact ...
    python scripts/air_gapped_gpu.py bundle ... / recipe ...   # the GPU recipe for an air-gapped GPU node

``adapt`` and ``contrastive`` take every option of ``train/config.py`` (and transformers'
``TrainingArguments``) as ``--dash-case`` flags; ``--config FILE.yaml`` supplies defaults (top-level
keys for every command, an ``adapt:`` / ``contrastive:`` section for one); flags override both.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from csplade_pyserini.cli import run_cli, set_threads
from csplade_pyserini.errors import InputError

logger = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
TRAINING_COMMANDS = ("adapt", "contrastive")
COMMANDS = ("words", "pure", "join", "recipe", "adapt", "contrastive", "mine-negatives", "score-teacher", "export")
MOVED = ("gpu-bundle", "gpu-recipe")  # now scripts/air_gapped_gpu.py: named in the error


def _optional(kind):
    def parse(text: str):
        return None if text.strip().lower() in ("none", "null", "") else kind(text)
    return parse


def data_parser(command: str) -> argparse.ArgumentParser:
    """The small commands' flags (data preparation and export)."""
    parser = argparse.ArgumentParser(prog=f"python -m csplade_pyserini.train {command}")
    if command == "mine-negatives":
        parser.description = ("Index a BEIR corpus with Lucene BM25 and search the judged queries of a split; the "
                              "TREC run is the --run of `contrastive`.")
        parser.add_argument("--data", required=True, help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv)")
        parser.add_argument("--output", required=True, help="TREC run to write")
        parser.add_argument("--split", default="train", help="qrels split whose queries are searched")
        parser.add_argument("--hits", type=int, default=100, help="candidates per query")
        parser.add_argument("--index-dir", type=_optional(str), help="keep the BM25 index here (reused if present)")
        parser.add_argument("--queries", type=_optional(str), help="queries file instead of the folder's")
        parser.add_argument("--qrels", type=_optional(str), help="qrels file instead of the folder's")
        parser.add_argument("--corpus", type=_optional(str), help="corpus instead of the folder's")
        parser.add_argument("--threads", type=int, default=1, help="indexing / search threads")
    elif command == "score-teacher":
        parser.description = ("Score a run's candidates (and the judged positives) with a teacher: a csplade spec or "
                              "checkpoint, a SPLADE masked-LM folder (e.g. splade-tiny) or a cross-encoder folder.")
        parser.add_argument("--teacher", required=True, help="csplade[:MODEL], checkpoint, SPLADE MLM or cross-encoder")
        parser.add_argument("--run", required=True, help="TREC run whose candidates are scored")
        parser.add_argument("--output", required=True, help="qid pid score file to write")
        parser.add_argument("--data", type=_optional(str), help="BEIR folder with the queries, corpus and qrels")
        parser.add_argument("--queries", type=_optional(str), help="queries file (instead of --data)")
        parser.add_argument("--corpus", type=_optional(str), help="corpus (instead of --data)")
        parser.add_argument("--qrels", type=_optional(str), help="qrels whose positives are scored too")
        parser.add_argument("--split", default="train", help="qrels split of --data")
        parser.add_argument("--top-k", type=_optional(int), help="candidates per query from the run (none: all)")
        parser.add_argument("--device", default="cpu", help="cpu, cuda ...")
        parser.add_argument("--batch-size", type=_optional(int), help="texts (or pairs) per batch")
        parser.add_argument("--max-length", type=_optional(int), help="teacher input tokens")
        parser.add_argument("--threads", type=_optional(int), help="torch threads")
    elif command == "export":
        parser.description = ("Merge the LoRA adapter of a checkpoint into its backbone and save a standalone model "
                              "(weights, tokenizer, card, heads) that loads with csplade:FOLDER.")
        parser.add_argument("--checkpoint", required=True, help="checkpoint folder (with csplade_card.json)")
        parser.add_argument("--output-dir", required=True, help="folder of the standalone model")
        parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
        parser.add_argument("--sentence-transformers", action="store_true",
                            help="also a Sentence Transformers SparseEncoder folder (sentence-transformers >= 5)")
    return parser


def _training(command: str, argv: list[str]) -> int:
    from csplade_pyserini.train.config import parse_arguments

    model_args, data_args, training_args = parse_arguments(command, argv)
    if not data_args.data:
        raise InputError("--data is required", field="data")
    if command == "adapt":
        from csplade_pyserini.train.adaptation import run_adapt

        run_adapt(model_args, data_args, training_args)
    else:
        from csplade_pyserini.train.contrastive import run_contrastive

        run_contrastive(model_args, data_args, training_args)
    from csplade_pyserini.train.distributed import shut_down

    shut_down()
    return 0


def _data_command(command: str, argv: list[str]) -> int:
    values = vars(data_parser(command).parse_args(argv))
    if command == "mine-negatives":
        from csplade_pyserini.train.mining import mine_negatives

        mine_negatives(**values)
    elif command == "score-teacher":
        from csplade_pyserini.train.teachers import score_teacher

        threads = values.pop("threads")
        if threads:
            set_threads(threads)
        score_teacher(**values)
    else:
        from csplade_pyserini.train.checkpoint import export_merged

        out = export_merged(values["checkpoint"], values["output_dir"], values["dtype"],
                            sentence_transformers=values["sentence_transformers"])
        logger.info("standalone model in %s (use it as --encoder csplade:%s)", out, out)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in (*COMMANDS, *MOVED):
        print(__doc__.strip() + "\n\ncommands: " + ", ".join(COMMANDS) + "  (COMMAND --help for its options)",
              file=sys.stderr if argv and argv[0] not in ("-h", "--help") else sys.stdout)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    command, rest = argv[0], argv[1:]
    if command == "words":
        from csplade_pyserini.train.word_channel import main as words_main

        return words_main(rest)
    if command == "pure":
        from csplade_pyserini.train.lm_head_channel import main as pure_main

        return pure_main(rest)
    if command == "join":
        from csplade_pyserini.train.join import main as join_main

        return join_main(rest)
    if command == "recipe":
        from csplade_pyserini.train.recipe import main as recipe_main

        return recipe_main(rest)
    if command in ("gpu-bundle", "gpu-recipe"):
        raise InputError(f"train {command} moved out of the package: python scripts/air_gapped_gpu.py "
                         f"{command[4:]} (same options), from the repository root")
    if command in TRAINING_COMMANDS:
        return _training(command, rest)
    return _data_command(command, rest)


if __name__ == "__main__":
    run_cli(main)
