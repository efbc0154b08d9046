"""Bias-only phase: train the per-term logit bias of a frozen sparse encoder.

Why a phase of its own: the scale and the per-term bias commute with the max over positions
(``log(1 + relu(max_t logit[t] + b))``), so with the backbone (and any adapter) frozen, each text's
max-pooled logits never change. They are computed once (one forward pass per training and validation
text, no backward) and an epoch over every training query then costs seconds instead of a backbone
forward and backward per step (SciFact on 2 cores: 22 steps of 32 queries x 16 documents in about
20 s, where one LoRA step of 4 queries x 4 documents takes 12 s). That makes
many epochs, all hard negatives and a validation every epoch affordable on a CPU, where LoRA steps
are not: 80 LoRA steps lowered the validation nDCG@10 of SmolLM2 in every setting tried.

What it learns is which vocabulary entries count and from which logit on: 49k numbers, the same file
the calibrated bias of a checkpoint already uses (``logit_bias.safetensors``), so the result loads as
``csplade:OUTPUT_DIR/final`` like any checkpoint. The bias stays <= 0: a positive bias would give the
term to every text (the pooled logits are floored at 0).

Everything else is phase 2 unchanged (data readers, groups, InfoNCE, distillation, FLOPS, top-k,
checkpoints, exact resume, validation): :class:`BiasTrainer` only swaps what is trained and where the
weights of a text come from.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import torch

from csplade_pyserini.errors import InputError
from csplade_pyserini.training import checkpoint as ckpt
from csplade_pyserini.training.loop import ContrastiveConfig, ContrastiveTrainer, TrainResult, score_vectors

logger = logging.getLogger(__name__)


@dataclass
class BiasConfig(ContrastiveConfig):
    """Phase 2 settings; the learning rate is in logit units (the bias is added to raw logits of 0-40)."""

    learning_rate: float = 0.2
    epochs: float = 20.0
    per_device_batch_size: int = 32
    warmup_fraction: float = 0.0
    logit_bias_sigmas: float | None = 2.0
    max_grad_norm: float = 0.0
    flops_query_weight: float = 0.0
    flops_doc_weight: float = 0.0
    max_negatives: int | None = None
    cache_batch_tokens: int | None = None

    def validate(self) -> None:
        super().validate()
        if self.full:
            raise InputError("the bias phase keeps the model frozen; --full does not apply", field="full")
        if self.max_negatives is not None and (not isinstance(self.max_negatives, int) or self.max_negatives < 1):
            raise InputError(f"must be a positive integer, got {self.max_negatives!r}", field="max_negatives")
        if self.cache_batch_tokens is not None and self.cache_batch_tokens < 1:
            raise InputError(f"must be a positive integer, got {self.cache_batch_tokens!r}",
                             field="cache_batch_tokens")


class PooledLogitCache:
    """Max-pooled LM-head logits of distinct texts, one bf16 row each (``vocab`` x 2 bytes per text).

    Rows are found by text, so a passage that appears under several ids, or in several groups, is
    encoded once."""

    def __init__(self, texts: Sequence[str], rows: torch.Tensor):
        self.row = {text: i for i, text in enumerate(texts)}
        self.rows = rows

    @classmethod
    @torch.inference_mode()
    def build(cls, encoder, texts: Sequence[str], kind: str, device: str = "cpu",
              max_tokens: int | None = None, desc: str = "") -> "PooledLogitCache":
        from tqdm import tqdm

        from csplade_pyserini.model.sparse import _decoder_and_head, default_max_tokens

        unique = list(dict.fromkeys(texts))
        vocab = _decoder_and_head(encoder.model)[1].shape[0]
        rows = torch.empty(len(unique), vocab, dtype=torch.bfloat16)
        logger.info("caching the max-pooled logits of %d %s texts (%.0f MB)", len(unique), kind,
                    rows.numel() * rows.element_size() / 2 ** 20)
        sequences = encoder.tokenize(unique, kind)
        was_training = encoder.model.training
        encoder.model.eval()
        try:
            with tqdm(total=len(unique), desc=desc or f"{kind} logits", unit=kind, mininterval=5) as bar:
                for batch in encoder.batches(sequences, max_tokens or default_max_tokens(device), 256):
                    pooled = encoder.max_logits(batch.input_ids.to(device), batch.attention_mask.to(device),
                                                batch.pool_mask.to(device))
                    rows[batch.order] = pooled.to(device="cpu", dtype=torch.bfloat16)
                    bar.update(len(batch.order))
        finally:
            encoder.model.train(was_training)
        return cls(unique, rows)

    def __getitem__(self, texts: Sequence[str]) -> torch.Tensor:
        try:
            index = [self.row[t] for t in texts]
        except KeyError:
            raise KeyError("a text of the batch was not cached (the cache must hold every training text)") from None
        return self.rows[index]


class BiasTrainer(ContrastiveTrainer):
    """Phase 2 with a frozen model: only the per-term logit bias is a parameter."""

    phase = "bias"

    def build_model(self):
        from csplade_pyserini.model.backbone import apply_adapter, load_causal_lm, resolve_backbone, resolve_dtype

        config = self.config
        model = load_causal_lm(resolve_backbone(self.card.backbone), dtype=resolve_dtype(config.dtype, config.device),
                               device=config.device)
        if config.init_adapter:
            # kept as an adapter (not merged) so that the saved checkpoint carries it, unchanged
            model = apply_adapter(model, ckpt.resolve_adapter_dir(config.init_adapter), merge=False)
            logger.info("frozen adapter of %s", config.init_adapter)
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        model.eval()
        return model

    def load_data(self) -> int:
        count = super().load_data()
        limit = self.config.max_negatives
        if limit is not None:  # the top of the run: every kept passage is encoded once, into the cache
            self.examples = [replace(e, negatives=e.negatives[:limit]) for e in self.examples]
        return count

    def prepare(self) -> None:
        super().prepare()  # the encoder, with the checkpoint's or a freshly calibrated bias
        if self.logit_bias is None:
            raise InputError("the bias phase needs a starting bias: --logit-bias-sigmas N, or an --init-adapter "
                             "checkpoint that has one", field="logit_bias_sigmas")
        self.bias = torch.nn.Parameter(self.logit_bias.detach().float().clamp(max=0.0).to(self.config.device))
        self.set_logit_bias(self.bias)
        queries = [e.query for e in self.examples]
        docs = [p.text for e in self.examples for p in [*e.positives, *e.negatives]]
        if self.eval_set is not None:
            queries += list(self.eval_set.queries.values())
            docs += list(self.eval_set.docs.values())
        tokens = self.config.cache_batch_tokens
        started = time.perf_counter()
        self.cache = {"query": PooledLogitCache.build(self.encoder, queries, "query", self.config.device, tokens),
                      "doc": PooledLogitCache.build(self.encoder, docs, "doc", self.config.device, tokens)}
        # the forward passes are most of this phase's cost: the run's elapsed time counts them (a resumed
        # run keeps the elapsed time of its checkpoint, which counted the first run's cache)
        self.elapsed_before += time.perf_counter() - started

    def card_notes(self) -> dict[str, Any]:
        notes = {k: v for k, v in super().card_notes().items() if k not in ("lora_rank", "lora_alpha", "full")}
        notes.update(trained="logit bias only (model frozen)", temperature=self.config.temperature,
                     max_negatives=self.config.max_negatives)
        return notes

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [self.bias]

    def set_logit_bias(self, bias: torch.Tensor | None) -> None:
        if getattr(self, "bias", None) is not None and bias is not None and bias is not self.bias:
            with torch.no_grad():
                self.bias.copy_(bias)  # the optimizer keeps pointing at the same parameter
            bias = self.bias
        super().set_logit_bias(bias)

    def restore_weights(self, folder: Path) -> None:
        """The model is frozen: a checkpoint's only trained weights are its bias (restored by the caller)."""

    def text_weights(self, texts: Sequence[str], kind: str) -> torch.Tensor:
        return self.encoder.activate(self.cache[kind][texts].to(self.config.device), self.bias)

    def after_step(self) -> None:
        with torch.no_grad():
            self.bias.clamp_(max=0.0)

    @torch.no_grad()
    def evaluate(self) -> dict[str, Any]:
        from csplade_pyserini.model.sparse import sparse_rows

        def sparse(texts: Sequence[str], kind: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
            return [row for start in range(0, len(texts), 256)
                    for row in sparse_rows(self.text_weights(texts[start:start + 256], kind), self.card.top_k(kind))]

        q_enc = sparse(list(self.eval_set.queries.values()), "query")
        d_enc = sparse(list(self.eval_set.docs.values()), "doc")
        return score_vectors(q_enc, d_enc, self.eval_set, self.bias.numel())

    def model_to_save(self):
        """The frozen adapter of --init-adapter (saved unchanged), else nothing: the backbone is as named."""
        return self.model if ckpt.is_peft_model(self.model) else None


def run_bias(config: BiasConfig, **kwargs) -> TrainResult:
    from csplade_pyserini.training.loop import eval_set_from_config

    return BiasTrainer(config, eval_set=kwargs.pop("eval_set", None) or eval_set_from_config(config),
                       **kwargs).train()
