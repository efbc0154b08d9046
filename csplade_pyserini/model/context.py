"""The context map of the LM-head channel read early (CSPLADE on the first layers of the backbone).

An LM head read after the embedding layer already predicts each input token and its spelling variants
(SmolLM2 ties the head to its embeddings), which is what a sparse document vector needs most; read after
a few layers, its predictions drift towards the next token. A card with ``context_layer`` therefore feeds
the LM head the token's own embedding plus a trained linear map of the backbone's states after
``context_layer`` layers (RMS-normalised), then the backbone's final norm:

    logits(t) = lm_head(final_norm(embed(x_t) + W rms(h_t)))

``W`` starts at zero, so an untrained map is the embedding read by the LM head and training learns how
the context moves each position's vocabulary distribution. The backbone runs only ``context_layer``
layers, and the head, bias, activation and max-pool are CSPLADE's.
"""

from __future__ import annotations

from pathlib import Path

import torch

from csplade_pyserini.errors import InputError

CONTEXT_FILE = "context_head.safetensors"


def rms_normalise(states: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Each state divided by its root mean square (no gain): the map sees directions, not magnitudes."""
    states = states.float()
    return states * torch.rsqrt(states.pow(2).mean(-1, keepdim=True) + eps)


class ContextHead(torch.nn.Module):
    FILE = CONTEXT_FILE
    FIELD = "context_head"

    def __init__(self, hidden_size: int):
        super().__init__()
        self.map = torch.nn.Linear(hidden_size, hidden_size, bias=False)
        torch.nn.init.zeros_(self.map.weight)

    def forward(self, embeddings: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """``embed(x) + W rms(h)`` in float32 (``[..., hidden]`` each)."""
        return embeddings.float() + self.map(rms_normalise(context).to(self.map.weight.dtype)).float()

    def save(self, folder: str | Path) -> str:
        from csplade_pyserini.atomic import save_tensors

        save_tensors({"map.weight": self.map.weight.detach().float().cpu().contiguous()}, Path(folder) / self.FILE)
        return self.FILE

    @classmethod
    def load(cls, reference: str, base_dir: str | Path | None, hidden_size: int) -> "ContextHead":
        """The map a card names (relative to the card's folder), checked against the backbone width."""
        from csplade_pyserini.model.card import card_tensors

        path, state = card_tensors(reference, base_dir, cls.FIELD)
        if set(state) != {"map.weight"}:
            raise InputError(f"expected the tensor map.weight, got {sorted(state)}", path=path, field=cls.FIELD)
        if tuple(state["map.weight"].shape) != (hidden_size, hidden_size):
            raise InputError(f"the map is {tuple(state['map.weight'].shape)} but the backbone's states are "
                             f"{hidden_size} wide", path=path, field=cls.FIELD)
        head = cls(hidden_size)
        head.load_state_dict(state)
        return head
