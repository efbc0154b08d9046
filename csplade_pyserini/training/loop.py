"""The trainers: phase 1 (adaptation on corpus text) and phase 2 (contrastive / distillation).

Both share one loop (:class:`Trainer`): LoRA through peft or full fine-tuning, gradient accumulation,
AdamW with a cosine schedule and linear warm-up, fp32 or bf16, optional gradient checkpointing,
periodic checkpoints with EXACT resume, a tqdm bar (loss, learning rate, non-zero terms per query and
document), an in-memory retrieval evaluation every N steps (nDCG@10 with ir-measures) and a JSON-lines
log (``train_log.jsonl``) in the output folder.

Data order is a pure function of the seed and the step: the examples of epoch ``e`` are visited in a
permutation drawn from ``Random(f"{seed}:{e}")`` and the negatives of the example at position ``p``
of epoch ``e`` are drawn from ``Random(f"{seed}:{e}:{p}")``; an incomplete last batch of an epoch is
dropped. A resumed run therefore needs only the step (plus the optimizer, scheduler and RNG states that
drive dropout) to replay exactly what an uninterrupted run would have done.

In-batch negatives are the documents of one micro-batch (``per_device_batch_size`` queries x (1 +
``negatives``) documents); gradient accumulation adds steps, not negatives.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import resource
import shutil
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from csplade_pyserini.errors import InputError
from csplade_pyserini.model.card import CARD_NAME, DEFAULT_BACKBONE, VARIANTS, ModelCard
from csplade_pyserini.training import checkpoint as ckpt
from csplade_pyserini.training.data import Passage, TrainingExample, make_groups, teacher_scores_for
from csplade_pyserini.training.losses import (
    IGNORE_INDEX,
    adaptation_loss,
    cl_kd,
    flops,
    info_nce,
    kl_distillation,
    margin_mse,
    shift_labels,
)
from csplade_pyserini.training.schedules import cosine_with_warmup, flops_weight

logger = logging.getLogger(__name__)

LOG_NAME = "train_log.jsonl"
DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
DTYPES = ("float32", "bfloat16", "float16", "auto")
# Hyper-parameters that do not change the trajectory of a run: they may differ on resume.
_RUN_CONTROL = {"output_dir", "resume", "save_steps", "save_total_limit", "eval_steps", "eval_data", "eval_topics",
                "eval_qrels", "eval_split", "eval_queries", "eval_docs", "logging_steps", "threads", "progress",
                "stop_after", "device", "data", "run", "collection", "queries", "teacher_scores", "init_adapter",
                "backbone", "model_name", "eval_batch_size", "query_top_k", "doc_top_k", "quant_scale",
                "eval_at_start", "save_best"}


# --- configuration ---------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    """Options shared by both phases (CLI flags are the dash-case names)."""

    output_dir: str = ""
    data: str | None = None
    # model card
    backbone: str = DEFAULT_BACKBONE
    variant: str = "causal"
    query_prefix: str = "query: "
    doc_prefix: str = "passage: "
    max_query_length: int = 64
    max_doc_length: int = 256
    logit_scale: float | str | None = None
    quant_scale: float = 100.0
    add_bos: bool = False
    query_top_k: int | None = None
    doc_top_k: int | None = None
    model_name: str | None = None
    # what is trained
    full: bool = False
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    target_modules: list[str] = field(default_factory=lambda: list(DEFAULT_TARGET_MODULES))
    init_adapter: str | None = None
    # optimisation
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    per_device_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    max_steps: int | None = None
    epochs: float = 1.0
    warmup_fraction: float = 0.05
    seed: int = 42
    dtype: str = "float32"
    gradient_checkpointing: bool = False
    device: str = "cpu"
    threads: int | None = None
    # run control
    save_steps: int = 0
    save_total_limit: int | None = None
    eval_steps: int = 0
    eval_data: str | None = None
    eval_topics: str | None = None
    eval_qrels: str | None = None
    eval_split: str = "test"
    eval_queries: int = 50
    eval_docs: int = 500
    eval_batch_size: int = 32
    eval_at_start: bool = False
    save_best: bool = False
    logging_steps: int = 1
    resume: str | None = None
    stop_after: int | None = None
    progress: bool = True

    def validate(self) -> None:
        def bad(name: str, message: str) -> InputError:
            return InputError(message, field=name)

        if not self.output_dir:
            raise bad("output_dir", "an output folder is required (--output-dir)")
        if self.variant not in VARIANTS:
            raise bad("variant", f"unknown variant {self.variant!r}; choose one of {', '.join(VARIANTS)}")
        if self.dtype not in DTYPES:
            raise bad("dtype", f"must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        positive_ints = ["lora_rank", "per_device_batch_size", "gradient_accumulation_steps", "max_query_length",
                         "max_doc_length", "eval_queries", "eval_docs", "eval_batch_size", "logging_steps"]
        for name in positive_ints:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise bad(name, f"must be a positive integer, got {value!r}")
        for name in ("max_steps", "stop_after", "save_total_limit", "threads"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise bad(name, f"must be a positive integer, got {value!r}")
        for name in ("save_steps", "eval_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise bad(name, f"must be a non-negative integer (0 = off), got {value!r}")
        if not self.learning_rate > 0:
            raise bad("learning_rate", f"must be positive, got {self.learning_rate!r}")
        if not 0.0 <= self.warmup_fraction <= 1.0:
            raise bad("warmup_fraction", f"must be in [0, 1], got {self.warmup_fraction!r}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise bad("lora_dropout", f"must be in [0, 1), got {self.lora_dropout!r}")
        if self.max_steps is None and not self.epochs > 0:
            raise bad("epochs", f"must be positive, got {self.epochs!r}")
        if not self.target_modules:
            raise bad("target_modules", "at least one module name is needed")
        if self.full and self.init_adapter:
            logger.info("--full with --init-adapter: the adapter is merged and the whole model is trained")

    def card(self, **extra: Any) -> ModelCard:
        """The model card of the model being trained (backbone as given; made portable on save)."""
        try:
            return ModelCard(backbone=self.backbone, variant=self.variant, add_bos=self.add_bos,
                             query_prefix=self.query_prefix, doc_prefix=self.doc_prefix,
                             max_query_length=self.max_query_length, max_doc_length=self.max_doc_length,
                             logit_scale=self.logit_scale, quant_scale=self.quant_scale, name=self.model_name,
                             query_top_k=self.query_top_k, doc_top_k=self.doc_top_k, **extra)
        except InputError as exc:
            raise InputError(exc.message, field=exc.field) from None

    def fingerprint(self) -> dict[str, Any]:
        """The settings that determine the trajectory (compared when resuming)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in _RUN_CONTROL}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class AdaptConfig(TrainConfig):
    """Phase 1: ``L_CLM + relu_weight * L_ReLU`` on packed corpus text (``objective=clm``, CSPLADE) or
    masked next-token prediction with bidirectional attention (``objective=mntp``, Lion / LLM2Vec)."""

    objective: str = "clm"
    seq_len: int = 2048
    relu_weight: float = 1.0
    mask_fraction: float = 0.2
    max_documents: int | None = None
    warmup_fraction: float = 0.1

    def validate(self) -> None:
        super().validate()
        if self.objective not in ("clm", "mntp"):
            raise InputError(f"adaptation objective must be clm or mntp, got {self.objective!r}", field="objective")
        if not isinstance(self.seq_len, int) or self.seq_len < 2:
            raise InputError(f"must be an integer >= 2, got {self.seq_len!r}", field="seq_len")
        if self.relu_weight < 0:
            raise InputError(f"must be non-negative, got {self.relu_weight!r}", field="relu_weight")
        if self.objective == "mntp" and self.variant != "bidirectional":
            raise InputError("masked next-token prediction trains bidirectional attention: use --variant "
                             "bidirectional (or --objective clm)", field="variant")
        if not 0.0 < self.mask_fraction < 1.0:
            raise InputError(f"must be in (0, 1), got {self.mask_fraction!r}", field="mask_fraction")
        if self.max_documents is not None and self.max_documents < 1:
            raise InputError(f"must be a positive integer, got {self.max_documents!r}", field="max_documents")


@dataclass
class ContrastiveConfig(TrainConfig):
    """Phase 2: InfoNCE (``cl``), distillation (``kd``: MarginMSE or KL) or both (``clkd``) + FLOPS."""

    data_format: str = "auto"
    run: str | None = None
    collection: str | None = None
    queries: str | None = None
    split: str = "train"
    negatives: int = 15
    max_examples: int | None = None
    objective: str = "cl"
    kd_loss: str = "kl"
    kd_weight: float = 0.5
    kd_temperature: float = 1.0
    teacher_scores: str | None = None
    temperature: float | None = None
    flops_query_weight: float = 0.003
    flops_doc_weight: float = 0.003
    flops_ramp_fraction: float = 1 / 3
    train_top_k: bool = False
    logit_bias_sigmas: float | None = None
    eval_holdout: bool = False  # leave the evaluation queries out of training (a validation slice)

    def validate(self) -> None:
        super().validate()
        if self.objective not in ("cl", "kd", "clkd"):
            raise InputError(f"objective must be cl, kd or clkd, got {self.objective!r}", field="objective")
        if self.kd_loss not in ("margin-mse", "kl"):
            raise InputError(f"kd loss must be margin-mse or kl, got {self.kd_loss!r}", field="kd_loss")
        if self.data_format not in DATA_FORMATS:
            raise InputError(f"data format must be one of {', '.join(DATA_FORMATS)}, got {self.data_format!r}",
                             field="data_format")
        if not isinstance(self.negatives, int) or self.negatives < 0:
            raise InputError(f"must be a non-negative integer, got {self.negatives!r}", field="negatives")
        if self.objective != "cl" and self.kd_loss == "margin-mse" and self.negatives < 1:
            raise InputError("MarginMSE needs at least one negative per query", field="negatives")
        if not 0.0 <= self.kd_weight <= 1.0:
            raise InputError(f"must be in [0, 1], got {self.kd_weight!r}", field="kd_weight")
        if self.kd_temperature <= 0:
            raise InputError(f"must be positive, got {self.kd_temperature!r}", field="kd_temperature")
        if self.temperature is not None and self.temperature <= 0:
            raise InputError(f"must be positive or null, got {self.temperature!r}", field="temperature")
        if self.train_top_k and self.query_top_k is None and self.doc_top_k is None:
            raise InputError("--train-top-k needs --query-top-k and/or --doc-top-k", field="train_top_k")
        for name in ("flops_query_weight", "flops_doc_weight"):
            if getattr(self, name) < 0:
                raise InputError(f"must be non-negative, got {getattr(self, name)!r}", field=name)
        if not 0.0 <= self.flops_ramp_fraction <= 1.0:
            raise InputError(f"must be in [0, 1], got {self.flops_ramp_fraction!r}", field="flops_ramp_fraction")
        if self.max_examples is not None and self.max_examples < 1:
            raise InputError(f"must be a positive integer, got {self.max_examples!r}", field="max_examples")


DATA_FORMATS = ("auto", "beir", "tevatron", "triples", "id-triples")


# --- helpers ---------------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def set_attention(model, bidirectional: bool) -> None:
    from csplade_pyserini.model.sparse import set_bidirectional

    set_bidirectional(model, bidirectional)


def load_training_tokenizer(card: ModelCard):
    from csplade_pyserini.model.backbone import load_tokenizer, resolve_backbone

    return load_tokenizer(resolve_backbone(card.backbone))


def build_model(config: TrainConfig, card: ModelCard):
    """Load the backbone and make it trainable: a fresh or ``--init-adapter`` LoRA, or the whole model.

    Seed before calling: the LoRA initialisation draws from torch's RNG.
    """
    from csplade_pyserini.model.backbone import apply_adapter, load_causal_lm, resolve_backbone, resolve_dtype

    source = resolve_backbone(card.backbone)
    dtype = resolve_dtype(config.dtype, config.device)
    model = load_causal_lm(source, dtype=dtype, device=config.device)
    model.config.use_cache = False
    if config.init_adapter:
        adapter_dir = ckpt.resolve_adapter_dir(config.init_adapter)
        if config.full:
            model = apply_adapter(model, adapter_dir, merge=True)
        else:
            model = apply_adapter(model, adapter_dir, merge=False, trainable=True)
            lora = next(iter(model.peft_config.values()))
            if (lora.r, lora.lora_alpha) != (config.lora_rank, config.lora_alpha):
                logger.warning("--init-adapter has LoRA rank %s alpha %s; --lora-rank/--lora-alpha (%s, %s) are "
                               "ignored", lora.r, lora.lora_alpha, config.lora_rank, config.lora_alpha)
            logger.info("continuing the adapter of %s", config.init_adapter)
    elif not config.full:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                          target_modules=list(config.target_modules), bias="none", task_type="CAUSAL_LM")
        try:
            model = get_peft_model(model, lora)
        except ValueError as exc:
            raise InputError(f"LoRA target modules {list(config.target_modules)} do not fit this model: {exc}",
                             field="target_modules") from None
    if config.full:
        for parameter in model.parameters():
            parameter.requires_grad_(True)
    if config.gradient_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5 name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if ckpt.is_peft_model(model):
            model.enable_input_require_grads()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    logger.info("trainable parameters: %d of %d (%.2f%%)", trainable, total, 100.0 * trainable / max(1, total))
    return model


class TrainLog:
    """``train_log.jsonl``: one JSON object per logged step or evaluation."""

    def __init__(self, path: Path):
        self.path = path

    def truncate_after(self, step: int) -> None:
        """Drop entries of an interrupted run beyond the checkpoint it resumes from."""
        if not self.path.exists():
            return
        from csplade_pyserini.atomic import atomic_file

        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if entry.get("step", 0) <= step:
                kept.append(line)
        with atomic_file(self.path) as handle:
            handle.writelines(line + "\n" for line in kept)

    def write(self, entry: Mapping[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry, sort_keys=False) + "\n")


def read_log(path: str | Path, event: str | None = "train") -> list[dict[str, Any]]:
    entries = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    return [e for e in entries if event is None or e.get("event") == event]


# --- in-memory retrieval evaluation ----------------------------------------------------------------
@dataclass
class EvalSet:
    """A small dev set scored in memory: a few queries, their judged documents plus distractors."""

    queries: dict[str, str]
    docs: dict[str, str]
    qrels: dict[str, dict[str, int]]

    @classmethod
    def from_files(cls, corpus: str | Path, topics: str | Path, qrels: str | Path, n_queries: int = 50,
                   n_docs: int = 500, seed: int = 0) -> "EvalSet":
        """``n_queries`` judged queries (a seeded sample), all their judged documents, and the first
        documents of the corpus as distractors until ``n_docs`` documents (more if the judged ones
        alone exceed it)."""
        from csplade_pyserini.datasets import load_qrels, load_topics, read_corpus

        all_qrels = load_qrels(qrels)
        topics_map = load_topics(topics)
        judged = sorted(q for q, docs in all_qrels.items() if q in topics_map and any(r > 0 for r in docs.values()))
        if not judged:
            raise InputError("no query of the topics has a positive judgement in the qrels", path=str(qrels))
        chosen = sorted(random.Random(seed).sample(judged, min(n_queries, len(judged))))
        wanted = {d for q in chosen for d in all_qrels[q]}
        docs: dict[str, str] = {}
        for doc in read_corpus(corpus):
            if doc.docid in wanted or len(docs) < n_docs - len(wanted - docs.keys()):
                docs[doc.docid] = doc.contents
            if wanted <= docs.keys() and len(docs) >= n_docs:
                break
        return cls({q: topics_map[q] for q in chosen}, docs, {q: all_qrels[q] for q in chosen})

    @classmethod
    def from_beir(cls, folder: str | Path, split: str = "test", **kwargs) -> "EvalSet":
        folder = Path(folder)
        topics = next((folder / n for n in ("queries.jsonl", "queries.jsonl.gz", "queries.tsv")
                       if (folder / n).exists()), folder / "queries.jsonl")
        return cls.from_files(folder, topics, folder / "qrels" / f"{split}.tsv", **kwargs)


def _dot_scores(queries: Sequence[tuple[torch.Tensor, torch.Tensor]],
                docs: Sequence[tuple[torch.Tensor, torch.Tensor]], vocab: int) -> torch.Tensor:
    """``[Q, D]`` dot products of sparse (ids, weights) vectors: dense queries, documents by their terms."""
    dense = torch.zeros(len(queries), vocab)
    for row, (ids, weights) in enumerate(queries):
        dense[row, ids] = weights.float()
    scores = torch.zeros(len(queries), len(docs))
    for column, (ids, weights) in enumerate(docs):
        if ids.numel():
            scores[:, column] = dense[:, ids] @ weights.float()
    return scores


def evaluate_retrieval(encoder, eval_set: EvalSet, device: str = "cpu", batch_size: int = 32,
                       depth: int = 100) -> dict[str, float]:
    """Encode the queries and documents with ``encoder`` (a SparseEncoder), rank by dot product and
    score nDCG@10 / RR@10 with ir-measures. Also reports the mean number of non-zero terms."""
    model = encoder.model
    was_training = model.training
    model.eval()
    try:
        qids, docids = list(eval_set.queries), list(eval_set.docs)
        card = encoder.card  # the card's top-k pruning applies, as it will at indexing and search time
        q_enc = encoder.encode_sequences(encoder.tokenize([eval_set.queries[q] for q in qids], "query"),
                                         top_k=card.query_top_k, max_batch=batch_size, device=device)
        d_enc = encoder.encode_sequences(encoder.tokenize([eval_set.docs[d] for d in docids], "doc"),
                                         top_k=card.doc_top_k, max_batch=batch_size, device=device)
    finally:
        model.train(was_training)
    vocab = encoder.model.get_output_embeddings().weight.shape[0]
    return score_vectors(q_enc, d_enc, eval_set, vocab, depth)


def score_vectors(q_enc: Sequence[tuple[torch.Tensor, torch.Tensor]], d_enc: Sequence[tuple[torch.Tensor, torch.Tensor]],
                  eval_set: EvalSet, vocab: int, depth: int = 100) -> dict[str, Any]:
    """Rank ``eval_set``'s documents for its queries (sparse (ids, weights) vectors, in the order of
    ``eval_set.queries`` and ``eval_set.docs``) and score nDCG@10 / RR@10 with ir-measures."""
    from ir_measures import RR, nDCG

    from csplade_pyserini.evaluation.measures import evaluate_run

    qids, docids = list(eval_set.queries), list(eval_set.docs)
    scores = _dot_scores(q_enc, d_enc, vocab)
    k = min(depth, len(docids))
    top = scores.topk(k, dim=1)
    run = {qid: {docids[j]: float(s) for s, j in zip(top.values[i].tolist(), top.indices[i].tolist())}
           for i, qid in enumerate(qids)}
    measures = evaluate_run(run, eval_set.qrels, [nDCG @ 10, RR @ 10])
    return {"ndcg@10": measures.get("nDCG@10", 0.0), "rr@10": measures.get("RR@10", 0.0),
            "eval_nnz_q": sum(ids.numel() for ids, _ in q_enc) / max(1, len(q_enc)),
            "eval_nnz_d": sum(ids.numel() for ids, _ in d_enc) / max(1, len(d_enc)), "_run": run}


def eval_set_from_config(config: TrainConfig) -> EvalSet | None:
    if not config.eval_data:
        return None
    folder = Path(config.eval_data)
    topics = config.eval_topics
    qrels = config.eval_qrels
    if topics is None and folder.is_dir():
        topics = next((str(folder / n) for n in ("queries.jsonl", "queries.jsonl.gz", "queries.tsv")
                       if (folder / n).exists()), None)
    if qrels is None and folder.is_dir() and (folder / "qrels" / f"{config.eval_split}.tsv").exists():
        qrels = str(folder / "qrels" / f"{config.eval_split}.tsv")
    if topics is None or qrels is None:
        raise InputError("cannot find the evaluation queries/qrels: pass --eval-topics and --eval-qrels, or a BEIR "
                         "folder with queries.jsonl and qrels/SPLIT.tsv", path=config.eval_data, field="eval_data")
    return EvalSet.from_files(config.eval_data, topics, qrels, config.eval_queries, config.eval_docs, config.seed)


# --- the shared loop -------------------------------------------------------------------------------
@dataclass
class TrainResult:
    output_dir: Path
    step: int
    total_steps: int
    final_dir: Path | None
    last: dict[str, Any]
    evals: list[dict[str, Any]]


class Trainer:
    """The loop both phases share; subclasses load data and compute the loss of a micro-batch."""

    phase = "train"

    def __init__(self, config: TrainConfig, eval_set: EvalSet | None = None):
        config.validate()
        self.config = config
        self.output_dir = Path(config.output_dir)
        self.eval_set = eval_set
        self.model = None
        self.logit_bias: torch.Tensor | None = None
        self.tokenizer = None

    # subclasses -------------------------------------------------------------------------------------
    def build_model(self):
        """The model being trained (LoRA, or the whole model with --full)."""
        return build_model(self.config, self.card)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """What the optimizer updates; called after :meth:`prepare`."""
        return [p for p in self.model.parameters() if p.requires_grad]

    def load_data(self) -> int:
        """Prepare the training data; returns the number of examples (blocks, queries) per epoch."""
        raise NotImplementedError

    def prepare(self) -> None:
        """Called once the model is built, before the loop."""

    def micro_loss(self, positions: list[tuple[int, int, int]], step: int) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def sparse_encoder(self):
        """A fresh SparseEncoder over the current model (for the evaluation hook). Fresh, because
        ``encode_sequences`` runs in inference mode and the encoder caches a tensor created there, which
        autograd then refuses in the training encoder."""
        from csplade_pyserini.model.sparse import SparseEncoder

        return SparseEncoder(self.model, self.tokenizer, self.card, logit_bias=self.logit_bias)

    def evaluate(self) -> dict[str, Any]:
        return evaluate_retrieval(self.sparse_encoder(), self.eval_set, self.config.device,
                                  self.config.eval_batch_size)

    # data positions ----------------------------------------------------------------------------------
    def permutation(self, epoch: int) -> list[int]:
        if epoch not in self._permutations:
            order = list(range(self.n_examples))
            random.Random(f"{self.config.seed}:{epoch}").shuffle(order)
            self._permutations = {epoch: order}
        return self._permutations[epoch]

    def positions(self, step: int, micro: int) -> list[tuple[int, int, int]]:
        """``(epoch, position in epoch, example index)`` of the micro-batch ``micro`` of ``step``."""
        size = self.config.per_device_batch_size
        first = (step * self.config.gradient_accumulation_steps + micro) * size
        out = []
        for k in range(first, first + size):
            epoch, position = divmod(k, self.usable_per_epoch)
            out.append((epoch, position, self.permutation(epoch)[position]))
        return out

    # setup -------------------------------------------------------------------------------------------
    def setup(self) -> None:
        config = self.config
        if config.threads:
            torch.set_num_threads(config.threads)
        seed_everything(config.seed)
        self.card = config.card(notes={"training": self.card_notes()})
        self.tokenizer = load_training_tokenizer(self.card)
        self.n_examples = self.load_data()  # data errors show before the (slow) model load
        per_step = config.per_device_batch_size * config.gradient_accumulation_steps
        self.steps_per_epoch = self.n_examples // per_step
        if self.steps_per_epoch < 1:
            raise InputError(f"{self.n_examples} training examples do not fill one step of {per_step} "
                             f"(per-device batch size x gradient accumulation)", field="data")
        self.usable_per_epoch = self.steps_per_epoch * per_step
        seed_everything(config.seed)
        self.model = self.build_model()
        self.total_steps = config.max_steps or max(1, math.ceil(config.epochs * self.steps_per_epoch))
        self._permutations: dict[int, list[int]] = {}
        self.start_step = 0
        self.elapsed_before = 0.0
        self.log = TrainLog(self.output_dir / LOG_NAME)
        self.logit_bias = self.saved_logit_bias(Path(config.init_adapter) if config.init_adapter else None)
        self.prepare()
        self.params = self.trainable_parameters()
        self.optimizer = torch.optim.AdamW(self.params, lr=config.learning_rate, weight_decay=config.weight_decay)
        self.scheduler = cosine_with_warmup(self.optimizer, self.total_steps, config.warmup_fraction)
        resume_from = self.resume_checkpoint()
        if resume_from is not None:
            self.restore(resume_from)
        else:
            if self.log.path.exists():
                self.log.truncate_after(-1)
            if (self.output_dir / ckpt.BEST_DIR).exists():
                shutil.rmtree(self.output_dir / ckpt.BEST_DIR)  # a best model of an earlier run is not this run's
            if ckpt.list_checkpoints(self.output_dir):
                logger.warning("%s holds checkpoints of an earlier run: this run starts from scratch and replaces "
                               "them as it goes (pass --resume to continue that run instead)", self.output_dir)
        self.write_run_info()

    def card_notes(self) -> dict[str, Any]:
        c = self.config
        notes = {"phase": self.phase, "lora_rank": None if c.full else c.lora_rank,
                 "lora_alpha": None if c.full else c.lora_alpha, "full": c.full, "learning_rate": c.learning_rate,
                 "seed": c.seed, "dtype": c.dtype}
        for name in ("objective", "kd_loss", "negatives", "flops_query_weight", "flops_doc_weight", "relu_weight",
                     "seq_len", "logit_bias_sigmas", "train_top_k", "init_adapter"):
            if hasattr(c, name):
                notes[name] = getattr(c, name)
        return notes

    def write_run_info(self) -> None:
        from csplade_pyserini.atomic import atomic_file

        info = {"phase": self.phase, "config": self.config.to_dict(), "total_steps": self.total_steps,
                "steps_per_epoch": self.steps_per_epoch, "examples": self.n_examples}
        with atomic_file(self.output_dir / "training_args.json") as handle:
            json.dump(info, handle, indent=2, default=str)
            handle.write("\n")

    def resume_checkpoint(self) -> Path | None:
        resume = self.config.resume
        if not resume:
            return None
        if resume in ("latest", "auto", "true", "True"):
            found = ckpt.latest_checkpoint(self.output_dir)
            if found is None:
                logger.warning("--resume: no checkpoint in %s yet; starting from scratch", self.output_dir)
            return found
        path = Path(resume)
        if not path.is_dir():
            raise InputError("checkpoint to resume from does not exist", path=path, field="resume")
        return path

    def saved_logit_bias(self, folder: Path | None) -> torch.Tensor | None:
        """The calibrated logit bias a checkpoint carries (None when it has none)."""
        if folder is None or not (Path(folder) / CARD_NAME).exists():
            return None
        card = ModelCard.load(folder)
        if not card.logit_bias:
            return None
        from csplade_pyserini.model.logit_bias import load_logit_bias

        return load_logit_bias(card.logit_bias, Path(folder))

    def set_logit_bias(self, bias: torch.Tensor | None) -> None:
        self.logit_bias = bias
        if getattr(self, "encoder", None) is not None:
            self.encoder.logit_bias = bias

    def restore(self, folder: Path) -> None:
        state = ckpt.load_trainer_state(folder)
        if state.get("phase") != self.phase:
            raise InputError(f"checkpoint is from phase {state.get('phase')!r}, not {self.phase!r}", path=folder)
        saved, current = state.get("fingerprint", {}), self.config.fingerprint()
        differ = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
        if differ:
            details = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in differ[:5])
            raise InputError(f"cannot resume exactly: settings differ from the checkpoint ({details}); start a new "
                             "run with --init-adapter to continue from it with other settings", path=folder)
        if state.get("total_steps") != self.total_steps or state.get("examples") != self.n_examples:
            raise InputError(f"cannot resume exactly: the run had {state.get('total_steps')} steps over "
                             f"{state.get('examples')} examples, this one {self.total_steps} over {self.n_examples}",
                             path=folder)
        self.restore_weights(folder)
        self.set_logit_bias(self.saved_logit_bias(folder))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        ckpt.set_rng_state(state["rng"])
        self.start_step = int(state["step"])
        self.elapsed_before = float(state.get("elapsed", 0.0))
        self.log.truncate_after(self.start_step)
        logger.info("resumed from %s at step %d of %d", folder, self.start_step, self.total_steps)

    def after_step(self) -> None:
        """Called after each optimizer step (e.g. to project parameters back into their domain)."""

    def restore_weights(self, folder: Path) -> None:
        if ckpt.is_peft_model(self.model):
            ckpt.load_adapter_weights(self.model, folder)
        else:
            ckpt.load_full_weights(self.model, folder)

    # checkpoints -----------------------------------------------------------------------------------
    def trainer_state(self, step: int, elapsed: float) -> dict[str, Any]:
        return {"phase": self.phase, "step": step, "total_steps": self.total_steps, "examples": self.n_examples,
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "rng": ckpt.rng_state(), "fingerprint": self.config.fingerprint(), "elapsed": elapsed}

    def save(self, folder: Path, step: int, elapsed: float, resumable: bool = True) -> Path:
        notes = dict(self.card.notes)
        notes["training"] = {**notes.get("training", {}), "step": step, "total_steps": self.total_steps}
        card = self.card.replace(notes=notes)
        state = self.trainer_state(step, elapsed) if resumable else None
        return ckpt.save_checkpoint(folder, self.model_to_save(), self.tokenizer, card, state,
                                    logit_bias=self.logit_bias)

    def model_to_save(self):
        """The weights a checkpoint carries (None: none, only the card and the bias)."""
        return self.model

    # loop ---------------------------------------------------------------------------------------------
    def train(self) -> TrainResult:
        from tqdm import tqdm

        if self.model is None:
            self.setup()
        config = self.config
        stop = min(self.total_steps, config.stop_after or self.total_steps)
        started = time.perf_counter()
        last: dict[str, Any] = {}
        evals: list[dict[str, Any]] = []
        step = self.start_step
        # a resumed run keeps competing against the best evaluation logged before the interruption
        earlier = read_log(self.log.path, "eval") if self.log.path.exists() else []
        self.best_ndcg = max((e["ndcg@10"] for e in earlier if e["step"] <= step), default=None)
        if self.eval_set is not None and config.eval_at_start and step == 0:
            evals.append(self.run_eval(0, 0.0))
        bar = tqdm(total=self.total_steps, initial=self.start_step, desc=self.phase, unit="step",
                   dynamic_ncols=True, disable=not config.progress)
        try:
            while step < stop:
                self.model.train()
                lr = self.scheduler.get_last_lr()[0]
                self.optimizer.zero_grad(set_to_none=True)
                parts: dict[str, float] = defaultdict(float)
                for micro in range(config.gradient_accumulation_steps):
                    loss, micro_parts = self.micro_loss(self.positions(step, micro), step)
                    if not torch.isfinite(loss):
                        raise FloatingPointError(f"non-finite loss {loss.item()} at step {step + 1}")
                    (loss / config.gradient_accumulation_steps).backward()
                    for key, value in micro_parts.items():
                        parts[key] += value / config.gradient_accumulation_steps
                if config.max_grad_norm and config.max_grad_norm > 0:
                    parts["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.params, config.max_grad_norm))
                self.optimizer.step()
                self.after_step()
                self.scheduler.step()
                step += 1
                elapsed = self.elapsed_before + time.perf_counter() - started
                last = {"event": "train", "step": step, **{k: round(v, 6) for k, v in parts.items()},
                        "lr": lr, "elapsed": round(elapsed, 3), "peak_rss_mb": round(peak_rss_mb(), 1)}
                if torch.cuda.is_available() and str(config.device).startswith("cuda"):
                    last["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2 ** 20, 1)
                if step % config.logging_steps == 0 or step == stop:
                    self.log.write(last)
                bar.set_postfix(self.postfix(parts, lr), refresh=False)
                bar.update(1)
                if config.save_steps and step % config.save_steps == 0 and step < self.total_steps:
                    self.save(self.output_dir / f"{ckpt.CHECKPOINT_PREFIX}{step}", step, elapsed)
                    ckpt.rotate_checkpoints(self.output_dir, config.save_total_limit)
                if self.eval_set is not None and config.eval_steps and step % config.eval_steps == 0:
                    evals.append(self.run_eval(step, elapsed))
        finally:
            bar.close()
        final_dir = None
        if step >= self.total_steps:
            elapsed = self.elapsed_before + time.perf_counter() - started
            if self.eval_set is not None and not (evals and evals[-1]["step"] == step):
                evals.append(self.run_eval(step, elapsed))
            final_dir = self.save(self.output_dir / ckpt.FINAL_DIR, step, elapsed, resumable=False)
        else:
            folder = self.output_dir / f"{ckpt.CHECKPOINT_PREFIX}{step}"
            if step > self.start_step and not (folder / ckpt.STATE_NAME).exists():
                self.save(folder, step, self.elapsed_before + time.perf_counter() - started)
            logger.info("stopped at step %d of %d (--stop-after); continue with --resume", step, self.total_steps)
        return TrainResult(self.output_dir, step, self.total_steps, final_dir, last, evals)

    def run_eval(self, step: int, elapsed: float) -> dict[str, Any]:
        start = time.perf_counter()
        result = self.evaluate()
        run = result.pop("_run", None)
        entry = {"event": "eval", "step": step, **{k: round(v, 6) for k, v in result.items()},
                 "eval_seconds": round(time.perf_counter() - start, 3), "elapsed": round(elapsed, 3)}
        self.log.write(entry)
        logger.info("step %d: nDCG@10 %.4f RR@10 %.4f (terms/query %.1f, terms/doc %.1f)", step,
                    result["ndcg@10"], result["rr@10"], result["eval_nnz_q"], result["eval_nnz_d"])
        if self.config.save_best and (self.best_ndcg is None or result["ndcg@10"] > self.best_ndcg):
            self.best_ndcg = result["ndcg@10"]
            self.save(self.output_dir / ckpt.BEST_DIR, step, elapsed, resumable=False)
            self.log.write({"event": "best", "step": step, "ndcg@10": round(result["ndcg@10"], 6)})
            logger.info("step %d is the best so far: saved to %s", step, self.output_dir / ckpt.BEST_DIR)
        entry["_run"] = run
        return entry

    def postfix(self, parts: Mapping[str, float], lr: float) -> dict[str, str]:
        out = {"loss": f"{parts.get('loss', float('nan')):.4f}", "lr": f"{lr:.2e}"}
        for key in ("nnz_q", "nnz_d"):
            if key in parts:
                out[key] = f"{parts[key]:.0f}"
        return out


# --- phase 1 ---------------------------------------------------------------------------------------
class AdaptTrainer(Trainer):
    """CSPLADE phase 1 on packed corpus text, or Lion's masked next-token phase (``objective=mntp``)."""

    phase = "adapt"

    def __init__(self, config: AdaptConfig, texts: Sequence[str] | None = None, eval_set: EvalSet | None = None):
        super().__init__(config, eval_set)
        self.texts = texts

    def read_texts(self) -> list[str]:
        if self.texts is not None:
            return list(self.texts)
        from csplade_pyserini.datasets import read_corpus

        if not self.config.data:
            raise InputError("a corpus is required (--data: BEIR folder, corpus.jsonl or collection.tsv)",
                             field="data")
        texts = []
        for doc in read_corpus(self.config.data):
            texts.append(doc.contents)
            if self.config.max_documents and len(texts) >= self.config.max_documents:
                break
        return texts

    def load_data(self) -> int:
        from csplade_pyserini.training.packing import pack_sequences

        texts = self.read_texts()
        eos = self.tokenizer.eos_token_id
        if eos is None:
            raise InputError("the tokenizer has no EOS token to separate packed documents", field="backbone")
        token_lists: list[list[int]] = []
        for start in range(0, len(texts), 1000):
            token_lists.extend(self.tokenizer(texts[start:start + 1000], add_special_tokens=False)["input_ids"])
        packed = pack_sequences(token_lists, self.config.seq_len, eos)
        if len(packed) == 0:
            raise InputError(f"the corpus ({sum(map(len, token_lists))} tokens) does not fill one sequence of "
                             f"{self.config.seq_len} tokens; lower --seq-len", field="data")
        self.blocks = packed.input_ids
        logger.info("packed %d documents into %d sequences of %d tokens", len(texts), len(packed), self.config.seq_len)
        return len(packed)

    def prepare(self) -> None:
        self.mntp = self.config.objective == "mntp"
        if self.mntp:
            from csplade_pyserini.model.sparse import SparseEncoder

            self.encoder = SparseEncoder(self.model, self.tokenizer, self.card.replace(variant="bidirectional"))
            self.mask_id = mask_token_id(self.tokenizer)
        else:
            set_attention(self.model, False)

    def evaluate(self) -> dict[str, Any]:
        try:
            return super().evaluate()
        finally:  # the evaluation encoder may have switched attention to the card's variant
            set_attention(self.model, self.mntp)

    def micro_loss(self, positions, step):
        index = torch.tensor([p[2] for p in positions], dtype=torch.long)
        input_ids = self.blocks[index].to(self.config.device)
        if self.mntp:
            return self.mntp_loss(input_ids, positions)
        logits = self.model(input_ids=input_ids, use_cache=False).logits
        labels = shift_labels(input_ids)
        return self._loss(logits, labels)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor):
        result = adaptation_loss(logits, labels, relu_weight=self.config.relu_weight)
        with torch.no_grad():
            positive = (logits > 0).sum(-1).float().mean().item()
        return result.total, {"loss": result.total.item(), "clm": result.clm.item(), "relu": result.relu.item(),
                              "positive_logits": positive}

    def mask(self, input_ids: torch.Tensor, positions) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Masked inputs, labels aligned with the logits and the boolean mask: position ``i - 1`` predicts
        the original token ``i`` for every masked ``i >= 1`` (LLM2Vec's masked NEXT-token prediction). The
        mask is drawn from a generator seeded by the data position, so it is the same on resume."""
        generator = torch.Generator().manual_seed(hash_positions(self.config.seed, positions))
        batch, length = input_ids.shape
        chosen = torch.rand(batch, length, generator=generator) < self.config.mask_fraction
        chosen[:, 0] = False
        for row in range(batch):  # every row predicts at least one token
            if not bool(chosen[row].any()):
                chosen[row, 1 + int(torch.randint(length - 1, (1,), generator=generator))] = True
        chosen = chosen.to(input_ids.device)
        masked = torch.where(chosen, torch.full_like(input_ids, self.mask_id), input_ids)
        labels = torch.full_like(input_ids, IGNORE_INDEX)
        labels[:, :-1] = torch.where(chosen[:, 1:], input_ids[:, 1:], torch.full_like(input_ids[:, 1:], IGNORE_INDEX))
        return masked, labels, chosen

    def mntp_loss(self, input_ids: torch.Tensor, positions):
        masked, labels, _ = self.mask(input_ids, positions)
        hidden = self.encoder.hidden_states(masked, torch.ones_like(masked))
        base = self.model.get_base_model() if ckpt.is_peft_model(self.model) else self.model
        logits = base.get_output_embeddings()(hidden)
        return self._loss(logits, labels)


def mask_token_id(tokenizer) -> int:
    """The tokenizer's mask token; else ``_`` as LLM2Vec does for Llama (no mask token), else UNK / pad."""
    if getattr(tokenizer, "mask_token_id", None) is not None:
        return tokenizer.mask_token_id
    underscore = tokenizer("_", add_special_tokens=False)["input_ids"]
    if len(underscore) == 1:
        return underscore[0]
    return tokenizer.unk_token_id if tokenizer.unk_token_id is not None else tokenizer.pad_token_id


def hash_positions(seed: int, positions) -> int:
    import hashlib

    key = f"{seed}:" + ",".join(f"{e}.{p}" for e, p, _ in positions)
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little") & ((1 << 63) - 1)


# --- phase 2 ---------------------------------------------------------------------------------------
def load_examples(config: ContrastiveConfig) -> list[TrainingExample]:
    """Training examples from ``--data`` in the format given (or guessed from the path)."""
    from csplade_pyserini.training import data as readers

    if not config.data:
        raise InputError("training data is required (--data)", field="data")
    path = Path(config.data)
    fmt = config.data_format
    if fmt == "auto":
        if path.is_dir():
            fmt = "beir"
        elif ".jsonl" in path.suffixes:
            fmt = "tevatron"
        elif config.collection:
            fmt = "id-triples"
        else:
            fmt = "triples"
    if fmt == "beir":
        if config.negatives and not config.run:
            raise InputError("BEIR training data needs a run with hard negatives (--run, from `train "
                             "mine-negatives`), or --negatives 0 for in-batch negatives only", field="run")
        # every run negative is kept; make_groups samples ``negatives`` of them per visit
        examples = readers.read_beir_train(path, config.run, n_negatives=None, split=config.split)
    elif fmt == "tevatron":
        examples = list(readers.read_tevatron(path))
    elif fmt == "triples":
        examples = readers.group_by_query(readers.read_text_triples(path))
    else:
        if not config.collection or not config.queries:
            raise InputError("id triples need --collection and --queries", field="collection")
        examples = readers.group_by_query(readers.read_id_triples(path, config.collection, config.queries))
    if config.max_examples:
        examples = examples[:config.max_examples]
    return examples


class ContrastiveTrainer(Trainer):
    """Phase 2: queries and ``[positive] + negatives`` groups through the SparseEncoder of the card's
    variant; InfoNCE over in-batch + hard negatives, distillation, CL+KD, and FLOPS on both sides."""

    phase = "contrastive"

    def __init__(self, config: ContrastiveConfig, examples: Sequence[TrainingExample] | None = None,
                 teacher: Mapping[str, Mapping[str, float]] | None = None, eval_set: EvalSet | None = None):
        super().__init__(config, eval_set)
        self.examples = list(examples) if examples is not None else None
        self.teacher = teacher

    def load_data(self) -> int:
        config = self.config
        if self.examples is None:
            self.examples = load_examples(config)
        if self.eval_set is not None and config.eval_holdout:
            # a validation slice cut from the training split (--eval-split train) must not be trained on
            held_out = [e for e in self.examples if e.query_id in self.eval_set.queries]
            if held_out:
                logger.info("%d training queries are evaluation queries and are held out of training", len(held_out))
                self.examples = [e for e in self.examples if e.query_id not in self.eval_set.queries]
        if config.objective != "cl":
            if self.teacher is None:
                if not config.teacher_scores:
                    raise InputError(f"objective {config.objective} needs teacher scores (--teacher-scores, from "
                                     "`train score-teacher`)", field="teacher_scores")
                from csplade_pyserini.training.data import read_teacher_scores

                self.teacher = read_teacher_scores(config.teacher_scores)
            self.examples = self.keep_scored(self.examples)
        if config.negatives:
            lacking = [e.query_id for e in self.examples if not e.negatives]
            if lacking:
                logger.warning("%d queries have no negatives and are skipped (first: %s)", len(lacking), lacking[0])
                self.examples = [e for e in self.examples if e.negatives]
        if not self.examples:
            raise InputError("no usable training example", field="data")
        logger.info("%d training queries, groups of 1 positive + %d negatives", len(self.examples), config.negatives)
        return len(self.examples)

    def keep_scored(self, examples: list[TrainingExample]) -> list[TrainingExample]:
        """Distillation needs a teacher score for every passage of a group: keep only scored passages."""
        kept, dropped_passages, dropped_queries = [], 0, 0
        for example in examples:
            row = self.teacher.get(example.query_id, {})
            positives = [p for p in example.positives if p.docid in row]
            negatives = [p for p in example.negatives if p.docid in row]
            dropped_passages += len(example.positives) + len(example.negatives) - len(positives) - len(negatives)
            if not positives or (self.config.negatives and not negatives):
                dropped_queries += 1
                continue
            kept.append(TrainingExample(example.query_id, example.query, positives, negatives))
        if dropped_passages or dropped_queries:
            logger.warning("teacher scores: %d passages without a score left out, %d queries skipped",
                           dropped_passages, dropped_queries)
        return kept

    def prepare(self) -> None:
        from csplade_pyserini.model.sparse import SparseEncoder

        base = self.model.get_base_model() if ckpt.is_peft_model(self.model) else self.model
        if hasattr(base.get_output_embeddings(), "lora_A"):
            raise InputError("the LM head carries a LoRA adapter, but the sparse encoder pools the head's weight "
                             "directly and would ignore it: leave lm_head out of --target-modules (or of the "
                             "--init-adapter), or use --full", field="target_modules")
        if self.logit_bias is None and self.config.logit_bias_sigmas is not None:
            self.logit_bias = self.calibrate_logit_bias()
        self.encoder = SparseEncoder(self.model, self.tokenizer, self.card, logit_bias=self.logit_bias)

    def calibrate_logit_bias(self, n_documents: int = 256) -> torch.Tensor:
        """Per-term bias from the training documents (positives and negatives, in data order)."""
        from csplade_pyserini.model.logit_bias import calibrate_logit_bias
        from csplade_pyserini.model.sparse import SparseEncoder

        texts: dict[str, str] = {}
        for example in self.examples:
            for passage in [*example.positives, *example.negatives]:
                texts.setdefault(passage.docid, passage.text)
            if len(texts) >= n_documents:
                break
        plain = SparseEncoder(self.model, self.tokenizer, self.card)
        return calibrate_logit_bias(plain, list(texts.values())[:n_documents], self.config.logit_bias_sigmas)

    def groups(self, positions) -> tuple[list[str], list[str], list[list[Passage]], list[str]]:
        queries, docs, groups, qids = [], [], [], []
        for epoch, position, index in positions:
            example = self.examples[index]
            group = make_groups(example, self.config.negatives, random.Random(f"{self.config.seed}:{epoch}:{position}"))
            queries.append(example.query)
            qids.append(example.query_id)
            groups.append(group)
            docs.extend(p.text for p in group)
        return queries, docs, groups, qids

    def text_weights(self, texts: Sequence[str], kind: str) -> torch.Tensor:
        """Dense ``[len(texts), vocab]`` weights of the model being trained."""
        batch = self.encoder.collate(self.encoder.tokenize(texts, kind))
        device = self.config.device
        return self.encoder(batch.input_ids.to(device), batch.attention_mask.to(device), batch.pool_mask.to(device))

    def encode(self, texts: Sequence[str], kind: str) -> torch.Tensor:
        from csplade_pyserini.model.pooling import keep_top_k

        weights = self.text_weights(texts, kind)
        return keep_top_k(weights, self.card.top_k(kind)) if self.config.train_top_k else weights

    def micro_loss(self, positions, step):
        config = self.config
        queries, docs, groups, qids = self.groups(positions)
        q = self.encode(queries, "query")
        d = self.encode(docs, "doc")
        group_size = 1 + config.negatives
        parts: dict[str, float] = {}
        main = None
        if config.objective in ("cl", "clkd"):
            cl = info_nce(q, d, group_size, config.temperature)
            parts["cl"] = cl.item()
            main = cl
        if config.objective in ("kd", "clkd"):
            teacher = torch.tensor([teacher_scores_for(self.teacher, qid, group) for qid, group in zip(qids, groups)],
                                   dtype=torch.float32, device=q.device)
            student = torch.einsum("qv,qgv->qg", q, d.view(len(queries), group_size, -1))
            if config.kd_loss == "margin-mse":
                kd = margin_mse(student[:, 0], student[:, 1:], teacher[:, 0], teacher[:, 1:])
            else:
                kd = kl_distillation(student, teacher, config.kd_temperature)
            parts["kd"] = kd.item()
            main = kd if config.objective == "kd" else cl_kd(main, kd, config.kd_weight)
        lambda_q = flops_weight(step, self.total_steps, config.flops_query_weight, config.flops_ramp_fraction)
        lambda_d = flops_weight(step, self.total_steps, config.flops_doc_weight, config.flops_ramp_fraction)
        flops_q, flops_d = flops(q), flops(d)
        loss = main + lambda_q * flops_q + lambda_d * flops_d
        with torch.no_grad():
            nnz_q, nnz_d = (q > 0).sum(-1), (d > 0).sum(-1)
            parts.update({
                "loss": loss.item(), "flops_q": flops_q.item(), "flops_d": flops_d.item(), "lambda_q": lambda_q,
                "lambda_d": lambda_d, "nnz_q": nnz_q.float().mean().item(), "nnz_d": nnz_d.float().mean().item(),
                "zero_q": (nnz_q == 0).float().mean().item(), "zero_d": (nnz_d == 0).float().mean().item(),
                "zero_share": float(((nnz_q == 0).sum() + (nnz_d == 0).sum()).item()) / (len(nnz_q) + len(nnz_d)),
            })
        return loss, parts


def run_adapt(config: AdaptConfig, **kwargs) -> TrainResult:
    return AdaptTrainer(config, eval_set=kwargs.pop("eval_set", None) or eval_set_from_config(config),
                        **kwargs).train()


def run_contrastive(config: ContrastiveConfig, **kwargs) -> TrainResult:
    return ContrastiveTrainer(config, eval_set=kwargs.pop("eval_set", None) or eval_set_from_config(config),
                              **kwargs).train()
