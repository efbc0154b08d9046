"""The lexical impact channel: a learned weight for every input token (uniCOIL-style), beyond CSPLADE.

CSPLADE's only channel is the LM head: each pooled position predicts a distribution over the
vocabulary, and a text's own words reach its vector only where the model happens to predict them. A
causal LM predicts the NEXT token, so on SmolLM2 a document's own rare words are often missing, and a
plain binary overlap of SmolLM2 tokens (no model at all) beats the untrained LM-head vectors on
SciFact. This channel gives each input token ``t`` a weight ``relu(mlp(h_t))`` computed from a
hidden layer, max-pooled per token id and put through the same ``log(1 + x)`` as the LM-head
channel; :class:`~csplade_pyserini.model.sparse.SparseEncoder` merges the two by an element-wise max,
so a term keeps whichever weight is larger. It is a model-card option (``lexical_head``), off in the
pure CSPLADE recipes.

Which layer feeds it matters: on SciFact, the final (normed) layer, shaped for next-token prediction,
trained to nDCG@10 0.606, the input of layer 28 of 30 to 0.665 (same recipe).
"""

from __future__ import annotations

from pathlib import Path

import torch

from csplade_pyserini.errors import InputError

LEXICAL_FILE = "lexical_head.safetensors"


class TokenHead(torch.nn.Module):
    """A two-layer MLP read at every position, ``W2 gelu(W1 h + b1) + b2``, saved as a safetensors file a card
    names. What its output means (and its initialisation) is the subclass's: :class:`LexicalHead` here, the
    word channel's ``TermFrequencyHead``."""

    FILE = ""
    FIELD = ""

    def __init__(self, hidden_size: int, width: int):
        super().__init__()
        self.hidden = torch.nn.Linear(hidden_size, width)
        self.out = torch.nn.Linear(width, 1)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[..., hidden]`` states -> ``[...]`` raw outputs (float32)."""
        x = torch.nn.functional.gelu(self.hidden(hidden.to(self.hidden.weight.dtype)))
        return self.out(x).squeeze(-1).float()

    def save(self, folder: str | Path) -> str:
        from csplade_pyserini.atomic import save_tensors

        state = {k: v.detach().float().cpu().contiguous() for k, v in self.state_dict().items()}
        save_tensors(state, Path(folder) / self.FILE)
        return self.FILE

    @classmethod
    def load(cls, reference: str, base_dir: str | Path | None, hidden_size: int):
        """The head a card names (relative to the card's folder), checked against the backbone width."""
        from csplade_pyserini.model.card import card_tensors

        path, state = card_tensors(reference, base_dir, cls.FIELD)
        expected = {"hidden.weight", "hidden.bias", "out.weight", "out.bias"}
        if set(state) != expected:
            raise InputError(f"expected tensors {sorted(expected)}, got {sorted(state)}", path=path, field=cls.FIELD)
        width, size = state["hidden.weight"].shape
        if size != hidden_size:
            raise InputError(f"the head reads {size}-wide states but the backbone's are {hidden_size}",
                             path=path, field=cls.FIELD)
        head = cls(hidden_size, width)
        head.load_state_dict(state)
        return head


class LexicalHead(TokenHead):
    """``relu(W2 gelu(W1 h + b1) + b2)`` per position: a non-negative impact for the input token.

    Initialised to a constant impact of 1 for every token (``W2 = 0``, ``b2 = 1``): before training
    the channel is a binary bag of tokens, a sound lexical starting point that training then weights.
    """

    FILE = LEXICAL_FILE
    FIELD = "lexical_head"

    def __init__(self, hidden_size: int, width: int = 128):
        super().__init__(hidden_size, width)
        torch.nn.init.zeros_(self.out.weight)
        torch.nn.init.constant_(self.out.bias, 1.0)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[..., hidden]`` states -> ``[...]`` non-negative impacts (float32)."""
        return torch.relu(self.logits(hidden))


def pool_token_impacts(impacts: torch.Tensor, input_ids: torch.Tensor, pool_mask: torch.Tensor,
                       vocab: int) -> torch.Tensor:
    """``[batch, vocab]`` weights ``log(1 + max_t impacts[t])`` over the pooled positions holding each id.

    Differentiable (``scatter_reduce`` ``amax`` sends the gradient to the arg-max position); positions
    outside ``pool_mask`` (padding, prefix, the first copy of *echo*) contribute nothing.
    """
    batch = impacts.shape[0]
    rows = torch.arange(batch, device=impacts.device).unsqueeze(1).expand_as(input_ids)
    keep = pool_mask.bool()
    flat = (rows[keep] * vocab + input_ids[keep]).long()
    pooled = impacts.new_zeros(batch * vocab).scatter_reduce(0, flat, impacts[keep].float(), "amax",
                                                             include_self=True)
    return torch.log1p(pooled.view(batch, vocab))
