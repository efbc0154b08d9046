"""Float weights to the positive integers Anserini needs.

Anserini reads document impacts with ``asInt()`` (0.9 becomes 0 and the term disappears) and query
weights through ``JInt``; rounding ``w * scale`` ourselves keeps every term whose scaled weight is at
least 0.5 and records exactly how the scores were scaled (``quant_scale`` in the model card).
"""

from __future__ import annotations

import math
from typing import Mapping


def quantize_weight(weight: float, scale: float) -> int:
    if not math.isfinite(weight) or weight < 0:
        raise ValueError(f"impact weights must be finite and non-negative, got {weight!r}")
    return int(math.floor(weight * scale + 0.5))


def quantize_vector(weights: Mapping[str, float], scale: float) -> dict[str, int]:
    """Round half up; terms whose rounded weight is 0 are dropped (they would score nothing)."""
    out = {}
    for term, weight in weights.items():
        q = quantize_weight(weight, scale)
        if q > 0:
            out[term] = q
    return out


def dequantize_vector(vector: Mapping[str, int], scale: float) -> dict[str, float]:
    return {term: value / scale for term, value in vector.items()}


def quantize_tensor(weights, scale: float):
    """Vectorised :func:`quantize_weight` on a tensor of non-negative weights; computed in float64 so
    that it rounds exactly like the scalar rule on the same values (float32 ``0.005 * 100`` is 0.5)."""
    import torch

    return torch.floor(weights.double() * scale + 0.5).to(torch.int32)
