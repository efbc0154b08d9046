"""Contrastive batches: each query with ``[positive] + hard negatives``, as model inputs.

The sampler yields ``(example, epoch)`` pairs; the collator draws each example's group
(:func:`~.data.make_groups`) from ``Random(seed:epoch:example)``, so a batch is the same whichever
process builds it and whenever (resume, or 2 processes against 1), looks the texts up in a
:class:`FeatureSource` (tokenised on the fly, or rows of an activation cache) and adds what the losses
need: the group size, the teacher's scores of each group, and the keys for false-negative masking.

False negatives: SciFact has 248 of its 565 training positives shared by two or more queries; in a
batch of 32 x 16 documents 14% of the queries met one of their own positives as a negative. A document
that the qrels judge relevant to query ``i`` is therefore masked out of ``i``'s negatives (its score
set to ``-inf``), whichever group (or process) it came in with: documents carry a ``doc_keys`` hash of
their id and queries the keys of all their positives (``positive_keys``).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch

from csplade_pyserini.train.data import PSEUDO_PREFIX, TrainingExample, make_groups


class FeatureSource:
    """Model inputs for a list of text ids."""

    def features(self, ids: Sequence[str]) -> dict[str, torch.Tensor]:
        raise NotImplementedError


class TextSource(FeatureSource):
    """Tokenises on the fly (the full-forward path)."""

    def __init__(self, encoder, texts: Mapping[str, str], kind: str):
        self.encoder, self.texts, self.kind = encoder, texts, kind

    def features(self, ids: Sequence[str]) -> dict[str, torch.Tensor]:
        sequences = self.encoder.tokenize([self.texts[i] for i in ids], self.kind)
        batch = self.encoder.collate(sequences, kind=self.kind)
        return {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, "pool_mask": batch.pool_mask}


class CacheSource(FeatureSource):
    """Rows of an :class:`~.cache.ActivationCache` (the frozen-bottom path)."""

    def __init__(self, cache, index: Mapping[str, int], pad_id: int = 0):
        self.cache, self.index, self.pad_id = cache, index, pad_id

    def features(self, ids: Sequence[str]) -> dict[str, torch.Tensor]:
        return self.cache.rows([self.index[i] for i in ids], self.pad_id).as_features()


@dataclass
class ContrastiveCollator:
    """Turns a list of example indices into one contrastive batch."""

    examples: Sequence[TrainingExample]
    queries: FeatureSource
    docs: FeatureSource
    negatives: int
    teacher: Mapping[str, Mapping[str, float]] | None = None
    positives: Mapping[str, set[str]] | None = None  # qid -> every judged-relevant docid (masking)
    pseudo_queries: FeatureSource | None = None  # sources of examples whose query id starts with "pseudo:"
    seed: int = 0

    def __call__(self, items: Sequence) -> dict:
        """``items``: ``(example index, epoch)`` pairs (a bare index means epoch 0)."""
        pairs = [item if isinstance(item, (tuple, list)) else (item, 0) for item in items]
        chosen = [self.examples[i] for i, _ in pairs]
        groups = [make_groups(self.examples[i], self.negatives, random.Random(f"{self.seed}:{epoch}:{i}"))
                  for i, epoch in pairs]
        group_size = 1 + self.negatives
        docids = [p.docid for group in groups for p in group]
        qids = [e.query_id for e in chosen]
        batch: dict = {"docs": self.docs.features(docids), "group_size": group_size}
        pseudo = [q.startswith(PSEUDO_PREFIX) for q in qids]
        if any(pseudo) and not all(pseudo):
            raise ValueError("a batch mixes pseudo-queries and real queries; the sampler keeps them apart")
        source = self.pseudo_queries if pseudo[0] and self.pseudo_queries is not None else self.queries
        batch["query"] = source.features(qids)
        batch["doc_keys"] = torch.tensor([doc_key(d) for d in docids], dtype=torch.long)
        relevant = [sorted(self.relevant(e)) for e in chosen]
        width = max(len(r) for r in relevant)
        batch["positive_keys"] = torch.tensor([[doc_key(d) for d in r] + [-1] * (width - len(r)) for r in relevant],
                                              dtype=torch.long)
        if self.teacher is not None and not pseudo[0]:
            batch["teacher"] = torch.tensor([[self.teacher[e.query_id][p.docid] for p in g]
                                             for e, g in zip(chosen, groups)], dtype=torch.float32)
        return batch

    def relevant(self, example: TrainingExample) -> set[str]:
        """Every document judged relevant to the example's query."""
        found = set(self.positives.get(example.query_id, ())) if self.positives else set()
        return found | {p.docid for p in example.positives}


def doc_key(docid: str) -> int:
    """A stable non-negative 63-bit key of a document id (tensors cannot carry strings across processes)."""
    return int.from_bytes(hashlib.blake2b(docid.encode("utf-8"), digest_size=8).digest(), "little") >> 1


class QueryBatchSampler(torch.utils.data.Sampler):
    """Batches of ``(example index, epoch)`` pairs, shuffled per epoch from the seed; real and pseudo-queries
    never share a batch (they come from different feature sources), and ``pseudo_share`` of the batches
    are pseudo.

    Deterministic in (seed, epoch), so the Trainer's resume (which replays the sampler and skips the
    batches already seen) lands on exactly the next batch."""

    def __init__(self, examples: Sequence[TrainingExample], batch_size: int, seed: int, pseudo_share: float = 0.0,
                 steps_per_epoch: int | None = None):
        self.real = [i for i, e in enumerate(examples) if not e.query_id.startswith(PSEUDO_PREFIX)]
        self.pseudo = [i for i, e in enumerate(examples) if e.query_id.startswith(PSEUDO_PREFIX)]
        self.batch_size, self.seed, self.pseudo_share = batch_size, seed, pseudo_share if self.pseudo else 0.0
        if len(self.real) < batch_size:
            raise ValueError(f"{len(self.real)} training queries do not fill one batch of {batch_size}")
        real_batches = len(self.real) // batch_size
        self.length = steps_per_epoch or (real_batches if not self.pseudo_share
                                          else int(round(real_batches / (1 - self.pseudo_share))))
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        rng = random.Random(f"{self.seed}:{self.epoch}")
        real = self.real[:]
        pseudo = self.pseudo[:]
        rng.shuffle(real)
        rng.shuffle(pseudo)
        n_pseudo = int(round(self.length * self.pseudo_share))
        kinds = [True] * n_pseudo + [False] * (self.length - n_pseudo)
        rng.shuffle(kinds)
        r = p = 0
        for is_pseudo in kinds:
            if is_pseudo:
                if p + self.batch_size > len(pseudo):
                    rng.shuffle(pseudo)
                    p = 0
                yield [(i, self.epoch) for i in pseudo[p:p + self.batch_size]]
                p += self.batch_size
            else:
                if r + self.batch_size > len(real):
                    rng.shuffle(real)
                    r = 0
                yield [(i, self.epoch) for i in real[r:r + self.batch_size]]
                r += self.batch_size
