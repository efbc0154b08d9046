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


# Lucene stores an impact as a term frequency (a Java int), and a document's impacts add up to its field
# length (an int too): larger values would wrap around or be dropped without a word.
MAX_IMPACT = 2**31 - 1


def quantize_tensor(weights, scale: float):
    """Vectorised :func:`quantize_weight` on a tensor of non-negative weights; computed in float64 so
    that it rounds exactly like the scalar rule on the same values (float32 ``0.005 * 100`` is 0.5).
    Weights beyond Lucene's integers are an error naming ``quant_scale``, never a silent wrap-around."""
    import torch

    from csplade_pyserini.errors import InputError

    scaled = torch.floor(weights.double() * scale + 0.5)
    if scaled.numel() and (not bool(torch.isfinite(scaled).all()) or float(scaled.sum()) > MAX_IMPACT):
        raise InputError(f"weights x quant_scale {scale:g} reach {float(scaled.max()):.3g} (sum "
                         f"{float(scaled.sum()):.3g}), beyond Lucene's integer impacts ({MAX_IMPACT}); lower "
                         "quant_scale", field="quant_scale")
    return scaled.to(torch.int32)
