"""Losses for the two training phases of CSPLADE and for Lion-SP fine-tuning.

Phase 1 (adaptation, CSPLADE): ``L = L_CLM + lambda * L_ReLU`` on packed corpus text.
Phase 2 (retrieval): InfoNCE over one positive, hard negatives and all in-batch documents, plus FLOPS
regularisation; Lion adds distillation (MarginMSE, or KL(teacher || student) mixed with InfoNCE).

Every loss is a plain function of tensors so that it can be checked against numbers computed by hand.
Scores are up-cast to float32 before soft-maxing: sparse dot products easily reach the hundreds, where
bf16 has a resolution of about 1 and a cross-entropy computed in it would be mostly rounding noise.

Label convention for the language-model losses (``clm_loss``, ``relu_clm_loss``, ``adaptation_loss``):
``labels[..., t]`` is the token that ``logits[..., t, :]`` must predict, i.e. the labels are ALREADY
aligned with the logit positions. Packed blocks (``packing.pack_sequences``) carry labels equal to the
inputs, the Hugging Face convention; turn those into aligned labels with :func:`shift_labels`, which
moves them one step left and puts ``ignore_index`` on the last position. Shifting the labels instead of
slicing the logits avoids a copy of the ``batch x length x vocab`` tensor, the memory peak of phase 1.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from csplade_pyserini.errors import InputError
from csplade_pyserini.train.distributed import gather, world

IGNORE_INDEX = -100


# --- phase 2: contrastive ------------------------------------------------------------------------
def flops(reps: torch.Tensor) -> torch.Tensor:
    """SPLADE FLOPS regulariser ``sum_v (mean_batch |w_v|)^2`` for ``reps`` of shape ``[B, V]``.

    It approximates the expected number of multiplications of a query-document dot product, and
    squaring the MEAN (not averaging squares) penalises terms that are active in many documents far
    more than rare ones, which is what keeps posting lists short. Accumulated in float32.
    """
    if reps.dim() != 2 or reps.shape[0] == 0:
        raise ValueError(f"flops expects a non-empty [B, V] batch, got {tuple(reps.shape)}")
    return reps.abs().mean(dim=0, dtype=torch.float32).pow(2).sum()


# --- distillation ---------------------------------------------------------------------------------
def margin_mse(student_pos: torch.Tensor, student_neg: torch.Tensor, teacher_pos: torch.Tensor,
               teacher_neg: torch.Tensor) -> torch.Tensor:
    """MarginMSE (Hofstätter et al.): ``mean((s_pos - s_neg) - (t_pos - t_neg))^2``.

    Only the margins are matched, not the scores, because a cross-encoder teacher and a sparse
    dot-product student live on unrelated scales. Positives are ``[Q]``; negatives are ``[Q]`` or
    ``[Q, N]`` (several negatives per query, each compared with the query's positive). The teacher is
    detached: it is a target, never trained.
    """
    def margin(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        if pos.dim() == neg.dim() - 1:
            pos = pos.unsqueeze(-1)
        return pos.float() - neg.float()

    student = margin(student_pos, student_neg)
    teacher = margin(teacher_pos, teacher_neg).detach().to(student.device)
    if student.shape != teacher.shape:
        raise ValueError(f"student margins {tuple(student.shape)} and teacher margins {tuple(teacher.shape)} differ")
    return F.mse_loss(student, teacher)


def kl_distillation(student_scores: torch.Tensor, teacher_scores: torch.Tensor,
                    temperature: float = 1.0) -> torch.Tensor:
    """``KL(teacher || student)`` over each query's candidate list, averaged over queries.

    Both inputs are ``[Q, C]`` scores of the same candidates (Lion: the positive and 16 hard
    negatives); each row is turned into a distribution with a softmax at ``temperature``. The
    direction KL(teacher || student) = ``sum_c p_t (log p_t - log p_s)`` makes the student cover
    every candidate the teacher finds plausible. No ``T^2`` gradient rescaling is applied (at the
    default ``T = 1`` it makes no difference).
    """
    if student_scores.shape != teacher_scores.shape or student_scores.dim() != 2:
        raise ValueError(f"expected two [Q, C] score matrices, got {tuple(student_scores.shape)} and "
                         f"{tuple(teacher_scores.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    log_student = F.log_softmax(student_scores.float() / temperature, dim=-1)
    log_teacher = F.log_softmax(teacher_scores.detach().float().to(log_student.device) / temperature, dim=-1)
    return F.kl_div(log_student, log_teacher, log_target=True, reduction="batchmean")


# --- phase 1: adaptation --------------------------------------------------------------------------
def shift_labels(labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Turn Hugging Face style labels (equal to the inputs) into labels aligned with the logits.

    ``out[..., t] = labels[..., t + 1]`` and the last position, which has nothing to predict, gets
    ``ignore_index``. Use it on ``pack_sequences`` output before :func:`adaptation_loss`.
    """
    shifted = torch.full_like(labels, ignore_index)
    shifted[..., :-1] = labels[..., 1:]
    return shifted


def _token_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int) -> torch.Tensor:
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} do not match labels {tuple(labels.shape)} "
                         "(labels must already be aligned with the logit positions; see shift_labels)")
    if not bool((labels != ignore_index).any()):
        raise ValueError("every label is ignore_index: the loss would be NaN")
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
                           ignore_index=ignore_index)


def clm_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Next-token cross-entropy, ``L_CLM``, mean over the positions whose label is not ``ignore_index``.

    ``logits`` is ``[..., T, V]``, ``labels`` is ``[..., T]`` ALIGNED with the logit positions: the
    caller shifts (see :func:`shift_labels` and the module docstring).
    """
    return _token_cross_entropy(logits, labels, ignore_index)


def relu_clm_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """``L_ReLU`` of CSPLADE phase 1: the next-token cross-entropy computed on ``log(1 + relu(logits))``.

    Those transformed logits are exactly the per-position SPLADE weights the retrieval model will pool.
    Training them as a next-token distribution keeps the weights of likely terms positive, so the ReLU
    does not start phase 2 mostly dead (zero gradient): the instability CSPLADE reports without it.
    Same label convention as :func:`clm_loss`.
    """
    return _token_cross_entropy(torch.log1p(torch.relu(logits.float())), labels, ignore_index)


class AdaptationLoss(NamedTuple):
    """The phase-1 objective and its two parts (log the parts: L_ReLU should fall along with L_CLM)."""

    total: torch.Tensor
    clm: torch.Tensor
    relu: torch.Tensor


def adaptation_loss(logits: torch.Tensor, labels: torch.Tensor, relu_weight: float = 1.0,
                    ignore_index: int = IGNORE_INDEX) -> AdaptationLoss:
    """CSPLADE phase 1: ``L_CLM + relu_weight * L_ReLU`` (``relu_weight`` is lambda, 1 in the paper).

    Labels are aligned with the logits (see :func:`shift_labels`). Returns ``(total, clm, relu)``.
    """
    clm = clm_loss(logits, labels, ignore_index)
    relu = relu_clm_loss(logits, labels, ignore_index)
    return AdaptationLoss(clm + relu_weight * relu, clm, relu)


# --- composable objectives -------------------------------------------------------------------------
# Each loss is a small module that returns its named parts; SpladeLoss wraps a main loss with the FLOPS
# regularisers, so that the objective of a run reads as one line, e.g.
#   SpladeLoss(CombinedLoss({"cl": InfoNCELoss(scale), "kd": KLDistillationLoss(scale, 2.0)}, {"kd": 0.5}),
#              query_flops=0.003, doc_flops=0.003)
# ``batch`` is the collator's dict: ``group_size``, ``doc_keys`` ([D]) and ``positive_keys`` ([Q, P], -1 padded)
# for false-negative masking (optional), ``teacher`` ([Q, G] scores of each query's own group, optional).

class ScoreScale(torch.nn.Module):
    """A learnable inverse temperature for every score-based loss (CLIP-style), shared by CL and KD.

    InfoNCE on raw sparse dot products is lowered by shrinking every vector: once the softmax saturates
    (scores in the tens or hundreds), the cheapest way down is to lower all weights together, and under
    ReLU terms then die together (SmolLM2: 64 -> 11 query terms in 80 steps). Multiplying scores by a
    learned ``s`` (starting small, 1/10) moves the burden of sharpness onto one scalar. Stored as a log so
    it stays positive; capped at ``max_scale`` as CLIP does.
    """

    def __init__(self, init: float = 0.1, learnable: bool = True, max_scale: float = 100.0):
        super().__init__()
        if not init > 0:
            raise ValueError(f"the initial score scale must be positive, got {init}")
        self.log_scale = torch.nn.Parameter(torch.tensor(math.log(init)), requires_grad=learnable)
        self.max_log = math.log(max_scale)

    @property
    def value(self) -> torch.Tensor:
        return self.log_scale.clamp(max=self.max_log).exp()

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        return scores.float() * self.value


def group_targets(n_queries: int, group_size: int, device=None) -> torch.Tensor:
    return torch.arange(n_queries, device=device) * group_size


def false_negative_mask(batch: dict, n_queries: int, group_size: int, doc_keys: torch.Tensor | None,
                        offset: int) -> torch.Tensor | None:
    """``[Q, D]``: True where document ``j`` is judged relevant to query ``i`` (by the batch's
    ``positive_keys``) but is not ``i``'s own target column; None without keys."""
    if doc_keys is None or "positive_keys" not in batch:
        return None
    positives = batch["positive_keys"].to(doc_keys.device)  # [Q, P], -1 = padding
    mask = (doc_keys.view(1, -1, 1) == positives.unsqueeze(1)).any(-1)
    own = group_targets(n_queries, group_size, doc_keys.device) + offset
    mask[torch.arange(n_queries, device=doc_keys.device), own] = False
    return mask


class InfoNCELoss(torch.nn.Module):
    """InfoNCE over the positive, the hard negatives and every in-batch document, on scaled scores, with the query's other labelled positives taken out of its negatives. In a
    distributed job the documents of every process are negatives (gathered, the papers' global batch)."""

    def __init__(self, scale: ScoreScale):
        super().__init__()
        self.scale = scale

    def forward(self, q: torch.Tensor, d: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        rank, _ = world()
        offset = rank * d.shape[0]
        all_docs = gather(d)
        keys = gather(batch["doc_keys"].to(d.device)) if "doc_keys" in batch else None
        group_size = int(batch["group_size"])
        scores = self.scale(q @ all_docs.t())
        mask = false_negative_mask(batch, q.shape[0], group_size, keys, offset)
        if mask is not None:
            scores = scores.masked_fill(mask.to(scores.device), float("-inf"))
        targets = group_targets(q.shape[0], group_size, scores.device) + offset
        return {"cl": F.cross_entropy(scores, targets)}


def own_group_scores(q: torch.Tensor, d: torch.Tensor, group_size: int) -> torch.Tensor:
    """``[Q, G]`` scores of each query against its own group (positive first, then hard negatives)."""
    return torch.einsum("qv,qgv->qg", q.float(), d.float().view(q.shape[0], group_size, -1))


class KLDistillationLoss(torch.nn.Module):
    """``KL(teacher || student)`` over each query's own group: student scores through the shared
    :class:`ScoreScale`, teacher scores divided by their own ``teacher_temperature``.

    The two live on unrelated scales: splade-tiny's top-1/top-2 gap has a median of 4.6, so at T = 1 its
    softmax is nearly one-hot, while an unscaled student's gaps are in the tens. One temperature for
    both makes CL and KD pull in opposite directions."""

    def __init__(self, scale: ScoreScale, teacher_temperature: float = 1.0):
        super().__init__()
        if teacher_temperature <= 0:
            raise ValueError(f"teacher temperature must be positive, got {teacher_temperature}")
        self.scale = scale
        self.teacher_temperature = teacher_temperature

    def forward(self, q: torch.Tensor, d: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        if "teacher" not in batch:  # a batch the teacher did not score (pseudo-queries): nothing to distil
            return {}
        student = self.scale(own_group_scores(q, d, int(batch["group_size"])))
        teacher = batch["teacher"].detach().float().to(student.device) / self.teacher_temperature
        return {"kd": kl_distillation(student, teacher, 1.0)}


class MarginMSELoss(torch.nn.Module):
    """MarginMSE on raw scores (margins are matched to the teacher's own scale, so no temperature)."""

    def forward(self, q: torch.Tensor, d: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        if "teacher" not in batch:
            return {}
        student = own_group_scores(q, d, int(batch["group_size"]))
        teacher = batch["teacher"]
        return {"kd": margin_mse(student[:, 0], student[:, 1:], teacher[:, 0], teacher[:, 1:])}


class CombinedLoss(torch.nn.Module):
    """A weighted sum of named losses (Lion's CL+KD: ``(1 - w) * cl + w * kd``); a part a batch cannot
    have (no teacher scores for pseudo-queries) is left out and the others' weights renormalised."""

    def __init__(self, losses: dict[str, torch.nn.Module], weights: dict[str, float]):
        super().__init__()
        if set(losses) != set(weights):
            raise ValueError(f"losses {sorted(losses)} and weights {sorted(weights)} must name the same parts")
        self.losses = torch.nn.ModuleDict(losses)
        self.weights = dict(weights)

    @property
    def scale(self) -> "ScoreScale | None":
        """The score scale its parts share (CL and KD use one), if any."""
        return next((loss.scale for loss in self.losses.values() if getattr(loss, "scale", None) is not None), None)

    def forward(self, q: torch.Tensor, d: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        parts: dict[str, torch.Tensor] = {}
        for loss in self.losses.values():
            parts.update(loss(q, d, batch))
        present = [name for name in self.losses if name in parts]
        total = sum(self.weights[name] for name in present)
        parts["main"] = sum(self.weights[name] * parts[name] for name in present) / total
        return parts


class SpladeLoss(torch.nn.Module):
    """A main retrieval loss plus FLOPS on queries and documents (Sentence Transformers' ``SpladeLoss``
    shape). Returns every named part, ``loss`` being the total to minimise.

    The FLOPS weights ramp up quadratically over the first ``ramp_fraction`` of training
    (:func:`~.schedules.flops_weight`); :class:`~.schedules.FlopsScheduleCallback` moves them with the
    Trainer's step through :meth:`schedule`, so ``forward`` needs no step."""

    def __init__(self, main: torch.nn.Module, query_flops: float = 0.0, doc_flops: float = 0.0,
                 ramp_fraction: float = 1 / 3):
        super().__init__()
        self.main = main
        self.query_flops, self.doc_flops, self.ramp_fraction = query_flops, doc_flops, ramp_fraction
        self.schedule(0, 1)

    @property
    def scale(self) -> "ScoreScale | None":
        return getattr(self.main, "scale", None)

    def schedule(self, step: int, total_steps: int) -> None:
        """The FLOPS weights at ``step`` of ``total_steps``."""
        from csplade_pyserini.train.schedules import flops_weight

        self.lambda_q = flops_weight(step, total_steps, self.query_flops, self.ramp_fraction)
        self.lambda_d = flops_weight(step, total_steps, self.doc_flops, self.ramp_fraction)

    def forward(self, q: torch.Tensor, d: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        parts = dict(self.main(q, d, batch))
        main = parts.pop("main") if "main" in parts else sum(parts.values())
        # the regulariser of the global batch (every process's vectors), as a single process would see it
        parts["flops_q"], parts["flops_d"] = flops(gather(q)), flops(gather(d))
        parts["loss"] = main + self.lambda_q * parts["flops_q"] + self.lambda_d * parts["flops_d"]
        return parts


class DenseLoss(torch.nn.Module):
    """A dense model's loss (Lion-DS): the main retrieval loss alone. FLOPS measures posting-list cost,
    which dense vectors do not have."""

    def __init__(self, main: torch.nn.Module):
        super().__init__()
        self.main = main

    @property
    def scale(self) -> "ScoreScale | None":
        return getattr(self.main, "scale", None)

    def forward(self, q: torch.Tensor, d: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        parts = dict(self.main(q, d, batch))
        parts["loss"] = parts.pop("main") if "main" in parts else sum(parts.values())
        return parts


def build_loss(args, dense: bool = False) -> SpladeLoss | DenseLoss:
    """The run's objective from ``--objective``, in one line per case. A dense model's scores are cosine-like
    (at most 1), divided by the fixed ``--dense-temperature`` as Lion-DS does; it has no FLOPS terms."""
    if dense and (args.flops_query_weight or args.flops_doc_weight):
        raise InputError("FLOPS regularisation is for sparse models; set --flops-query-weight and "
                         "--flops-doc-weight to 0 with --representation dense", field="flops_query_weight")
    if dense:
        scale = ScoreScale(1.0 / args.dense_temperature, learnable=False, max_scale=1.0 / args.dense_temperature)
    else:
        scale = ScoreScale(args.score_scale, learnable=args.learn_score_scale)
    kd = MarginMSELoss() if args.kd_loss == "margin-mse" else KLDistillationLoss(scale, args.teacher_temperature)
    main = {"cl": InfoNCELoss(scale), "kd": kd,
            "clkd": CombinedLoss({"cl": InfoNCELoss(scale), "kd": kd}, {"cl": 1 - args.kd_weight, "kd": args.kd_weight})
            }[args.objective]
    if dense:
        return DenseLoss(main)
    return SpladeLoss(main, args.flops_query_weight, args.flops_doc_weight, args.flops_ramp_fraction)
