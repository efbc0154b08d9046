"""The CSPLADE encoder: a causal LM whose LM-head logits are max-pooled into vocabulary weights.

Variants (METHOD.md section 1):

* ``causal``: the plain model. The prefix (``passage: ``, a BOS if any) is not pooled: under causal
  attention its hidden states do not depend on the text, so every document would get the same
  terms from them (41-49 of a SciFact document's 256 kept terms took their maximum there).
* ``echo``: the input is fed twice and only the second copy is pooled, so every pooled position has
  seen the whole text once.
* ``bidirectional``: the causal mask is removed (every attention module gets ``is_causal = False`` and
  an explicit padding-only 4D mask, built by transformers for the configured attention kernel).

Channels, merged by an element-wise max: the LM head (``expansion``, CSPLADE proper:
``expansion_weight * log(1 + relu(scale * max_t logits + bias))``) and, where the card names one, the
lexical impact head (``model/lexical.py``, beyond CSPLADE).

The same object serves inference (``encode_sequences``: sorted batches, no autograd) and training
(``forward``: differentiable). Training can start the forward at any layer from cached states
(``start_layer``), which is how the CPU recipe trains the top of the model without re-running the
frozen bottom.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch

from csplade_pyserini.model.card import ModelCard
from csplade_pyserini.model.context import ContextHead
from csplade_pyserini.model.lexical import LexicalHead, pool_token_impacts
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


def decoder_and_head(model):
    """The transformer body and the LM-head weight of a ``*ForCausalLM`` (peft-wrapped or not)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = getattr(base, base.base_model_prefix)
    return decoder, base.get_output_embeddings().weight




def num_layers(model) -> int:
    return len(decoder_and_head(model)[0].layers)


def set_bidirectional(model, enabled: bool) -> int:
    """Flip ``is_causal`` on every attention module; returns how many modules were changed."""
    changed = 0
    for module in model.modules():
        if hasattr(module, "is_causal") and isinstance(module.is_causal, bool) and hasattr(module, "q_proj"):
            module.is_causal = not enabled
            changed += 1
    return changed


@contextlib.contextmanager
def layers_from(decoder, start: int):
    """Let ``decoder`` run only its layers ``start..`` (then its final norm) on ``inputs_embeds``.

    The decoder's own forward (rotary embeddings, masks for any attention kernel, the final norm) runs
    unchanged; only its layer list is shortened while the context is open. ``start = 0`` is the
    whole model."""
    if start == 0:
        yield decoder
        return
    full = decoder.layers
    decoder.layers = torch.nn.ModuleList(list(full)[start:])
    try:
        yield decoder
    finally:
        decoder.layers = full


def default_max_tokens(device: str | torch.device) -> int:
    """Padded tokens per inference batch. On CPU small batches win: activations stay in cache
    (measured on 2 cores: 1,024 tokens gave 10.2 docs/s in bf16 and 104 GFLOP/s in fp32, 8,192 tokens
    7.1 docs/s and 77 GFLOP/s). GPUs want large batches."""
    return 32768 if str(device).startswith("cuda") else 1024


def sparse_rows(weights: torch.Tensor, top_k: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(term ids, weights) of each row of dense ``[batch, vocab]`` weights, on the CPU, keeping each row's
    ``top_k`` largest weights (None: all non-zero ones).

    One ids and one weights tensor per batch, handed out as per-row views: two fresh small tensors per
    row, kept until an encoding block is written, fragmented glibc's heap.
    """
    weights = keep_top_k(weights, top_k).cpu()
    rows, ids = weights.nonzero(as_tuple=True)
    values = weights[rows, ids]
    counts = torch.bincount(rows, minlength=weights.shape[0]).tolist()
    return list(zip(ids.split(counts), values.split(counts)))


class SparseInputs:
    """What a sparse encoder does before and after its forward pass, whatever runs the forward (PyTorch here,
    ONNX Runtime in ``model/onnx.py``): the card's tokenisation, prefixes and pooled positions, batching, and
    the special tokens that never become terms."""

    tokenizer: object
    card: ModelCard

    def init_inputs(self, tokenizer, card: ModelCard) -> None:
        self.tokenizer = tokenizer
        self.card = card
        self._excluded = None
        self._prefix_ids = {kind: self._prefix_tokens(kind) for kind in ("query", "doc")}

    # --- tokenisation ------------------------------------------------------------------------------
    def max_length(self, kind: str) -> int:
        return self.card.max_query_length if kind == "query" else self.card.max_doc_length

    def _prefix_tokens(self, kind: str) -> list[int]:
        prefix = self.card.query_prefix if kind == "query" else self.card.doc_prefix
        bos = [self.tokenizer.bos_token_id] if self.card.add_bos and self.tokenizer.bos_token_id is not None else []
        return bos + (self.tokenizer(prefix, add_special_tokens=False)["input_ids"] if prefix else [])

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

    def prefix_length(self, sequence: Sequence[int], kind: str) -> int:
        """Leading positions of ``sequence`` that hold the prefix (and BOS): the tokens it shares with the
        prefix tokenised alone. Its last piece may merge with the text (``passage: Cells`` gives
        ``pass age : ĠCells``); the merged token carries text and is not counted."""
        count = 0
        for a, b in zip(sequence, self._prefix_ids[kind]):
            if a != b:
                break
            count += 1
        return count  # == len(sequence): no text at all, nothing is pooled

    def collate(self, sequences: Sequence[Sequence[int]], order: list[int] | None = None,
                pad_multiple: int = 1, kind: str = "doc") -> Batch:
        """Pad on the card's ``padding_side`` (to a multiple of ``pad_multiple`` tokens). *echo* repeats the
        sequence and pools the second copy only; *causal* does not pool its prefix (text-independent states)."""
        echo = self.card.variant == "echo"
        rows = [list(s) + list(s) if echo else list(s) for s in sequences]
        width = round_up(max(1, max(len(r) for r in rows)), pad_multiple)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        pool = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (seq, row) in enumerate(zip(sequences, rows)):
            offset = width - len(row) if self.card.padding_side == "left" else 0
            input_ids[i, offset:offset + len(row)] = torch.tensor(row, dtype=torch.long)
            attention[i, offset:offset + len(row)] = 1
            start = len(row) - len(seq)
            prefix = self.prefix_length(seq, kind)
            if prefix == len(seq):  # an empty text (the prefix alone): no terms at all
                continue
            if self.card.variant == "causal":
                start += prefix
            pool[i, offset + start:offset + len(row)] = 1
        return Batch(input_ids, attention, pool, order if order is not None else list(range(len(rows))))

    def excluded_ids(self, vocab: int, device) -> torch.Tensor:
        if self._excluded is None or self._excluded.device != torch.device(device):
            ids = special_token_ids(self.tokenizer)
            # A tensor first made under inference_mode could never be used by a training forward.
            with torch.inference_mode(False):
                self._excluded = torch.tensor(sorted(i for i in ids if i < vocab), dtype=torch.long, device=device)
        return self._excluded

    def batches(self, sequences: Sequence[Sequence[int]], max_tokens: int, max_batch: int,
                pad_multiple: int = SHAPE_MULTIPLE, kind: str = "doc") -> Iterable[Batch]:
        """Longest first, so each batch pads little; a batch holds at most ``max_tokens`` padded tokens."""
        factor = 2 if self.card.variant == "echo" else 1
        order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
        start = 0
        while start < len(order):
            width = round_up(max(1, len(sequences[order[start]]) * factor), pad_multiple)
            size = max(1, min(max_batch, max_tokens // width))
            chunk = order[start:start + size]
            yield self.collate([sequences[i] for i in chunk], chunk, pad_multiple, kind)
            start += size


class SparseEncoder(torch.nn.Module, SparseInputs):
    def __init__(self, model, tokenizer, card: ModelCard, chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
                 logit_bias: torch.Tensor | None = None, lexical: LexicalHead | None = None,
                 context: ContextHead | None = None):
        super().__init__()
        self.model = model
        self.chunk_elements = chunk_elements
        self.logit_scale = card.resolved_logit_scale(model.config.hidden_size)
        self.vocab = decoder_and_head(model)[1].shape[0]
        if logit_bias is not None and logit_bias.numel() != self.vocab:
            raise ValueError(f"logit bias has {logit_bias.numel()} entries but the LM head has {self.vocab}")
        self.logit_bias = None if logit_bias is None else torch.nn.Parameter(
            logit_bias.detach().float().clone(), requires_grad=False)
        self.expansion_weight = torch.nn.Parameter(torch.tensor(float(card.expansion_weight)), requires_grad=False)
        if card.lexical_head is not None and lexical is None:
            raise ValueError("the model card names a lexical head but none was given")
        if lexical is not None and card.lexical_layer is None:
            raise ValueError("a lexical head needs the card's lexical_layer")
        if card.lexical_layer is not None and card.lexical_layer > num_layers(model):
            raise ValueError(f"lexical_layer {card.lexical_layer} is beyond the model's {num_layers(model)} layers")
        self.lexical = lexical
        if (card.context_layer is None) != (context is None):
            raise ValueError("a context map and the card's context_layer go together")
        self.context = context
        if card.context_layer is not None:
            decoder = decoder_and_head(model)[0]
            if card.context_layer > len(decoder.layers):
                raise ValueError(f"context_layer {card.context_layer} is beyond the model's {len(decoder.layers)} layers")
            decoder.layers = decoder.layers[:card.context_layer]  # the rest is never run
        if card.variant == "bidirectional":
            if set_bidirectional(model, True) == 0:
                raise ValueError(f"{type(model).__name__} has no attention modules with an is_causal flag; "
                                 "the bidirectional variant is not supported for it")
        self._workspace = LogitsWorkspace()
        self.init_inputs(tokenizer, card)

    # --- forward -----------------------------------------------------------------------------------
    def _needs_states(self) -> int | None:
        """The layer whose states the lexical head reads, when it is not the final one."""
        layer = self.card.lexical_layer if self.lexical is not None else None
        return layer if layer is not None and layer < num_layers(self.model) else None

    def encoder_states(self, input_ids: torch.Tensor | None, attention_mask: torch.Tensor,
                       start_layer: int = 0, states: torch.Tensor | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Final normed states (the LM head's input) and the lexical head's states (None without one).

        ``start_layer > 0`` starts from ``states``, the input of that layer (cached by the CPU recipe);
        ``start_layer`` = the number of layers means ``states`` are already the final states."""
        decoder, _ = decoder_and_head(self.model)
        total = len(decoder.layers)
        lexical_layer = self._needs_states()
        if lexical_layer is not None and lexical_layer < start_layer:
            raise ValueError(f"the lexical head reads layer {lexical_layer}, below the start layer {start_layer}")
        if self.context is not None:
            if start_layer:
                raise ValueError("a model with a context map starts from its input ids")
            return self.context_states(decoder, input_ids, attention_mask), None
        if start_layer == total:
            return states, (states if self.lexical is not None else None)
        embeds = decoder.get_input_embeddings()(input_ids) if start_layer == 0 else states
        with layers_from(decoder, start_layer):
            out = decoder(inputs_embeds=embeds, attention_mask=self.decoder_mask(decoder, embeds, attention_mask),
                          use_cache=False,
                          output_hidden_states=lexical_layer is not None)
        final = out.last_hidden_state
        if self.lexical is None:
            return final, None
        return final, (final if lexical_layer is None else out.hidden_states[lexical_layer - start_layer])

    def context_states(self, decoder, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The LM head's input of a card with ``context_layer``: ``final_norm(embed(x) + W rms(h))``
        (``model/context.py``), ``h`` the decoder's output after its first ``context_layer`` layers."""
        embeds = decoder.get_input_embeddings()(input_ids)
        context = decoder(inputs_embeds=embeds, attention_mask=self.decoder_mask(decoder, embeds, attention_mask),
                          use_cache=False).last_hidden_state
        return decoder.norm(self.context(embeds, context).to(embeds.dtype))

    def decoder_mask(self, decoder, embeds: torch.Tensor, attention_mask: torch.Tensor):
        """The padding mask, or for the *bidirectional* variant an explicit padding-only 4D mask (built by
        transformers for the configured attention kernel), since its attention modules are no longer causal."""
        if self.card.variant != "bidirectional":
            return attention_mask
        from transformers.masking_utils import create_bidirectional_mask

        return create_bidirectional_mask(config=decoder.config, inputs_embeds=embeds, attention_mask=attention_mask,
                                         allow_is_bidirectional_skip=False)

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The final normed states (the LM head's input)."""
        return self.encoder_states(input_ids, attention_mask)[0]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, pool_mask: torch.Tensor,
                start_layer: int = 0, states: torch.Tensor | None = None) -> torch.Tensor:
        """Dense ``[batch, vocab]`` weights; special tokens are zeroed (they never become terms)."""
        final, lexical_states = self.encoder_states(input_ids, attention_mask, start_layer, states)
        pooled = None
        if self.card.expansion:
            _, head = decoder_and_head(self.model)
            pooled = max_pool_lm_head(final, head, pool_mask, self.chunk_elements, self._workspace)
        return self.combine(pooled, lexical_states, input_ids, pool_mask)

    def combine(self, pooled: torch.Tensor | None, lexical_states: torch.Tensor | None,
                input_ids: torch.Tensor | None, pool_mask: torch.Tensor | None) -> torch.Tensor:
        """The channels' weights merged by max: from max-pooled LM-head logits (``pooled``, see
        :meth:`max_logits`) and the lexical head's states at the pooled positions."""
        weights = self.activate(pooled) if pooled is not None else None
        if self.lexical is not None:
            lexical = pool_token_impacts(self.lexical(lexical_states), input_ids, pool_mask, self.vocab)
            weights = lexical if weights is None else torch.maximum(weights, lexical)
        excluded = self.excluded_ids(weights.shape[-1], weights.device)
        if excluded.numel():
            weights = weights.index_fill(-1, excluded, 0.0)
        if pool_mask is not None and not bool(pool_mask.any(dim=1).all()):  # a text with no pooled position
            weights = weights * pool_mask.any(dim=1, keepdim=True).to(weights.dtype)  # has no terms (bias aside)
        return weights

    def max_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   pool_mask: torch.Tensor) -> torch.Tensor:
        """``[batch, vocab]`` LM-head logits max-pooled over the pooled positions (floored at 0), before
        scale and bias. Kept apart from :meth:`activate` because scale and bias commute with the max:
        a training run with a frozen backbone caches these once and never runs the backbone again."""
        _, head = decoder_and_head(self.model)
        return max_pool_lm_head(self.hidden_states(input_ids, attention_mask), head, pool_mask,
                                self.chunk_elements, self._workspace)

    def activate(self, pooled: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        """The LM-head channel's weights from :meth:`max_logits` output: card scale, logit bias,
        ``log(1 + relu(.))`` and the channel weight. ``ids`` (same shape as ``pooled``) names the vocabulary
        entry of each column where ``pooled`` holds a subset of the vocabulary."""
        bias = self.logit_bias if ids is None or self.logit_bias is None else self.logit_bias[ids]
        return splade_activation(pooled.float(), self.logit_scale, bias) * self.expansion_weight

    # --- inference ---------------------------------------------------------------------------------
    @torch.inference_mode()
    def encode_sequences(self, sequences: Sequence[Sequence[int]], top_k: int | None = None,
                         max_tokens: int | None = None, max_batch: int = 256, device: str | torch.device = "cpu",
                         progress=None, pad_multiple: int = SHAPE_MULTIPLE,
                         kind: str = "doc") -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Sparse (token ids, float weights) per sequence, in input order."""
        max_tokens = max_tokens or default_max_tokens(device)
        results: list = [None] * len(sequences)
        for batch in self.batches(sequences, max_tokens, max_batch, pad_multiple, kind):
            weights = self.forward(batch.input_ids.to(device), batch.attention_mask.to(device),
                                   batch.pool_mask.to(device))
            for position, row in zip(batch.order, sparse_rows(weights, top_k)):
                results[position] = row
            if progress is not None:
                progress.update(len(batch.order))
        return results
