"""SPLADE max pooling through the LM head, in chunks, with a memory-light backward pass.

``w[v] = log(1 + relu(s * max_t logits[t, v]))`` over the positions selected by a pool mask.

Two observations make this cheap:

* ``relu(max_t x_t) == max(0, max_t x_t)``, so positions we do not want (padding, the first copy in
  *echo*) can simply have their hidden state zeroed: the LM head has no bias, their logits are exactly
  0, and a 0 never changes ``max(0, ...)``. No ``-inf`` masking pass over ``batch x length x vocab``.
* Only the arg-max position of each (document, term) receives gradient, so the backward pass needs
  the ``batch x vocab`` arg-max indices, not the ``batch x length x vocab`` logits. Peak memory is
  one chunk of logits in both directions.
"""

from __future__ import annotations

import torch

DEFAULT_CHUNK_ELEMENTS = 1 << 26  # logits per chunk (256 MB in fp32)
# Inference pads batch widths (SparseEncoder.batches) and each document's LM-head rows (the span path
# below) to multiples of this. Every new matrix shape makes oneDNN build and cache another bf16 kernel
# (about 3 MB each, kept for the life of the process); rounding caps the shapes at a few dozen for at
# most 15 padded tokens per row.
SHAPE_MULTIPLE = 16


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _max_logits(hidden: torch.Tensor, weight: torch.Tensor, chunk_elements: int, with_index: bool = True):
    """``max(0, max_t hidden[:, t] @ weight.T)`` and its arg-max (``-1`` where the max is <= 0).

    Whole documents are flattened into plain 2-D matrix products of at most ``chunk_elements`` logits:
    a batched 3-D ``matmul`` on a sliced view runs several times slower on CPU. Documents longer than
    the budget are split by rows with a running max.
    """
    batch, length, width = hidden.shape
    vocab = weight.shape[0]
    hidden = hidden.contiguous()
    weight_t = weight.t()
    best = hidden.new_zeros(batch, vocab)
    where = torch.full((batch, vocab), -1, dtype=torch.long, device=hidden.device) if with_index else None
    docs = chunk_elements // max(1, length * vocab)
    if docs >= 1:
        for start in range(0, batch, docs):
            part = hidden[start:start + docs]
            logits = torch.mm(part.reshape(-1, width), weight_t).view(part.shape[0], length, vocab)
            if with_index:
                values, index = logits.max(dim=1)
                positive = values > 0
                best[start:start + docs] = torch.where(positive, values, best[start:start + docs])
                where[start:start + docs] = torch.where(positive, index, where[start:start + docs])
            else:
                best[start:start + docs] = logits.amax(dim=1).clamp_min_(0)
        return best, where
    rows = max(1, chunk_elements // vocab)
    for b in range(batch):
        for start in range(0, length, rows):
            logits = torch.mm(hidden[b, start:start + rows], weight_t)
            if with_index:
                values, index = logits.max(dim=0)
                better = values > best[b]
                best[b] = torch.where(better, values, best[b])
                where[b] = torch.where(better, index + start, where[b])
            else:
                best[b] = torch.maximum(best[b], logits.amax(dim=0).to(best.dtype))
    return best, where


class _PooledLMHead(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, chunk_elements):
        best, where = _max_logits(hidden, weight, chunk_elements)
        ctx.save_for_backward(hidden, weight, where)
        return best

    @staticmethod
    def backward(ctx, grad):
        hidden, weight, where = ctx.saved_tensors
        need_hidden, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_hidden = torch.zeros_like(hidden) if need_hidden else None
        grad_weight = torch.zeros_like(weight) if need_weight else None
        length = hidden.shape[1]
        for b in range(hidden.shape[0]):
            valid = where[b] >= 0
            if not bool(valid.any()):
                continue
            terms = valid.nonzero(as_tuple=True)[0]
            # scatter[t, v] = grad[b, v] where position t is the arg-max of term v
            scatter = hidden.new_zeros(length, terms.numel())
            scatter[where[b, terms], torch.arange(terms.numel(), device=hidden.device)] = grad[b, terms].to(hidden.dtype)
            if need_hidden:
                grad_hidden[b] = scatter @ weight[terms]
            if need_weight:
                grad_weight.index_add_(0, terms, scatter.t() @ hidden[b])
        return grad_hidden, grad_weight, None


class LogitsWorkspace:
    """One reusable ``rows x vocab`` logits buffer for the inference path, grown only when needed.

    The per-document logits are the largest transient tensors of inference (256 x 49k in bf16 is
    25 MB). Allocating one per document, in a dozen sizes, among the small long-lived result tensors
    made glibc's heap fragment: a full echo pass over SciFact grew to 13.8 GB. Writing every product
    into the same buffer (``torch.mm(out=...)``) takes that churn away.
    """

    def __init__(self) -> None:
        self._buffer: torch.Tensor | None = None

    def rows(self, n: int, like: torch.Tensor, vocab: int) -> torch.Tensor:
        buffer = self._buffer
        # a buffer made under inference_mode cannot be written outside it (e.g. by a no_grad forward)
        stale = buffer is not None and buffer.is_inference() and not torch.is_inference_mode_enabled()
        if (buffer is None or stale or buffer.shape[0] < n or buffer.shape[1] != vocab or buffer.dtype != like.dtype
                or buffer.device != like.device):
            buffer = self._buffer = like.new_empty(max(n, buffer.shape[0] if buffer is not None else 0), vocab)
        return buffer[:n]


def _max_logits_over_spans(hidden: torch.Tensor, weight: torch.Tensor, pool_mask: torch.Tensor,
                           chunk_elements: int, workspace: LogitsWorkspace | None = None) -> torch.Tensor | None:
    """Inference fast path: the LM head only on each row's pooled span (no padding, and for *echo* no
    first copy: half of its head FLOPs). ``None`` if some row's pooled positions are not contiguous."""
    batch, _, width = hidden.shape
    vocab = weight.shape[0]
    counts = pool_mask.sum(dim=1).tolist()
    starts = pool_mask.float().argmax(dim=1).tolist()
    weight_t = weight.t()
    best = hidden.new_zeros(batch, vocab)
    rows = max(1, chunk_elements // vocab)
    workspace = workspace or LogitsWorkspace()
    for b, (start, count) in enumerate(zip(starts, counts)):
        if count and not bool(pool_mask[b, start:start + count].all()):
            return None
        for begin in range(start, start + count, rows):
            part = hidden[b, begin:min(begin + rows, start + count)]
            extra = round_up(part.shape[0], SHAPE_MULTIPLE) - part.shape[0]
            if extra:  # zero rows give logits of exactly 0, which never change max(0, ...)
                part = torch.nn.functional.pad(part, (0, 0, 0, extra))
            logits = torch.mm(part, weight_t, out=workspace.rows(part.shape[0], part, vocab))
            best[b] = torch.maximum(best[b], logits.amax(dim=0))
    return best


def max_pool_lm_head(hidden: torch.Tensor, weight: torch.Tensor, pool_mask: torch.Tensor,
                     chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
                     workspace: LogitsWorkspace | None = None) -> torch.Tensor:
    """``max(0, max_{t: pool_mask} hidden[t] @ weight.T)`` per row, shape ``[batch, vocab]``.

    ``workspace`` (inference only) lets successive calls share one logits buffer."""
    if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
        hidden = hidden * pool_mask.unsqueeze(-1).to(hidden.dtype)
        return _PooledLMHead.apply(hidden, weight, chunk_elements)
    fast = _max_logits_over_spans(hidden, weight, pool_mask, chunk_elements, workspace)
    if fast is not None:
        return fast
    hidden = hidden * pool_mask.unsqueeze(-1).to(hidden.dtype)
    return _max_logits(hidden, weight, chunk_elements, with_index=False)[0]


def splade_activation(max_logits: torch.Tensor, logit_scale: float | None = None,
                      logit_bias: torch.Tensor | None = None) -> torch.Tensor:
    """``log(1 + relu(s * x + b))``; scale and per-term bias commute with the max over positions (the
    scale is positive, the bias the same at every position), so they apply to the pooled logits."""
    if logit_scale is not None:
        max_logits = max_logits * logit_scale
    if logit_bias is not None:
        max_logits = max_logits + logit_bias
    return torch.log1p(torch.relu(max_logits))


def keep_top_k(weights: torch.Tensor, k: int | None) -> torch.Tensor:
    """Zero all but the ``k`` largest weights of each row, differentiably (gradients reach the kept ones).

    Training with the same top-k the model card applies at inference makes the loss see the vectors the
    index will hold: a backbone whose LM head is dense (SmolLM2 gives most of its 49k entries a positive
    weight) otherwise learns from thousands of small weights that indexing then throws away.
    """
    if k is None or k >= weights.shape[-1]:
        return weights
    values, index = weights.topk(k, dim=-1)
    return torch.zeros_like(weights).scatter_(-1, index, values)  # in place on a fresh tensor: one allocation


def mlm_splade_pool(logits: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """SPLADE pooling of a masked LM (BERT-style, splade-tiny): ``max_t log(1 + relu(logits))`` over the real
    tokens, max first. ``log(1 + relu(.))`` is non-decreasing, so taking the masked max of the raw logits
    first and activating the ``batch x vocab`` result gives the same floats as activating the whole
    ``batch x length x vocab`` tensor (85% of splade-tiny's encoding time that way)."""
    masked = logits.masked_fill(attention_mask.unsqueeze(-1) == 0, float("-inf"))
    return torch.log(1 + torch.relu(masked.amax(dim=1)))  # log(1 + x), not log1p: Pyserini's exact floats


def naive_splade_pool(logits: torch.Tensor, pool_mask: torch.Tensor) -> torch.Tensor:
    """Reference implementation on full ``[batch, length, vocab]`` logits (tests and the naive baseline)."""
    activated = torch.log1p(torch.relu(logits)) * pool_mask.unsqueeze(-1).to(logits.dtype)
    return activated.max(dim=1).values
