"""The dense counterpart (Lion-DS): the same decoder, one ``hidden_size`` vector per text.

A :class:`DenseEncoder` is a :class:`~csplade_pyserini.model.sparse.SparseEncoder` whose output is pooled
from the final states instead of the LM-head logits. Everything that is not the output is shared on purpose:
tokenisation (prefixes, BOS, lengths, padding side), the three variants (causal never pools its prefix, echo
pools the second copy, bidirectional removes the causal mask), the decoder forward from any layer (so the
CPU recipe's activation caches serve dense training too), sorted inference batches, and the training
machinery. A sparse and a dense model built from the same options differ only in their output, which is the
comparison Lion makes.
"""

from __future__ import annotations

from typing import Sequence

import torch

from csplade_pyserini.model.sparse import SparseEncoder, default_max_tokens
from csplade_pyserini.model.pooling import SHAPE_MULTIPLE


def pool_dense(states: torch.Tensor, pool_mask: torch.Tensor, mode: str = "mean") -> torch.Tensor:
    """``[batch, hidden]`` float32 vectors from ``[batch, length, hidden]`` states at the pooled positions.

    ``mean`` (Lion-DS): each pooled position's state is L2-normalised, then they are averaged, so every
    token counts the same whatever the norm of its state (decoder states have a few huge-norm positions).
    The result is not unit-length: a text whose tokens agree gets a longer vector. ``last``: the state at
    the last pooled position, L2-normalised. A text without pooled positions gets the zero vector."""
    if states.dim() != 3 or pool_mask.shape != states.shape[:2]:
        raise ValueError(f"expected states [B, L, H] and pool mask [B, L], got {tuple(states.shape)} and "
                         f"{tuple(pool_mask.shape)}")
    mask = pool_mask.to(torch.float32)
    states = states.float()
    if mode == "mean":
        unit = torch.nn.functional.normalize(states, p=2, dim=-1)
        total = (unit * mask.unsqueeze(-1)).sum(dim=1)
        return total / mask.sum(dim=1, keepdim=True).clamp_min(1.0)
    if mode == "last":
        positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
        last = torch.where(mask > 0, positions, torch.full_like(positions, -1)).max(dim=1).values
        picked = states[torch.arange(states.shape[0], device=states.device), last.clamp_min(0)]
        return torch.nn.functional.normalize(picked, p=2, dim=-1) * (last >= 0).unsqueeze(-1).to(picked.dtype)
    raise ValueError(f"unknown dense pooling {mode!r} (mean or last)")


class DenseEncoder(SparseEncoder):
    """Final states pooled into one vector per text (card ``representation: dense``)."""

    @property
    def dimension(self) -> int:
        return int(self.model.config.hidden_size)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, pool_mask: torch.Tensor,
                start_layer: int = 0, states: torch.Tensor | None = None) -> torch.Tensor:
        """``[batch, hidden]`` float32 vectors (differentiable); ``start_layer``/``states`` as for the sparse
        encoder (a cache of the frozen bottom)."""
        final, _ = self.encoder_states(input_ids, attention_mask, start_layer, states)
        return pool_dense(final, pool_mask, self.card.dense_pooling)

    @torch.inference_mode()
    def encode_dense(self, sequences: Sequence[Sequence[int]], max_tokens: int | None = None, max_batch: int = 256,
                     device: str | torch.device = "cpu", progress=None, pad_multiple: int = SHAPE_MULTIPLE,
                     kind: str = "doc") -> torch.Tensor:
        """``[len(sequences), hidden]`` float32 vectors on the CPU, in input order."""
        max_tokens = max_tokens or default_max_tokens(device)
        out = torch.zeros(len(sequences), self.dimension, dtype=torch.float32)
        for batch in self.batches(sequences, max_tokens, max_batch, pad_multiple, kind):
            vectors = self.forward(batch.input_ids.to(device), batch.attention_mask.to(device),
                                   batch.pool_mask.to(device))
            out[torch.as_tensor(batch.order)] = vectors.float().cpu()
            if progress is not None:
                progress.update(len(batch.order))
        return out

    def encode_sequences(self, *args, **kwargs):
        raise TypeError("a dense model has no sparse vectors: use encode_dense (or --encoder csplade-dense)")
