"""Losses and schedules against numbers worked out by hand (math.exp/log), never by re-calling torch."""

from __future__ import annotations

import math

import pytest
import torch

from csplade_pyserini.train.losses import (
    AdaptationLoss,
    InfoNCELoss,
    ScoreScale,
    adaptation_loss,
    clm_loss,
    flops,
    kl_distillation,
    margin_mse,
    relu_clm_loss,
    shift_labels,
)
from csplade_pyserini.train.schedules import flops_weight


def _lse(values):
    return math.log(sum(math.exp(v) for v in values))


def _log_softmax(values):
    norm = _lse(values)
    return [v - norm for v in values]


def t(values):
    return torch.tensor(values, dtype=torch.float32)


# --- InfoNCE ---------------------------------------------------------------------------------------
# Two queries, groups of two (positive first): docs 0-1 belong to query 0, docs 2-3 to query 1.
Q = [[1.0, 0.0], [0.0, 1.0]]
D = [[2.0, 0.0], [1.0, 1.0], [0.0, 3.0], [1.0, 0.0]]
# q0 . d = [2, 1, 0, 1], target column 0;  q1 . d = [0, 1, 3, 0], target column 2.
EXPECTED_INFO_NCE = ((_lse([2, 1, 0, 1]) - 2) + (_lse([0, 1, 3, 0]) - 3)) / 2


def info_nce(q, d, group_size: int, scale: float = 1.0) -> float:
    """The training objective's InfoNCE (``InfoNCELoss``) at a fixed score scale."""
    return InfoNCELoss(ScoreScale(scale))(q, d, {"group_size": group_size})["cl"]


def test_info_nce_uses_hard_and_in_batch_negatives():
    loss = info_nce(t(Q), t(D), group_size=2)
    assert loss.item() == pytest.approx(EXPECTED_INFO_NCE, rel=1e-6)
    # Scoring only within the own group would give a smaller loss: the other group's docs count.
    own_group_only = ((_lse([2, 1]) - 2) + (_lse([3, 0]) - 3)) / 2
    assert loss.item() > own_group_only + 0.1


def test_info_nce_score_scale_multiplies_scores():
    expected = ((_lse([4, 2, 0, 2]) - 4) + (_lse([0, 2, 6, 0]) - 6)) / 2
    assert info_nce(t(Q), t(D), group_size=2, scale=2.0).item() == pytest.approx(expected, rel=1e-6)


def test_info_nce_group_size_one_is_in_batch_only():
    # q0 vs [d0, d2]: scores [2, 0]; q1 vs [d0, d2]: [0, 3] with target 1.
    docs = t([D[0], D[2]])
    expected = ((_lse([2, 0]) - 2) + (_lse([0, 3]) - 3)) / 2
    assert info_nce(t(Q), docs, group_size=1).item() == pytest.approx(expected, rel=1e-6)


def test_info_nce_gradient_flows():
    q = t(Q).requires_grad_()
    d = t(D).requires_grad_()
    info_nce(q, d, 2).backward()
    assert q.grad is not None and d.grad is not None and q.grad.abs().sum() > 0


# --- FLOPS -----------------------------------------------------------------------------------------
def test_flops_by_hand():
    reps = t([[1.0, 0.0, 2.0], [3.0, 0.0, -2.0]])
    # mean |w| per term = [2, 0, 2] -> 2^2 + 0^2 + 2^2
    assert flops(reps).item() == pytest.approx(8.0)
    # A term active in every document costs more than the same mass spread over rare terms.
    common = t([[1.0, 0.0], [1.0, 0.0]])  # mean [1, 0] -> 1
    spread = t([[1.0, 0.0], [0.0, 1.0]])  # mean [.5, .5] -> .5
    assert flops(common).item() == pytest.approx(1.0)
    assert flops(spread).item() == pytest.approx(0.5)
    with pytest.raises(ValueError):
        flops(t([1.0, 2.0]))


# --- distillation ----------------------------------------------------------------------------------
def test_margin_mse_by_hand():
    # student margins [3-1, 1-2] = [2, -1]; teacher [5-2, 0-0] = [3, 0]; mean((-1)^2, (-1)^2) = 1
    loss = margin_mse(t([3.0, 1.0]), t([1.0, 2.0]), t([5.0, 0.0]), t([2.0, 0.0]))
    assert loss.item() == pytest.approx(1.0)
    # Several negatives per query: student [3-1, 3-2] = [2, 1], teacher [5-2, 5-4] = [3, 1] -> (1 + 0) / 2
    loss = margin_mse(t([3.0]), t([[1.0, 2.0]]), t([5.0]), t([[2.0, 4.0]]))
    assert loss.item() == pytest.approx(0.5)
    # Shifting all teacher scores by a constant changes nothing: only margins matter.
    shifted = margin_mse(t([3.0]), t([[1.0, 2.0]]), t([105.0]), t([[102.0, 104.0]]))
    assert shifted.item() == pytest.approx(0.5)


def _kl_by_hand(student_rows, teacher_rows, temperature=1.0):
    total = 0.0
    for s_row, t_row in zip(student_rows, teacher_rows):
        log_s = _log_softmax([v / temperature for v in s_row])
        log_t = _log_softmax([v / temperature for v in t_row])
        total += sum(math.exp(lt) * (lt - ls) for ls, lt in zip(log_s, log_t))
    return total / len(student_rows)


def test_kl_distillation_by_hand():
    student = [[1.0, 2.0, 0.0], [0.0, 0.0, 0.0]]
    teacher = [[2.0, 1.0, 0.0], [1.0, 3.0, -1.0]]
    # Row 2 in closed form: student uniform (log 1/3); teacher p = e^x / Z with Z = e + e^3 + e^-1.
    z = math.e + math.e ** 3 + math.exp(-1)
    row2 = sum((math.exp(x) / z) * (x - math.log(z) - math.log(1 / 3)) for x in (1.0, 3.0, -1.0))
    assert _kl_by_hand([student[1]], [teacher[1]]) == pytest.approx(row2)
    assert kl_distillation(t(student), t(teacher)).item() == pytest.approx(_kl_by_hand(student, teacher), rel=1e-5)
    assert kl_distillation(t(student), t(teacher), temperature=2.0).item() == pytest.approx(
        _kl_by_hand(student, teacher, 2.0), rel=1e-5)
    # Identical distributions (a constant shift) -> 0.
    assert kl_distillation(t(teacher), t(teacher) + 7).item() == pytest.approx(0.0, abs=1e-6)


def test_shift_labels_aligns_with_logits():
    assert shift_labels(torch.tensor([[5, 6, 7]])).tolist() == [[6, 7, -100]]


def test_clm_loss_by_hand():
    logits = t([[[1.0, 2.0, 3.0], [0.0, 0.0, math.log(2.0)]]])  # [B=1, T=2, V=3]
    labels = torch.tensor([[2, 0]])
    pos0 = _lse([1, 2, 3]) - 3                       # -log p(2) at position 0
    pos1 = math.log(1 + 1 + 2) - 0                   # -log p(0) at position 1: 1 / (1 + 1 + 2)
    assert clm_loss(logits, labels).item() == pytest.approx((pos0 + pos1) / 2, rel=1e-6)
    # ignore_index positions do not count.
    assert clm_loss(logits, torch.tensor([[2, -100]])).item() == pytest.approx(pos0, rel=1e-6)
    with pytest.raises(ValueError, match="aligned"):
        clm_loss(logits, torch.tensor([[2, 0, 1]]))
    with pytest.raises(ValueError, match="NaN"):
        clm_loss(logits, torch.tensor([[-100, -100]]))


def test_relu_clm_loss_by_hand():
    # log(1 + relu(.)) maps [-1, 0, e - 1] to [0, 0, 1] and [2, -3, 0] to [log 3, 0, 0].
    logits = t([[[-1.0, 0.0, math.e - 1], [2.0, -3.0, 0.0]]])
    labels = torch.tensor([[2, 0]])
    pos0 = math.log(1 + 1 + math.e) - 1
    pos1 = math.log(3 + 1 + 1) - math.log(3)
    assert relu_clm_loss(logits, labels).item() == pytest.approx((pos0 + pos1) / 2, rel=1e-6)
    # Differs from the plain CLM loss on the same logits.
    assert clm_loss(logits, labels).item() != pytest.approx((pos0 + pos1) / 2, rel=1e-3)


def test_adaptation_loss_combines_parts():
    logits = t([[[-1.0, 0.0, math.e - 1], [2.0, -3.0, 0.0]]])
    labels = torch.tensor([[2, 0]])
    clm = ((_lse([-1, 0, math.e - 1]) - (math.e - 1)) + (_lse([2, -3, 0]) - 2)) / 2
    relu = ((math.log(2 + math.e) - 1) + (math.log(5) - math.log(3))) / 2
    out = adaptation_loss(logits, labels, relu_weight=0.5)
    assert isinstance(out, AdaptationLoss)
    total, clm_part, relu_part = out
    assert clm_part.item() == pytest.approx(clm, rel=1e-6)
    assert relu_part.item() == pytest.approx(relu, rel=1e-6)
    assert total.item() == pytest.approx(clm + 0.5 * relu, rel=1e-6)
    assert adaptation_loss(logits, labels).total.item() == pytest.approx(clm + relu, rel=1e-6)


def test_adaptation_loss_on_packed_labels_predicts_next_token():
    # Labels equal inputs (packing); after shift_labels position t is scored on token t + 1.
    inputs = torch.tensor([[0, 1, 2]])
    logits = torch.zeros(1, 3, 3)
    logits[0, 0, 1] = 5.0  # confident in token 1 after token 0
    logits[0, 1, 2] = 5.0  # confident in token 2 after token 1
    loss = clm_loss(logits, shift_labels(inputs)).item()
    assert loss == pytest.approx(_lse([0, 5, 0]) - 5, rel=1e-6)


# --- schedules -------------------------------------------------------------------------------------
def test_flops_weight_quadratic_ramp():
    # 300 steps, ramp until step 100 (one third).
    assert flops_weight(0, 300, 0.05) == 0.0
    assert flops_weight(50, 300, 0.05) == pytest.approx(0.05 * 0.25)
    assert flops_weight(10, 300, 0.05) == pytest.approx(0.05 * 0.01)
    assert flops_weight(100, 300, 0.05) == pytest.approx(0.05)
    assert flops_weight(250, 300, 0.05) == pytest.approx(0.05)
    assert flops_weight(75, 300, 0.04, ramp_fraction=0.5) == pytest.approx(0.04 * 0.25)
    assert flops_weight(0, 300, 0.04, ramp_fraction=0.0) == pytest.approx(0.04)
    with pytest.raises(ValueError):
        flops_weight(-1, 300, 0.05)
    with pytest.raises(ValueError):
        flops_weight(1, 0, 0.05)
