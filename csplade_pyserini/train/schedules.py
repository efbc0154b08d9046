"""The FLOPS-weight warm-up, and the Trainer callback that moves it with the step.

The learning-rate schedule is transformers' own (``TrainingArguments``: linear warm-up then cosine decay
to 0, used by both papers); it is not re-implemented here.
"""

from __future__ import annotations

from transformers import TrainerCallback


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


class FlopsScheduleCallback(TrainerCallback):
    """Sets the loss's FLOPS weights for each optimizer step (Sentence Transformers'
    ``SpladeLambdaSchedulerCallback``, Tevatron's ``FlopsScheduler``): the loss's ``schedule(step, total)``
    is called before the step's first micro-batch, so a resumed run continues the ramp where it was."""

    def __init__(self, loss):
        self.loss = loss

    def on_step_begin(self, args, state, control, **kwargs):
        if hasattr(self.loss, "schedule"):
            self.loss.schedule(state.global_step, max(1, state.max_steps))
