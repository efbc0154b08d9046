"""Training options: one dataclass field per option gives its flag, default and help.

``HfArgumentParser`` (transformers) turns these dataclasses into a command line, as Tevatron does:
``--learning-rate`` / ``--learning_rate`` both work, booleans take ``--flag`` / ``--no-flag``.
:class:`SparseTrainingArguments` extends transformers' own ``TrainingArguments``, so batch size,
accumulation, schedule, precision, checkpoints, resume, logging and the distributed engines (DDP,
FSDP, DeepSpeed through accelerate) are configured exactly as for any Hugging Face ``Trainer``.

A YAML recipe (``--config``, ``configs/*.yaml``) supplies defaults: its top-level keys apply to every
command, a section named after the command (``adapt:``, ``contrastive:``) to that command only; flags
on the command line override both.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import TrainingArguments

from csplade_pyserini.errors import InputError, ModelSpecError
from csplade_pyserini.model.card import (
    CARD_CHOICES,
    ModelCard,
    card_field,
    card_field_type,
    parse_card_value,
)

DEFAULT_TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def option(text: str, **extra: Any) -> dict[str, Any]:
    """A field's metadata for ``HfArgumentParser``: its help, and any other ``add_argument`` keyword."""
    return {"help": text, **extra}


# The card fields a training run sets from its command line, with their help. Type, default and choices come
# from ModelCard, and the card validates them: one set of rules for cards, specs and training options.
CARD_OPTIONS: dict[str, str] = {
    "backbone": "smollm2 (offline default), a Hugging Face folder, a .gguf file or a hub id",
    "variant": "causal, echo or bidirectional",
    "query_prefix": "text put before every query",
    "doc_prefix": "text put before every document",
    "max_query_length": "query tokens (prefix included)",
    "max_doc_length": "document tokens (prefix included)",
    "logit_scale": "multiply LM-head logits before the activation: a number, 'auto' (hidden_size ** -0.25, Lion) "
                   "or none",
    "quant_scale": "integer impact = round(weight x this)",
    "add_bos": "feed a BOS token (an attention sink: off by default)",
    "query_top_k": "largest query weights kept (none: all)",
    "doc_top_k": "largest document weights kept (none: all)",
    "representation": "sparse (CSPLADE / Lion-SP: vocabulary weights, Lucene impact index) or dense (Lion-DS: "
                      "per-token L2-normalised mean of the final states, FAISS index); the same backbone, "
                      "variants, data and trainer",
    "dense_pooling": "dense: mean (Lion-DS, normalised tokens averaged) or last (the last pooled token, "
                     "normalised)",
    "expansion": "the LM-head channel (CSPLADE proper)",
    "expansion_weight": "initial weight of the LM-head channel where it meets the lexical channel (learned)",
    "lexical_layer": "beyond CSPLADE: add a lexical impact head reading this layer's states (input of layer N; "
                     "the number of layers = final states); none = pure CSPLADE",
}
# options typed as text on the command line and read by the card's parser (``auto`` is not a number)
TEXT_CARD_OPTIONS = {"logit_scale": str | None}


def card_options() -> list[tuple[str, Any, Any]]:
    """``(name, type, field)`` of every :data:`CARD_OPTIONS` entry, for ``dataclasses.make_dataclass``."""
    out = []
    for name, text in CARD_OPTIONS.items():
        source = card_field(name)
        default = source.default if source.default is not dataclasses.MISSING else source.default_factory()
        extra = {"choices": list(CARD_CHOICES[name])} if name in CARD_CHOICES else {}
        out.append((name, TEXT_CARD_OPTIONS.get(name, card_field_type(name)),
                    field(default=default, metadata=option(text, **extra))))
    return out


@dataclass
class TrainableParts:
    """Which parts of the model learn, and how (the options of :class:`ModelArguments` that are not card fields)."""

    model_name: str | None = field(default=None, metadata=option("a name recorded in the model card"))
    lexical_width: int = field(default=128, metadata=option("hidden width of the lexical head's MLP"))
    init_checkpoint: str | None = field(default=None, metadata=option(
        "start from this checkpoint (card, adapter, logit bias, lexical head), e.g. an adaptation run"))
    full: bool = field(default=False, metadata=option("train every weight of the trainable layers (no LoRA)"))
    lora_rank: int = field(default=16, metadata=option("LoRA rank"))
    lora_alpha: int = field(default=32, metadata=option("LoRA alpha"))
    lora_dropout: float = field(default=0.1, metadata=option("LoRA dropout"))
    target_modules: list[str] = field(default_factory=lambda: list(DEFAULT_TARGET_MODULES),
                                      metadata=option("module names that get LoRA adapters"))
    frozen_layers: str | None = field(default=None, metadata=option(
        "freeze the bottom N layers and cache their output on disk (CPU path; 'all' freezes the whole "
        "backbone: only the heads learn); none = every layer trains, through a full forward per step"))
    cache_dir: str | None = field(default=None, metadata=option(
        "where the frozen layers' activations go (default: OUTPUT_DIR/cache); reused while inputs match"))
    train_bias: bool = field(default=True, metadata=option("the per-term logit bias learns with the rest"))
    bias_target_df: float | None = field(default=None, metadata=option(
        "calibrate a per-term logit bias before training so that each term is active in this share of documents "
        "(a quantile of its pooled logit over a random sample); none = keep the checkpoint's bias, or none"))
    bias_sample: int = field(default=1000, metadata=option("documents (seeded random sample) for the calibration"))
    dtype: str = field(default="auto", metadata=option(
        "backbone precision while training: auto (bf16 on hardware that multiplies it natively), float32, "
        "bfloat16, float16", choices=list(CARD_CHOICES["dtype"])))
    threads: int | None = field(default=None, metadata=option("torch CPU threads"))

    def validate(self) -> None:
        for name in ("lora_rank", "lora_alpha", "lexical_width", "bias_sample"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"must be a positive integer, got {value!r}", field=name)
        if not 0.0 <= self.lora_dropout < 1.0:
            raise InputError(f"must be in [0, 1), got {self.lora_dropout!r}", field="lora_dropout")
        if self.bias_target_df is not None and not 0.0 < self.bias_target_df < 1.0:
            raise InputError(f"must be in (0, 1), got {self.bias_target_df!r}", field="bias_target_df")
        if self.frozen_layers not in (None, "all"):
            try:
                if int(self.frozen_layers) < 0:
                    raise ValueError
            except ValueError:
                raise InputError(f"must be a non-negative integer, 'all' or none, got {self.frozen_layers!r}",
                                 field="frozen_layers") from None
        if not self.target_modules:
            raise InputError("at least one module name is needed", field="target_modules")
        if self.representation == "dense":
            for name in ("lexical_layer", "bias_target_df"):
                if getattr(self, name) is not None:
                    raise InputError(f"a dense model has no {name.split('_')[0]} (sparse only)", field=name)
        self.card()  # the card's own checks (variant, lengths, scales, ...)

    def card(self, **extra: Any) -> ModelCard:
        """The card of the model being trained (heads' files and the lexical layer are filled in when saved)."""
        values = {name: getattr(self, name) for name in CARD_OPTIONS if name != "lexical_layer"}
        try:
            if isinstance(values["logit_scale"], str):
                values["logit_scale"] = parse_card_value("logit_scale", values["logit_scale"])
            return ModelCard(**{**values, "name": self.model_name, **extra})
        except (InputError, ModelSpecError) as exc:
            raise InputError(getattr(exc, "message", str(exc)), field=getattr(exc, "field", "logit_scale")) from None


ModelArguments = dataclasses.make_dataclass(
    "ModelArguments", card_options(), bases=(TrainableParts,), namespace={
        "__doc__": "The model being trained: its card (what changes a vector; the card fields of "
                   ":data:`CARD_OPTIONS`) and which of its parts learn (:class:`TrainableParts`).",
        "__module__": __name__})


@dataclass
class DataArguments:
    """Training examples, hard negatives, teacher scores and the validation set."""

    data: str | None = field(default=None, metadata=option(
        "training data: a BEIR folder (with --run for negatives), Tevatron JSONL, or MS MARCO triples"))
    data_format: str = field(default="auto", metadata=option(
        "auto, beir, tevatron, triples or id-triples", choices=["auto", "beir", "tevatron", "triples", "id-triples"]))
    run: str | None = field(default=None, metadata=option(
        "TREC run of candidate negatives (train mine-negatives); under torchrun spell it --negatives-run "
        "(torchrun's own parser takes --run for its --run-path)", aliases=["--negatives-run"]))
    collection: str | None = field(default=None, metadata=option("passages of id triples (pid<TAB>text)"))
    queries: str | None = field(default=None, metadata=option("queries of id triples (qid<TAB>text)"))
    split: str = field(default="train", metadata=option("qrels split of a BEIR folder"))
    negatives: int = field(default=15, metadata=option("hard negatives per query in each group"))
    skip_top_negatives: int = field(default=0, metadata=option(
        "ignore the first N non-positive candidates of each query (likely unlabelled positives)"))
    negative_depth: int = field(default=100, metadata=option("draw negatives from the first N candidates"))
    teacher_scores: str | None = field(default=None, metadata=option(
        "teacher scores 'qid pid score' (train score-teacher), for kd/clkd and negative filtering"))
    teacher_margin: float | None = field(default=None, metadata=option(
        "drop negatives that the teacher scores above (positive - margin): likely false negatives"))
    max_examples: int | None = field(default=None, metadata=option("use only the first N training queries"))
    pseudo_queries: bool = field(default=False, metadata=option(
        "add title -> text pseudo-queries from the corpus of a BEIR folder (documents with a title)"))
    pseudo_query_share: float = field(default=0.5, metadata=option("share of batches made of pseudo-queries"))
    validation_queries: int = field(default=100, metadata=option(
        "held-out training queries (a seeded sample, never trained on) ranked against the whole corpus for model "
        "selection; 0 = no validation"))
    validation_data: str | None = field(default=None, metadata=option(
        "a BEIR folder to validate on (default: --data); its --validation-split queries are used"))
    validation_split: str = field(default="train", metadata=option("qrels split of the validation queries"))

    def validate(self) -> None:
        for name in ("negatives", "skip_top_negatives", "validation_queries"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise InputError(f"must be a non-negative integer, got {value!r}", field=name)
        if self.negative_depth < 1:
            raise InputError(f"must be a positive integer, got {self.negative_depth!r}", field="negative_depth")
        if not 0.0 <= self.pseudo_query_share <= 1.0:
            raise InputError(f"must be in [0, 1], got {self.pseudo_query_share!r}", field="pseudo_query_share")
        if self.max_examples is not None and self.max_examples < 1:
            raise InputError(f"must be a positive integer, got {self.max_examples!r}", field="max_examples")


@dataclass
class SparseTrainingArguments(TrainingArguments):
    """transformers' ``TrainingArguments`` plus the retrieval objective."""

    objective: str = field(default="cl", metadata=option(
        "cl (InfoNCE), kd (distillation) or clkd (Lion's mix)", choices=["cl", "kd", "clkd"]))
    kd_loss: str = field(default="kl", metadata=option("kl or margin-mse", choices=["kl", "margin-mse"]))
    kd_weight: float = field(default=0.5, metadata=option("clkd: share of the distillation term"))
    teacher_temperature: float = field(default=1.0, metadata=option(
        "teacher scores are divided by this before their softmax (KL)"))
    score_scale: float = field(default=0.1, metadata=option(
        "initial inverse temperature multiplying every score in CL and KD (learned unless --no-learn-score-scale)"))
    learn_score_scale: bool = field(default=True, metadata=option("learn the inverse temperature (CLIP-style)"))
    dense_temperature: float = field(default=0.01, metadata=option(
        "dense models: scores are divided by this fixed temperature in CL and KD (Lion-DS: 0.01); --score-scale "
        "and --learn-score-scale are for sparse models"))
    flops_query_weight: float = field(default=0.0, metadata=option("FLOPS regularisation of queries (lambda_q)"))
    flops_doc_weight: float = field(default=0.0, metadata=option("FLOPS regularisation of documents (lambda_d)"))
    flops_ramp_fraction: float = field(default=1 / 3, metadata=option("FLOPS weights ramp up over this share"))
    train_top_k_slack: float | None = field(default=None, metadata=option(
        "train on the card's top-k times this (>= 1) largest weights, so that terms outside the index's "
        "top-k still get a gradient and can come in; none = all weights"))
    head_learning_rate: float | None = field(default=None, metadata=option(
        "learning rate of the lexical head and channel weight (default: --learning-rate)"))
    bias_learning_rate: float | None = field(default=None, metadata=option(
        "learning rate of the logit bias (default: --learning-rate)"))
    scale_learning_rate: float = field(default=1e-2, metadata=option("learning rate of the score scale"))
    overwrite_output_dir: bool = field(default=False, metadata=option(
        "replace what an earlier training run wrote in --output-dir (best/, final/, checkpoint-*, the log); "
        "without it such a folder is refused unless the run resumes"))
    # phase 1 (adapt)
    adapt_objective: str = field(default="clm", metadata=option(
        "adapt: clm (CSPLADE: L_CLM + lambda L_ReLU) or mntp (Lion: masked next-token prediction)",
        choices=["clm", "mntp"]))
    relu_weight: float = field(default=1.0, metadata=option("adapt: lambda of L_ReLU"))
    seq_len: int = field(default=2048, metadata=option("adapt: packed sequence length"))
    mask_fraction: float = field(default=0.2, metadata=option("adapt (mntp): share of masked tokens"))
    max_documents: int | None = field(default=None, metadata=option("adapt: use only the first N documents"))

    def validate_objective(self) -> None:
        if not 0.0 <= self.kd_weight <= 1.0:
            raise InputError(f"must be in [0, 1], got {self.kd_weight!r}", field="kd_weight")
        for name in ("teacher_temperature", "score_scale", "scale_learning_rate", "dense_temperature"):
            if not getattr(self, name) > 0:
                raise InputError(f"must be positive, got {getattr(self, name)!r}", field=name)
        for name in ("flops_query_weight", "flops_doc_weight"):
            if getattr(self, name) < 0:
                raise InputError(f"must be non-negative, got {getattr(self, name)!r}", field=name)
        if self.train_top_k_slack is not None and self.train_top_k_slack < 1:
            raise InputError(f"must be >= 1, got {self.train_top_k_slack!r}", field="train_top_k_slack")
        if not 0.0 < self.mask_fraction < 1.0:
            raise InputError(f"must be in (0, 1), got {self.mask_fraction!r}", field="mask_fraction")


def parser():
    from transformers import HfArgumentParser

    return HfArgumentParser((ModelArguments, DataArguments, SparseTrainingArguments))


def field_names() -> dict[str, set[str]]:
    return {cls.__name__: {f.name for f in dataclasses.fields(cls)}
            for cls in (ModelArguments, DataArguments, SparseTrainingArguments)}


def load_recipe(path: str | Path, command: str, known: set[str]) -> dict[str, Any]:
    """The values a YAML recipe gives ``command``: top-level keys, then the command's section.

    Unknown keys are errors naming the file and the key (a misspelt option must not be ignored)."""
    from csplade_pyserini.textio import read_yaml

    path = Path(path)
    data = read_yaml(path, "config file")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError("a config file must be a mapping of option names to values", path=path)
    values: dict[str, Any] = {}
    sections = {"adapt", "contrastive"}
    for raw_key, value in data.items():
        key = str(raw_key).replace("-", "_")
        if key in sections:
            if not isinstance(value, dict):
                raise InputError(f"section {raw_key!r} must be a mapping", path=path, field=str(raw_key))
            if key != command:
                continue
            for sub_key, sub_value in value.items():
                name = str(sub_key).replace("-", "_")
                if name not in known:
                    raise InputError(f"unknown option {sub_key!r}", path=path, field=f"{raw_key}.{sub_key}")
                values[name] = sub_value
            continue
        if key in ("description", "notes"):
            continue
        if key not in known:
            raise InputError(f"unknown option {raw_key!r}", path=path, field=str(raw_key))
        values.setdefault(key, value)
    # section values win over top-level ones
    for raw_key, value in data.items():
        if str(raw_key).replace("-", "_") == command and isinstance(value, dict):
            values.update({str(k).replace("-", "_"): v for k, v in value.items()})
    return values


def check_recipe_types(hf, values: dict[str, Any], path: str | Path) -> None:
    """Each recipe value must be what its flag would accept: one value for a one-value option, a value its
    type reads (an ``int`` option given ``[1, 2]`` or ``"many"`` is an error naming the file and key)."""
    actions = {action.dest: action for action in hf._actions}
    for key, value in values.items():
        action = actions.get(key)
        if action is None or value is None:
            continue
        many = action.nargs in ("+", "*")
        items = value if many and isinstance(value, list) else [value]
        if not many and isinstance(value, (list, dict)):
            raise InputError(f"expected one value, got {type(value).__name__} {value!r}", path=path, field=key)
        for item in items:
            if action.type is None or isinstance(item, bool) and action.type is not str:
                continue
            try:
                action.type(str(item))
            except (TypeError, ValueError, argparse.ArgumentTypeError):
                raise InputError(f"{item!r} is not a valid value for this option", path=path, field=key) from None
        if action.choices is not None and not many and value not in action.choices:
            raise InputError(f"{value!r} is not one of {list(action.choices)}", path=path, field=key)


def parse_arguments(command: str, argv: list[str]) -> tuple[ModelArguments, DataArguments, SparseTrainingArguments]:
    """Parse ``argv`` (after the command name) over an optional ``--config`` recipe."""
    import argparse

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known_args, rest = pre.parse_known_args(argv)
    hf = parser()
    if known_args.config:
        names = set().union(*field_names().values())
        defaults = load_recipe(known_args.config, command, names)
        check_recipe_types(hf, defaults, known_args.config)
        hf.set_defaults(**{k: (str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v)
                           for k, v in defaults.items()})
    import os

    import torch

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
        # torchrun on CPUs: transformers starts torch.distributed only when told the backend
        hf.set_defaults(ddp_backend="gloo", use_cpu=True)
    model_args, data_args, training_args = hf.parse_args_into_dataclasses(args=rest)
    model_args.validate()
    data_args.validate()
    training_args.validate_objective()
    return model_args, data_args, training_args
