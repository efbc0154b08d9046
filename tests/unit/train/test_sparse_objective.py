"""The sparse training objective: a learnable inverse temperature shared by CL and KD, named loss parts,
false negatives masked, the logit bias calibrated to a document frequency, the top-k slack and the
lexical channel's card fields; hand-computed values throughout."""

from __future__ import annotations

import math

import pytest
import torch

from csplade_pyserini.model.card import ModelCard
from csplade_pyserini.train.losses import (
    CombinedLoss,
    InfoNCELoss,
    KLDistillationLoss,
    ScoreScale,
    SpladeLoss,
    false_negative_mask,
)

pytestmark = pytest.mark.usefixtures("one_thread")


# --- a learnable inverse temperature, shared by CL and KD --------------------------------------
def test_raw_info_nce_rewards_shrinking_every_vector_but_the_scaled_loss_does_not():
    """Saturated raw scores: scaling all queries down lowers raw InfoNCE (the old incentive to shrink);
    with the score scale, the same shrink is undone by one scalar, so the loss of a rescaled batch
    at the re-fitted scale is unchanged."""
    torch.manual_seed(0)
    q = torch.rand(4, 50) * 3
    d = torch.rand(8, 50) * 3
    d[::2] += q  # positives overlap their query: scores in the tens, a saturated softmax
    def raw_info_nce(q, d):  # raw dot products, hard + in-batch negatives, groups of 2 (positive first)
        return torch.nn.functional.cross_entropy(q @ d.t(), torch.arange(q.shape[0]) * 2)

    raw = raw_info_nce(q, d)
    shrunk = raw_info_nce(0.9 * q, d)
    assert shrunk < raw  # the old objective: shrinking every query is a way down
    scale = ScoreScale(0.1)
    loss = InfoNCELoss(scale)
    batch = {"group_size": 2}
    at_scale = loss(q, d, batch)["cl"]
    with torch.no_grad():
        scale.log_scale += math.log(1 / 0.9)  # the scalar absorbs the shrink exactly
    assert torch.isclose(loss(0.9 * q, d, batch)["cl"], at_scale, atol=1e-5)


def test_score_scale_is_learnable_and_shared_by_cl_and_kd():
    scale = ScoreScale(0.1)
    combined = CombinedLoss({"cl": InfoNCELoss(scale), "kd": KLDistillationLoss(scale, teacher_temperature=2.0)},
                            {"cl": 0.5, "kd": 0.5})
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    d = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, 3.0], [1.0, 0.0]], requires_grad=True)
    parts = combined(q, d, {"group_size": 2, "teacher": torch.tensor([[4.0, 0.0], [2.0, 1.0]])})
    parts["main"].backward()
    assert scale.log_scale.grad is not None and scale.log_scale.grad != 0
    assert {id(m.scale) for m in combined.losses.values()} == {id(scale)}


def test_kd_teacher_temperature_is_separate_from_the_student_scale():
    """Student scores x scale (0.5); teacher scores / teacher temperature (2): KL by hand."""
    scale = ScoreScale(0.5, learnable=False)
    loss = KLDistillationLoss(scale, teacher_temperature=2.0)
    q = torch.tensor([[1.0, 1.0]])
    d = torch.tensor([[2.0, 0.0], [0.0, 0.0]])  # student scores [2, 0] -> scaled [1, 0]
    teacher = torch.tensor([[2.0, 0.0]])  # / 2 -> [1, 0]: the same distribution, KL = 0
    assert loss(q, d, {"group_size": 2, "teacher": teacher})["kd"].abs() < 1e-6
    teacher = torch.tensor([[4.0, 0.0]])  # / 2 -> [2, 0]
    p_t = torch.softmax(torch.tensor([2.0, 0.0]), 0)
    p_s = torch.softmax(torch.tensor([1.0, 0.0]), 0)
    expected = (p_t * (p_t.log() - p_s.log())).sum()
    assert torch.isclose(loss(q, d, {"group_size": 2, "teacher": teacher})["kd"], expected, atol=1e-6)


def test_splade_loss_returns_named_parts():
    scale = ScoreScale(1.0)
    loss = SpladeLoss(InfoNCELoss(scale), query_flops=1.0, doc_flops=2.0, ramp_fraction=0.0)
    q = torch.tensor([[1.0, 0.0]])
    d = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    parts = loss(q, d, {"group_size": 2})
    assert set(parts) == {"cl", "flops_q", "flops_d", "loss"}
    # flops_q = 1^2 = 1, flops_d = (0.5^2 + 0.5^2) = 0.5
    assert torch.isclose(parts["loss"], parts["cl"] + 1.0 * 1.0 + 2.0 * 0.5)


# --- false negatives masked ----------------------------------------------------------------------
def test_a_labelled_positive_in_another_group_is_not_a_negative():
    from csplade_pyserini.train.collator import ContrastiveCollator
    from csplade_pyserini.train.data import Passage, TrainingExample

    class Ids:
        def features(self, ids):
            return {"ids": list(ids)}

    shared = Passage("shared", "a document relevant to both")
    examples = [TrainingExample("q1", "one", [Passage("p1", "x")], [Passage("n1", "y")]),
                TrainingExample("q2", "two", [shared], [Passage("n2", "z")])]
    collator = ContrastiveCollator(examples, Ids(), Ids(), negatives=1, positives={"q1": {"p1", "shared"}})
    batch = collator([(0, 0), (1, 0)])
    assert batch["docs"]["ids"] == ["p1", "n1", "shared", "n2"]
    # q1 must not be pushed away from "shared" (judged relevant to it); its own target column stays
    mask = false_negative_mask(batch, 2, 2, batch["doc_keys"], 0)
    assert mask.tolist() == [[False, False, True, False], [False, False, False, False]]
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    d = torch.tensor([[1.0, 0.0], [0.0, 0.0], [5.0, 0.0], [0.0, 0.0]])
    masked = InfoNCELoss(ScoreScale(1.0))(q, d, batch)
    unmasked = InfoNCELoss(ScoreScale(1.0))(q, d, {"group_size": 2})
    row0 = -torch.log_softmax(torch.tensor([1.0, 0.0, 0.0]), 0)[0]  # p1, n1, n2 (shared removed)
    row1 = -torch.log_softmax(torch.tensor([0.0, 0.0, 0.0, 0.0]), 0)[2]
    assert torch.isclose(masked["cl"], (row0 + row1) / 2)
    assert unmasked["cl"] > masked["cl"]


def test_teacher_margin_and_skipped_ranks_filter_negatives():
    from csplade_pyserini.train.config import DataArguments
    from csplade_pyserini.train.data import filter_negatives
    from csplade_pyserini.train.data import Passage, TrainingExample

    example = TrainingExample("q", "query", [Passage("p", "pos")], [Passage(f"n{i}", "neg") for i in range(5)])
    teacher = {"q": {"p": 10.0, "n0": 12.0, "n1": 9.5, "n2": 3.0, "n3": 2.0, "n4": 1.0}}
    args = DataArguments(negatives=1, teacher_margin=1.0, skip_top_negatives=0)
    kept = filter_negatives([example], args, teacher, required=False)
    assert [n.docid for n in kept[0].negatives] == ["n2", "n3", "n4"]  # n0 above, n1 within the margin
    args = DataArguments(negatives=1, skip_top_negatives=2)
    assert [n.docid for n in filter_negatives([example], args, None, required=False)[0].negatives] == ["n2", "n3", "n4"]


# --- bias calibrated on pooled maxima to a document frequency; top-k slack ------------------------
def test_bias_calibration_hits_the_target_document_frequency():
    from csplade_pyserini.model.pooling import splade_activation
    from csplade_pyserini.train.model import calibrate_bias_to_df

    torch.manual_seed(0)
    pooled = torch.rand(400, 30) * torch.arange(1, 31)  # terms on very different scales
    bias = calibrate_bias_to_df(pooled, 0.1)
    active = (splade_activation(pooled, None, bias) > 0).float().mean(0)
    assert torch.allclose(active, torch.full((30,), 0.1), atol=0.01)  # every term in ~10% of documents


def test_top_k_slack_lets_terms_outside_the_index_top_k_get_a_gradient():
    from csplade_pyserini.model.pooling import keep_top_k

    weights = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0]], requires_grad=True)
    keep_top_k(weights, 2).sum().backward()
    assert weights.grad.tolist() == [[1, 1, 0, 0, 0]]  # top-k alone: the third term can never come in
    weights.grad = None
    keep_top_k(weights, int(2 * 2.0)).sum().backward()
    assert weights.grad.tolist() == [[1, 1, 1, 1, 0]]


# --- the lexical channel's card fields ----------------------------------------------------------------
def test_card_checks_the_lexical_channel_fields():
    from csplade_pyserini.errors import InputError

    with pytest.raises(InputError, match="lexical_layer"):
        ModelCard(lexical_head="lexical_head.safetensors")
    with pytest.raises(InputError, match="at least one channel"):
        ModelCard(expansion=False)
    with pytest.raises(InputError, match="expansion_weight"):
        ModelCard(expansion_weight=float("inf"))
