"""The CSPLADE encoder: a causal LM whose LM-head logits are max-pooled into vocabulary weights.

Variants (METHOD.md section 1):

* ``causal``: the plain model.
* ``echo``: the input is fed twice and only the second copy is pooled, so every pooled position has
  seen the whole text once.
* ``bidirectional``: the causal mask is removed (every attention module gets ``is_causal = False`` and
  an explicit padding-only 4D mask, built by transformers for the configured attention kernel).

The same object serves inference (``encode``, sorted batches, no autograd) and training
(``forward``, differentiable, used by the training loop).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch

from csplade_pyserini.model.card import ModelCard
from csplade_pyserini.model.pooling import (
    DEFAULT_CHUNK_ELEMENTS,
    SHAPE_MULTIPLE,
    LogitsWorkspace,
    keep_top_k,
    max_pool_lm_head,
    round_up,
    splade_activation,
)
from csplade_pyserini.vectors.terms import special_token_ids

logger = logging.getLogger(__name__)


@dataclass
class Batch:
    input_ids: torch.Tensor  # [B, L]
    attention_mask: torch.Tensor  # [B, L] 1 = real token
    pool_mask: torch.Tensor  # [B, L] 1 = pooled position
    order: list[int]  # positions of these rows in the caller's list


def _decoder_and_head(model):
    """The transformer body and the LM-head weight of a ``*ForCausalLM`` (peft-wrapped or not)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = getattr(base, base.base_model_prefix)
    return decoder, base.get_output_embeddings().weight


def set_bidirectional(model, enabled: bool) -> int:
    """Flip ``is_causal`` on every attention module; returns how many modules were changed."""
    changed = 0
    for module in model.modules():
        if hasattr(module, "is_causal") and isinstance(module.is_causal, bool) and hasattr(module, "q_proj"):
            module.is_causal = not enabled
            changed += 1
    return changed


def default_max_tokens(device: str | torch.device) -> int:
    """Padded tokens per inference batch. On CPU small batches win: activations stay in cache
    (measured on 2 cores: 1,024 tokens gave 10.2 docs/s in bf16 and 104 GFLOP/s in fp32, 8,192 tokens
    7.1 docs/s and 77 GFLOP/s). GPUs want large batches."""
    return 32768 if str(device).startswith("cuda") else 1024


def sparse_rows(weights: torch.Tensor, top_k: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(term ids, weights) of each row of dense ``[batch, vocab]`` weights, on the CPU, keeping each row's
    ``top_k`` largest weights (None: all non-zero ones).

    One ids and one weights tensor per batch, handed out as per-row views. Two fresh small tensors per
    row, kept until an encoding block is written, helped fragment glibc's heap (probe on 200 SciFact
    documents: 890 -> 1529 MB per row, flat per batch). This alone did not hold a full echo pass (it
    still reached 6.6 GB); with the shared logits buffer of the LM head (LogitsWorkspace) the pass
    stayed at 0.9-1.0 GB.
    """
    weights = keep_top_k(weights, top_k).cpu()
    rows, ids = weights.nonzero(as_tuple=True)
    values = weights[rows, ids]
    counts = torch.bincount(rows, minlength=weights.shape[0]).tolist()
    return list(zip(ids.split(counts), values.split(counts)))


class SparseEncoder(torch.nn.Module):
    def __init__(self, model, tokenizer, card: ModelCard, chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
                 logit_bias: torch.Tensor | None = None):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.card = card
        self.chunk_elements = chunk_elements
        self.logit_scale = card.resolved_logit_scale(model.config.hidden_size)
        vocab = _decoder_and_head(model)[1].shape[0]
        if logit_bias is not None and logit_bias.numel() != vocab:
            raise ValueError(f"logit bias has {logit_bias.numel()} entries but the LM head has {vocab}")
        self.logit_bias = logit_bias
        if card.variant == "bidirectional":
            if set_bidirectional(model, True) == 0:
                raise ValueError(f"{type(model).__name__} has no attention modules with an is_causal flag; "
                                 "the bidirectional variant is not supported for it")
        self._excluded = None
        self._workspace = LogitsWorkspace()

    # --- tokenisation ------------------------------------------------------------------------------
    def max_length(self, kind: str) -> int:
        return self.card.max_query_length if kind == "query" else self.card.max_doc_length

    def tokenize(self, texts: Sequence[str], kind: str, max_length: int | None = None) -> list[list[int]]:
        """Prefix + text, no special tokens unless the card asks for BOS; special-token strings inside the
        text stay plain text (``split_special_tokens``), so a document cannot inject a BOS by accident."""
        prefix = self.card.query_prefix if kind == "query" else self.card.doc_prefix
        limit = max_length or self.max_length(kind)
        bos = self.tokenizer.bos_token_id if self.card.add_bos else None
        if self.card.add_bos and bos is None:
            raise ValueError("the model card asks for a BOS token but the tokenizer has none")
        budget = limit - (1 if bos is not None else 0)
        encoded = self.tokenizer([prefix + t for t in texts], add_special_tokens=False, truncation=True,
                                 max_length=budget, split_special_tokens=True)["input_ids"]
        return [([bos] if bos is not None else []) + ids for ids in encoded]

    def collate(self, sequences: Sequence[Sequence[int]], order: list[int] | None = None,
                pad_multiple: int = 1) -> Batch:
        """Right-pad (to a multiple of ``pad_multiple`` tokens); for *echo* the sequence is repeated and
        only the second copy is pooled."""
        echo = self.card.variant == "echo"
        rows = [list(s) + list(s) if echo else list(s) for s in sequences]
        width = round_up(max(1, max(len(r) for r in rows)), pad_multiple)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        pool = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (seq, row) in enumerate(zip(sequences, rows)):
            input_ids[i, :len(row)] = torch.tensor(row, dtype=torch.long)
            attention[i, :len(row)] = 1
            pool[i, len(row) - len(seq):len(row)] = 1
        return Batch(input_ids, attention, pool, order if order is not None else list(range(len(rows))))

    # --- forward -----------------------------------------------------------------------------------
    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        decoder, _ = _decoder_and_head(self.model)
        if self.card.variant != "bidirectional":
            return decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
        from transformers.masking_utils import create_bidirectional_mask

        embeds = decoder.get_input_embeddings()(input_ids)
        mask = create_bidirectional_mask(config=decoder.config, inputs_embeds=embeds, attention_mask=attention_mask,
                                         allow_is_bidirectional_skip=False)
        return decoder(inputs_embeds=embeds, attention_mask=mask, use_cache=False).last_hidden_state

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, pool_mask: torch.Tensor) -> torch.Tensor:
        """Dense ``[batch, vocab]`` SPLADE weights; special tokens are zeroed (they never become terms)."""
        return self.activate(self.max_logits(input_ids, attention_mask, pool_mask))

    def max_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   pool_mask: torch.Tensor) -> torch.Tensor:
        """``[batch, vocab]`` LM-head logits max-pooled over the pooled positions (floored at 0), before
        scale and bias. Kept apart from :meth:`activate` because scale and bias commute with the max:
        the bias-only training phase caches these once and never runs the backbone again."""
        _, head = _decoder_and_head(self.model)
        hidden = self.hidden_states(input_ids, attention_mask)
        return max_pool_lm_head(hidden, head, pool_mask, self.chunk_elements, self._workspace)

    def activate(self, pooled: torch.Tensor, logit_bias: torch.Tensor | None = None) -> torch.Tensor:
        """SPLADE weights from :meth:`max_logits` output, with the card's scale and ``logit_bias`` (by
        default the encoder's own bias); special tokens zeroed."""
        bias = self.logit_bias if logit_bias is None else logit_bias
        if bias is not None and bias.device != pooled.device:
            bias = bias.to(pooled.device)
            if logit_bias is None:
                self.logit_bias = bias
        weights = splade_activation(pooled.float(), self.logit_scale, bias)
        excluded = self.excluded_ids(weights.shape[-1], weights.device)
        if excluded.numel():
            weights = weights.index_fill(-1, excluded, 0.0)
        return weights

    def excluded_ids(self, vocab: int, device) -> torch.Tensor:
        if self._excluded is None or self._excluded.device != torch.device(device):
            ids = special_token_ids(self.tokenizer)
            # A tensor first made under inference_mode could never be used by a training forward.
            with torch.inference_mode(False):
                self._excluded = torch.tensor(sorted(i for i in ids if i < vocab), dtype=torch.long, device=device)
        return self._excluded

    # --- inference ---------------------------------------------------------------------------------
    def batches(self, sequences: Sequence[Sequence[int]], max_tokens: int, max_batch: int,
                pad_multiple: int = SHAPE_MULTIPLE) -> Iterable[Batch]:
        """Longest first, so each batch pads little; a batch holds at most ``max_tokens`` padded tokens."""
        factor = 2 if self.card.variant == "echo" else 1
        order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
        start = 0
        while start < len(order):
            width = round_up(max(1, len(sequences[order[start]]) * factor), pad_multiple)
            size = max(1, min(max_batch, max_tokens // width))
            chunk = order[start:start + size]
            yield self.collate([sequences[i] for i in chunk], chunk, pad_multiple)
            start += size

    @torch.inference_mode()
    def encode_sequences(self, sequences: Sequence[Sequence[int]], top_k: int | None = None,
                         max_tokens: int | None = None, max_batch: int = 256, device: str | torch.device = "cpu",
                         progress=None, pad_multiple: int = SHAPE_MULTIPLE) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Sparse (token ids, float weights) per sequence, in input order."""
        max_tokens = max_tokens or default_max_tokens(device)
        results: list = [None] * len(sequences)
        for batch in self.batches(sequences, max_tokens, max_batch, pad_multiple):
            weights = self.forward(batch.input_ids.to(device), batch.attention_mask.to(device),
                                   batch.pool_mask.to(device))
            for position, row in zip(batch.order, sparse_rows(weights, top_k)):
                results[position] = row
            if progress is not None:
                progress.update(len(batch.order))
        return results
