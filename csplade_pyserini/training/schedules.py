"""Schedules: the FLOPS-weight warm-up and the warm-up length of the cosine learning-rate schedule.

The learning-rate schedule itself is ``transformers.get_cosine_schedule_with_warmup`` (linear warm-up
then cosine decay to 0), used by both papers; it is not re-implemented here.
"""

from __future__ import annotations

import math


def flops_weight(step: int, total_steps: int, max_weight: float, ramp_fraction: float = 1 / 3) -> float:
    """FLOPS regularisation weight at ``step``: ``max_weight * min(1, step / ramp_steps) ** 2``.

    ``ramp_steps = ramp_fraction * total_steps``. Starting at 0 lets the model first learn to retrieve
    with dense-ish representations; a strong sparsity penalty from step 0 drives most weights to zero
    before they carry any signal. The quadratic ramp is SPLADE's; Lion ramps until one third of
    training (the default). ``ramp_fraction=0`` gives the full weight from the start.
    """
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if step < 0:
        raise ValueError(f"step must be non-negative, got {step}")
    if not 0.0 <= ramp_fraction <= 1.0:
        raise ValueError(f"ramp_fraction must be in [0, 1], got {ramp_fraction}")
    if max_weight < 0:
        raise ValueError(f"max_weight must be non-negative, got {max_weight}")
    ramp_steps = ramp_fraction * total_steps
    if ramp_steps <= 0:
        return float(max_weight)
    return float(max_weight) * min(1.0, step / ramp_steps) ** 2


def warmup_steps(total: int, fraction: float) -> int:
    """Number of learning-rate warm-up steps: ``fraction`` of ``total``, rounded half up.

    Rounding (not ``int()``/``ceil``) keeps 5% of 1000 at 50 despite float error (``0.05 * 1000`` is
    ``50.00000000000001``). CSPLADE uses 5%, Lion 4%.
    """
    if total < 0:
        raise ValueError(f"total must be non-negative, got {total}")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    return min(total, int(math.floor(total * fraction + 0.5)))


def cosine_with_warmup(optimizer, total_steps: int, warmup_fraction: float):
    """``transformers.get_cosine_schedule_with_warmup`` with the warm-up given as a fraction."""
    from transformers import get_cosine_schedule_with_warmup

    return get_cosine_schedule_with_warmup(optimizer, warmup_steps(total_steps, warmup_fraction), total_steps)
