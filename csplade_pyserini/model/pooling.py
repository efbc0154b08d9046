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

DEFAULT_CHUNK_ELEMENTS = 1 << 24  # logits per chunk (64 MB in fp32)


def _chunk_length(batch: int, vocab: int, chunk_elements: int) -> int:
    return max(1, chunk_elements // max(1, batch * vocab))


def _max_logits(hidden: torch.Tensor, weight: torch.Tensor, chunk_elements: int):
    batch, length, _ = hidden.shape
    vocab = weight.shape[0]
    step = _chunk_length(batch, vocab, chunk_elements)
    best = hidden.new_zeros(batch, vocab)
    where = torch.full((batch, vocab), -1, dtype=torch.long, device=hidden.device)
    for start in range(0, length, step):
        logits = torch.matmul(hidden[:, start:start + step], weight.t())  # [B, c, V]
        values, index = logits.max(dim=1)
        better = values > best
        best = torch.where(better, values, best)
        where = torch.where(better, index + start, where)
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


def max_pool_lm_head(hidden: torch.Tensor, weight: torch.Tensor, pool_mask: torch.Tensor,
                     chunk_elements: int = DEFAULT_CHUNK_ELEMENTS) -> torch.Tensor:
    """``max(0, max_{t: pool_mask} hidden[t] @ weight.T)`` per row, shape ``[batch, vocab]``."""
    hidden = hidden * pool_mask.unsqueeze(-1).to(hidden.dtype)
    if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
        return _PooledLMHead.apply(hidden, weight, chunk_elements)
    return _max_logits(hidden, weight, chunk_elements)[0]


def splade_activation(max_logits: torch.Tensor, logit_scale: float | None = None) -> torch.Tensor:
    """``log(1 + relu(s * x))``; the scale commutes with the max because it is positive."""
    if logit_scale is not None:
        max_logits = max_logits * logit_scale
    return torch.log1p(torch.relu(max_logits))


def naive_splade_pool(logits: torch.Tensor, pool_mask: torch.Tensor) -> torch.Tensor:
    """Reference implementation on full ``[batch, length, vocab]`` logits (tests and the naive baseline)."""
    activated = torch.log1p(torch.relu(logits)) * pool_mask.unsqueeze(-1).to(logits.dtype)
    return activated.max(dim=1).values
