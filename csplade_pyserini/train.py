"""Train CSPLADE / Lion-SP models: adaptation, contrastive training, data preparation and export.

    python -m csplade_pyserini.train adapt --config csplade_pyserini/configs/cpu-smollm2.yaml \\
        --data ../shared/data/beir/scifact --output-dir runs/adapt
    python -m csplade_pyserini.train mine-negatives --data ../shared/data/beir/scifact \\
        --output runs/scifact-train.bm25.trec
    python -m csplade_pyserini.train contrastive --config csplade_pyserini/configs/cpu-smollm2.yaml \\
        --data ../shared/data/beir/scifact --run runs/scifact-train.bm25.trec \\
        --init-adapter runs/adapt/final --output-dir runs/contrastive
    python -m csplade_pyserini.train bias --config csplade_pyserini/configs/cpu-smollm2.yaml \\
        --data ../shared/data/beir/scifact --run runs/scifact-train.bm25.trec --output-dir runs/bias
    python -m csplade_pyserini.train export --checkpoint runs/contrastive/final --output-dir models/merged
    python -m pyserini.search.lucene --encoder csplade:runs/contrastive/final ...

A ``--config FILE.yaml`` recipe gives defaults: top-level keys apply to every command that knows them,
keys under a section named after a command (``adapt:``, ``contrastive:``, ...) only to that command;
flags on the command line override both. Keys are the flag names in snake_case or dash-case.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path
from typing import Any, Callable

from csplade_pyserini.cli import run_cli, set_threads
from csplade_pyserini.errors import InputError
from csplade_pyserini.model.card import VARIANTS

logger = logging.getLogger(__name__)

COMMANDS = ("adapt", "contrastive", "bias", "mine-negatives", "score-teacher", "export")
CONFIG_DIR = Path(__file__).resolve().parent / "configs"


# --- value parsers (also applied to YAML values given as strings) ---------------------------------
def _none(text: str) -> bool:
    return text.strip().lower() in ("none", "null", "")


def optional_int(text: str) -> int | None:
    return None if _none(text) else int(text)


def optional_float(text: str) -> float | None:
    return None if _none(text) else float(text)


def optional_str(text: str) -> str | None:
    return None if _none(text) else text


def logit_scale(text: str) -> float | str | None:
    if _none(text):
        return None
    return "auto" if text.strip() == "auto" else float(text)


def csv_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


# --- parser ----------------------------------------------------------------------------------------
class _Options:
    """Adds flags to a sub-parser, with the default of the command's config class in the help."""

    def __init__(self, parser: argparse.ArgumentParser, defaults: dict[str, Any]):
        self.parser = parser
        self.defaults = defaults

    def __call__(self, flag: str, help: str = "", **kwargs) -> None:
        dest = flag[2:].replace("-", "_")
        if dest in self.defaults and "default (" not in help:
            default = self.defaults[dest]
            if isinstance(default, list):
                default = ",".join(default)
            help = f"{help} (default: {default})" if help else f"default: {default}"
        self.parser.add_argument(flag, help=help.replace("%", "%%"), **kwargs)


def _dataclass_defaults(cls) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            out[f.name] = f.default_factory()  # type: ignore[misc]
    return out


def _common_training(add: _Options) -> None:
    bool_flag = argparse.BooleanOptionalAction
    add("--config", help="YAML recipe (flags override its values)", metavar="FILE.yaml")
    add("--output-dir", help="run folder: checkpoints, final model, train_log.jsonl")
    add("--data", help="training data (see the command's description)")
    g = add.parser.add_argument_group("model card")
    a = _Options(g, add.defaults)
    a("--backbone", help="smollm2, a Hugging Face folder, a .gguf file or a hub id (meta-llama/Llama-3.2-1B)")
    a("--variant", choices=VARIANTS, help="causal, echo (input twice, pool the 2nd copy) or bidirectional")
    a("--query-prefix", help="text put before every query ('' for none, as in Lion)")
    a("--doc-prefix", help="text put before every document")
    a("--max-query-length", type=int, help="query tokens")
    a("--max-doc-length", type=int, help="document tokens")
    a("--logit-scale", type=logit_scale, help="multiply logits before the activation: a number, auto "
      "(hidden_size ** -0.25, Lion) or none")
    a("--quant-scale", type=float, help="integer impact = round(weight * scale)")
    a("--add-bos", action=bool_flag, help="feed a BOS token (hurts decoder SPLADE)")
    a("--query-top-k", type=optional_int, help="keep only the N largest query weights at inference (card)")
    a("--doc-top-k", type=optional_int, help="keep only the N largest document weights at inference (card); a "
      "safety net for short runs whose FLOPS regulariser has not made the vectors sparse yet")
    a("--model-name", type=optional_str, help="name written into the model card")
    g = add.parser.add_argument_group("what is trained")
    a = _Options(g, add.defaults)
    a("--full", action=bool_flag, help="full fine-tuning instead of LoRA")
    a("--lora-rank", type=int, help="LoRA rank r")
    a("--lora-alpha", type=int, help="LoRA alpha")
    a("--lora-dropout", type=float, help="LoRA dropout")
    a("--target-modules", type=csv_list, help="comma-separated module names LoRA adapts")
    a("--init-adapter", type=optional_str, help="start from this adapter (a checkpoint folder or adapter folder, "
      "e.g. the final checkpoint of `adapt`)")
    g = add.parser.add_argument_group("optimisation")
    a = _Options(g, add.defaults)
    a("--learning-rate", type=float, help="peak learning rate (AdamW, cosine decay)")
    a("--weight-decay", type=float, help="AdamW weight decay")
    a("--max-grad-norm", type=float, help="gradient clipping (0 = off)")
    a("--per-device-batch-size", type=int, help="queries (or sequences) per micro-batch")
    a("--gradient-accumulation-steps", type=int, help="micro-batches per optimizer step")
    a("--max-steps", type=optional_int, help="optimizer steps (overrides --epochs)")
    a("--epochs", type=float, help="passes over the data when --max-steps is not given")
    a("--warmup-fraction", type=float, help="share of the steps with linear warm-up")
    a("--seed", type=int, help="seed of python, numpy, torch and the data order")
    a("--dtype", choices=("float32", "bfloat16", "float16", "auto"), help="training precision")
    a("--gradient-checkpointing", action=bool_flag, help="recompute activations in the backward pass")
    a("--device", help="cpu, cuda, cuda:0 ...")
    a("--threads", type=optional_int, help="torch threads (default: unchanged)")
    g = add.parser.add_argument_group("checkpoints, evaluation, logging")
    a = _Options(g, add.defaults)
    a("--save-steps", type=int, help="save a resumable checkpoint every N steps (0 = only the final model)")
    a("--save-total-limit", type=optional_int, help="keep only the N most recent checkpoints")
    a("--resume", nargs="?", const="latest", type=optional_str,
      help="resume exactly from a checkpoint folder, or (no value) from the latest checkpoint of --output-dir")
    a("--stop-after", type=optional_int, help="stop (with a checkpoint) after step N; the schedule still spans "
      "the whole run, so --resume continues it")
    a("--eval-steps", type=int, help="evaluate every N steps (0 = only at the end when --eval-data is given)")
    a("--eval-data", type=optional_str, help="BEIR folder (or corpus file with --eval-topics/--eval-qrels) for "
      "the in-memory nDCG@10 evaluation")
    a("--eval-topics", type=optional_str, help="evaluation queries file or Pyserini topics name")
    a("--eval-qrels", type=optional_str, help="evaluation qrels file or Pyserini name")
    a("--eval-split", help="qrels split of a BEIR --eval-data")
    a("--eval-queries", type=int, help="evaluation queries (a seeded sample)")
    a("--eval-docs", type=int, help="evaluation documents (judged ones + distractors)")
    a("--eval-batch-size", type=int, help="texts per encoding batch in the evaluation")
    a("--eval-at-start", action=bool_flag, help="also evaluate before the first step (the starting point's score)")
    a("--save-best", action=bool_flag, help="keep the model of the best in-training nDCG@10 in OUTPUT_DIR/best "
      "(in contrastive, with --eval-split train --eval-holdout: a choice that does not peek at the test queries)")
    a("--logging-steps", type=int, help="write train_log.jsonl every N steps")
    a("--progress", action=bool_flag, help="show the tqdm progress bar")


def _contrastive_options(add: _Options) -> None:
    """The flags of phase 2 (``contrastive`` and ``bias``)."""
    from csplade_pyserini.training.loop import DATA_FORMATS

    _common_training(add)
    g = add.parser.add_argument_group("data")
    a = _Options(g, add.defaults)
    a("--data-format", choices=DATA_FORMATS, help="format of --data (auto: folder = beir, .jsonl = tevatron, "
      ".tsv = triples, or id triples with --collection)")
    a("--run", type=optional_str, help="TREC run of hard negatives for BEIR data (`train mine-negatives`)")
    a("--collection", type=optional_str, help="pid<TAB>text collection for id triples")
    a("--queries", type=optional_str, help="qid<TAB>text queries for id triples")
    a("--split", help="qrels split of BEIR data")
    a("--negatives", type=int, help="hard negatives per query")
    a("--max-examples", type=optional_int, help="use only the first N training queries")
    a("--eval-holdout", action=argparse.BooleanOptionalAction, help="leave the evaluation queries out of the "
      "training data (a validation slice of the training split, with --eval-split train)")
    g = add.parser.add_argument_group("objective")
    a = _Options(g, add.defaults)
    a("--objective", choices=("cl", "kd", "clkd"), help="InfoNCE, distillation, or their mix (Lion CL+KD)")
    a("--kd-loss", choices=("margin-mse", "kl"), help="distillation loss")
    a("--kd-weight", type=float, help="share of the distillation term in clkd")
    a("--kd-temperature", type=float, help="softmax temperature of the KL distillation")
    a("--teacher-scores", type=optional_str, help="qid pid score file (`train score-teacher`)")
    a("--temperature", type=optional_float, help="InfoNCE temperature (none: raw dot products, Lion sparse)")
    a("--flops-query-weight", type=float, help="lambda_q of the query FLOPS regulariser")
    a("--flops-doc-weight", type=float, help="lambda_d of the document FLOPS regulariser")
    a("--flops-ramp-fraction", type=float, help="share of training over which the FLOPS weights ramp up "
      "quadratically")
    a("--logit-bias-sigmas", type=optional_float, help="calibrate a per-term logit bias, -(mean + N std) of each "
      "entry's logit over 256 training documents, before training (none: no bias; a --init-adapter checkpoint's "
      "bias is kept)")
    a("--train-top-k", action=argparse.BooleanOptionalAction, help="train on the card's --query-top-k / "
      "--doc-top-k largest weights only, as the index will hold them (for backbones whose LM head is dense)")


def build_parser() -> argparse.ArgumentParser:
    from csplade_pyserini.training.bias import BiasConfig
    from csplade_pyserini.training.loop import AdaptConfig, ContrastiveConfig

    parser = argparse.ArgumentParser(prog="python -m csplade_pyserini.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    adapt = sub.add_parser(
        "adapt", argument_default=argparse.SUPPRESS, help="phase 1: adapt the LM to the corpus (L_CLM + L_ReLU)",
        description="Phase 1 (CSPLADE): LoRA or full fine-tuning of the causal LM on packed corpus text with "
                    "L = L_CLM + lambda * L_ReLU; or, with --objective mntp, Lion's masked next-token "
                    "prediction with bidirectional attention. --data is a corpus (BEIR folder, corpus.jsonl, "
                    "collection.tsv).")
    add = _Options(adapt, _dataclass_defaults(AdaptConfig))
    _common_training(add)
    g = adapt.add_argument_group("adaptation")
    a = _Options(g, add.defaults)
    a("--objective", choices=("clm", "mntp"), help="clm: next-token + ReLU loss (CSPLADE); mntp: masked "
      "next-token prediction, bidirectional attention (Lion / LLM2Vec)")
    a("--seq-len", type=int, help="tokens per packed sequence")
    a("--relu-weight", type=float, help="lambda of L_ReLU")
    a("--mask-fraction", type=float, help="share of tokens masked (mntp)")
    a("--max-documents", type=optional_int, help="read only the first N corpus documents")

    con = sub.add_parser(
        "contrastive", argument_default=argparse.SUPPRESS,
        help="phase 2: contrastive / distillation training of the sparse encoder",
        description="Phase 2: queries and [positive] + N hard negatives through the sparse encoder of the "
                    "variant; InfoNCE over in-batch and hard negatives (cl), distillation from teacher scores "
                    "(kd: MarginMSE or KL), or both (clkd), plus FLOPS on queries and documents with a "
                    "quadratic warm-up. --data: a BEIR folder (with --run hard negatives), Tevatron JSONL, "
                    "MS MARCO text triples, or id triples (with --collection and --queries).")
    _contrastive_options(_Options(con, _dataclass_defaults(ContrastiveConfig)))

    bias = sub.add_parser(
        "bias", argument_default=argparse.SUPPRESS,
        help="phase 2 with a frozen model: train only the per-term logit bias (fast on a CPU)",
        description="Phase 2 with the backbone (and any --init-adapter) frozen: only the per-term logit bias "
                    "is trained, with the objectives of `contrastive`. Each text's max-pooled logits are "
                    "computed once and cached (vocabulary x 2 bytes per text), so an epoch over all training "
                    "queries takes seconds. The result loads as csplade:OUTPUT_DIR/final.")
    add = _Options(bias, _dataclass_defaults(BiasConfig))
    _contrastive_options(add)
    g = bias.add_argument_group("cache")
    a = _Options(g, add.defaults)
    a("--max-negatives", type=optional_int, help="keep only each query's first N negatives (the top of the run); "
      "every kept passage is encoded once into the cache (none: all)")
    a("--cache-batch-tokens", type=optional_int, help="padded tokens per encoding batch when filling the cache "
      "(none: the encoder's own)")

    mine = sub.add_parser("mine-negatives", argument_default=argparse.SUPPRESS,
                          help="BM25 hard negatives for BEIR train queries (Pyserini)",
                          description="Index a BEIR corpus with Lucene BM25 and search the judged queries of a "
                                      "split; the TREC run is the --run of `contrastive`.")
    add = _Options(mine, {"split": "train", "hits": 100, "threads": 1})
    add("--config", help="YAML recipe", metavar="FILE.yaml")
    add("--data", help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv)")
    add("--output", help="TREC run to write")
    add("--split", help="qrels split whose queries are searched")
    add("--hits", type=int, help="candidates per query")
    add("--index-dir", type=optional_str, help="where to keep the BM25 index (reused if present; default: temporary)")
    add("--queries", type=optional_str, help="queries file instead of the folder's")
    add("--qrels", type=optional_str, help="qrels file instead of the folder's")
    add("--corpus", type=optional_str, help="corpus instead of the folder's")
    add("--threads", type=int, help="indexing / search threads")

    teach = sub.add_parser("score-teacher", argument_default=argparse.SUPPRESS,
                           help="teacher scores (qid pid score) for the candidates of a run",
                           description="Score a run's candidates (and the judged positives) with a teacher: a "
                                       "csplade spec or checkpoint, a SPLADE masked-LM folder (e.g. splade-tiny) "
                                       "or a cross-encoder folder. The output is the --teacher-scores of "
                                       "`contrastive`.")
    add = _Options(teach, {"split": "train", "top_k": None, "device": "cpu", "batch_size": "the teacher's"})
    add("--config", help="YAML recipe", metavar="FILE.yaml")
    add("--teacher", help="csplade[:MODEL] spec, checkpoint, SPLADE MLM folder or cross-encoder folder")
    add("--run", help="TREC run whose candidates are scored")
    add("--output", help="qid pid score file to write")
    add("--data", type=optional_str, help="BEIR folder with the queries, corpus and qrels")
    add("--queries", type=optional_str, help="queries file (instead of --data)")
    add("--corpus", type=optional_str, help="corpus (instead of --data)")
    add("--qrels", type=optional_str, help="qrels whose positives are scored too (default: --data/qrels/SPLIT.tsv)")
    add("--split", help="qrels split of --data")
    add("--top-k", type=optional_int, help="candidates per query from the run (none: all)")
    add("--device", help="cpu, cuda ...")
    add("--batch-size", type=optional_int, help="texts (or pairs) per batch")
    add("--max-length", type=optional_int, help="teacher input tokens")
    add("--threads", type=optional_int, help="torch threads")

    export = sub.add_parser("export", argument_default=argparse.SUPPRESS,
                            help="merge a checkpoint's adapter into a standalone model folder",
                            description="Merge the LoRA adapter of a checkpoint into its backbone and save a "
                                        "standalone model (weights, tokenizer, card) that loads with "
                                        "csplade:FOLDER.")
    add = _Options(export, {"dtype": "float32"})
    add("--config", help="YAML recipe", metavar="FILE.yaml")
    add("--checkpoint", help="checkpoint folder (with csplade_card.json)")
    add("--output-dir", help="folder of the standalone model")
    add("--dtype", choices=("float32", "bfloat16", "float16"), help="precision of the saved weights")
    return parser


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[command]
    raise KeyError(command)


def _actions(sub: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in sub._actions if a.dest not in ("help", "config")}


# --- recipes ---------------------------------------------------------------------------------------
def _coerce(value: Any, action: argparse.Action, path: Path, key: str) -> Any:
    if value is None:
        return None
    try:
        if isinstance(action, argparse.BooleanOptionalAction):
            if not isinstance(value, bool):
                raise ValueError("expected true or false")
        elif action.type is csv_list and isinstance(value, list):
            value = [str(v) for v in value]
        elif action.type is not None and not isinstance(value, (list, dict, bool)):
            value = action.type(str(value))
        elif action.type is None and isinstance(value, (list, dict)):
            raise ValueError("expected a single value")
        elif action.type is None:
            value = str(value)
        if action.choices is not None and value not in action.choices:
            raise ValueError(f"choose one of {', '.join(map(str, action.choices))}")
    except (TypeError, ValueError) as exc:
        raise InputError(f"bad value {value!r}: {exc}", path=path, field=key) from None
    return value


def load_recipe(path: str | Path, command: str, parser: argparse.ArgumentParser | None = None) -> dict[str, Any]:
    """The values a YAML recipe gives ``command``: its top-level keys the command knows, then its section."""
    import yaml

    path = Path(path)
    parser = parser or build_parser()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError("config file does not exist", path=path) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise InputError(f"not valid YAML: {getattr(exc, 'problem', exc)}", path=path,
                         line=mark.line + 1 if mark is not None else None) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError("a config file must be a mapping of option names to values", path=path)
    known = {name: _actions(_subparser(parser, name)) for name in COMMANDS}
    mine = known[command]
    values: dict[str, Any] = {}
    sections: dict[str, dict] = {}
    for raw_key, value in data.items():
        key = str(raw_key).replace("-", "_")
        section = str(raw_key).replace("_", "-")
        if section in COMMANDS:
            if not isinstance(value, dict):
                raise InputError(f"section {raw_key!r} must be a mapping", path=path, field=str(raw_key))
            sections[section] = value
            continue
        if key in ("description", "name", "notes"):  # free text for humans
            continue
        if not any(key in actions for actions in known.values()):
            raise InputError(f"unknown option {raw_key!r}", path=path, field=str(raw_key))
        if key in mine:
            values[key] = _coerce(value, mine[key], path, str(raw_key))
    for section, content in sections.items():
        for raw_key, value in content.items():
            key = str(raw_key).replace("-", "_")
            if key not in known[section]:
                raise InputError(f"unknown option {raw_key!r} for {section}", path=path, field=f"{section}.{raw_key}")
            if section == command:
                values[key] = _coerce(value, mine[key], path, f"{section}.{raw_key}")
    return values


def resolve_options(argv: list[str] | None) -> tuple[str, dict[str, Any]]:
    """Parse the command line, merge it over the recipe: ``(command, options)``."""
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    command = args.pop("command")
    config = args.pop("config", None)
    values = load_recipe(config, command, parser) if config else {}
    values.update(args)
    return command, values


def _required(values: dict[str, Any], *names: str) -> None:
    for name in names:
        if values.get(name) in (None, ""):
            raise InputError(f"--{name.replace('_', '-')} is required", field=name)


# --- commands --------------------------------------------------------------------------------------
def _train(command: str, values: dict[str, Any]) -> int:
    from csplade_pyserini.training.loop import AdaptConfig, ContrastiveConfig, run_adapt, run_contrastive

    from csplade_pyserini.training.bias import BiasConfig, run_bias

    cls, runner = {"adapt": (AdaptConfig, run_adapt), "contrastive": (ContrastiveConfig, run_contrastive),
                   "bias": (BiasConfig, run_bias)}[command]
    _required(values, "output_dir", "data")
    config = cls(**values)
    result = runner(config)
    if result.final_dir is not None:
        logger.info("done: %d steps; model in %s (use it as --encoder csplade:%s)", result.step, result.final_dir,
                    result.final_dir)
    else:
        logger.info("stopped at step %d of %d; continue with --resume", result.step, result.total_steps)
    for entry in result.evals[-1:]:
        logger.info("last evaluation (step %d): nDCG@10 %.4f", entry["step"], entry["ndcg@10"])
    return 0


def _mine(values: dict[str, Any]) -> int:
    from csplade_pyserini.training.mining import mine_negatives

    _required(values, "data", "output")
    mine_negatives(values["data"], values["output"], split=values.get("split", "train"),
                   hits=values.get("hits", 100), index_dir=values.get("index_dir"),
                   threads=values.get("threads", 1), queries=values.get("queries"), qrels=values.get("qrels"),
                   corpus=values.get("corpus"))
    return 0


def _teacher(values: dict[str, Any]) -> int:
    from csplade_pyserini.training.mining import score_teacher

    _required(values, "teacher", "run", "output")
    if values.get("threads"):
        set_threads(values["threads"])
    score_teacher(values["teacher"], values["run"], values["output"], data=values.get("data"),
                  queries=values.get("queries"), corpus=values.get("corpus"), qrels=values.get("qrels"),
                  split=values.get("split", "train"), top_k=values.get("top_k"), device=values.get("device", "cpu"),
                  batch_size=values.get("batch_size"), max_length=values.get("max_length"))
    return 0


def _export(values: dict[str, Any]) -> int:
    from csplade_pyserini.training.checkpoint import export_merged

    _required(values, "checkpoint", "output_dir")
    out = export_merged(values["checkpoint"], values["output_dir"], values.get("dtype", "float32"))
    logger.info("standalone model in %s (use it as --encoder csplade:%s)", out, out)
    return 0


HANDLERS: dict[str, Callable[[dict[str, Any]], int]] = {
    "adapt": lambda v: _train("adapt", v),
    "contrastive": lambda v: _train("contrastive", v),
    "bias": lambda v: _train("bias", v),
    "mine-negatives": _mine,
    "score-teacher": _teacher,
    "export": _export,
}


def main(argv: list[str] | None = None) -> int:
    command, values = resolve_options(argv)
    return HANDLERS[command](values)


if __name__ == "__main__":
    run_cli(main)
