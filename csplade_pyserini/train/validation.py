"""Validation that means something: held-out training queries ranked against the whole corpus.

The old in-training evaluation ranked 30 queries against 300 documents; it scored about 0.25 where
the full test gave 0.06-0.08, with noise of +-0.05, and model selection followed that noise. Here a
seeded sample of the training queries is held out of training and every one of them is ranked
against every document of the corpus, with the vectors the index will hold (the card's top-k), and
scored with ir-measures. The test queries are never touched.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
from tqdm import tqdm

from csplade_pyserini.train.collator import FeatureSource

logger = logging.getLogger(__name__)


def holdout_queries(qrels: Mapping[str, Mapping[str, int]], count: int, seed: int) -> list[str]:
    """A seeded sample of ``count`` queries with a positive judgement (sorted ids)."""
    judged = sorted(q for q, docs in qrels.items() if any(r > 0 for r in docs.values()))
    return sorted(random.Random(f"validation:{seed}").sample(judged, min(count, len(judged))))


@dataclass
class RetrievalValidation:
    """Queries, their qrels and the corpus, with the feature sources that turn ids into model inputs."""

    query_ids: Sequence[str]
    doc_ids: Sequence[str]
    qrels: Mapping[str, Mapping[str, int]]
    queries: FeatureSource
    docs: FeatureSource
    batch_size: int = 64
    depth: int = 100

    @torch.no_grad()
    def encode(self, model, source: FeatureSource, ids: Sequence[str], kind: str, device) -> torch.Tensor:
        """A sparse ``[len(ids), vocab]`` CSR matrix of the card's top-k weights."""
        from csplade_pyserini.model.pooling import keep_top_k

        top_k = model.card.top_k(kind)
        rows = []
        for start in tqdm(range(0, len(ids), self.batch_size), desc=f"validate {kind}s", leave=False,
                          disable=len(ids) < 4 * self.batch_size):
            features = {k: v.to(device) for k, v in source.features(ids[start:start + self.batch_size]).items()}
            weights = keep_top_k(model.encode(features, kind), top_k)
            rows.append(weights.detach().float().cpu().to_sparse_coo())
        return torch.cat(rows).coalesce()

    def run(self, model, device="cpu") -> dict[str, float]:
        was_training = model.training
        model.eval()
        try:
            q = self.encode(model, self.queries, self.query_ids, "query", device)
            d = self.encode(model, self.docs, self.doc_ids, "doc", device)
        finally:
            model.train(was_training)
        scores = torch.sparse.mm(q, d.t().coalesce()).to_dense()
        top = scores.topk(min(self.depth, scores.shape[1]), dim=1)
        run = {qid: {self.doc_ids[j]: float(s) for s, j in zip(top.values[i].tolist(), top.indices[i].tolist())}
               for i, qid in enumerate(self.query_ids)}
        ndcg, recall = ndcg_and_recall(run, {q: self.qrels[q] for q in self.query_ids})
        nnz_q = q._nnz() / max(1, q.shape[0])
        nnz_d = d._nnz() / max(1, d.shape[0])
        return {"ndcg@10": ndcg, "recall@100": recall, "terms_q": nnz_q, "terms_d": nnz_d}


def ndcg_and_recall(run: Mapping[str, Mapping[str, float]], qrels: Mapping[str, Mapping[str, int]]
                    ) -> tuple[float, float]:
    """nDCG@10 and R@100 with ir-measures; where it is not installed (the GPU machines have only PyTorch,
    transformers, peft and accelerate), the same trec_eval definitions computed here (equality with
    ir-measures is tested): gain = relevance, log2 discount, ties broken by docid descending."""
    try:
        from ir_measures import R, nDCG

        from csplade_pyserini.evaluate.measures import evaluate_run
    except ImportError:
        pass
    else:
        scores = evaluate_run(run, qrels, [nDCG @ 10, R @ 100])
        return scores["nDCG@10"], scores["R@100"]
    import math

    from csplade_pyserini.runs.format import trec_order

    ndcgs, recalls = [], []
    for qid, judged in qrels.items():
        ranked = sorted(run.get(qid, {}).items(), key=lambda item: trec_order(item[1], item[0]))
        gains = [max(0, judged.get(docid, 0)) for docid, _ in ranked]
        dcg = sum(g / math.log2(i + 2) for i, g in enumerate(gains[:10]))
        ideal = sorted((r for r in judged.values() if r > 0), reverse=True)
        idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal[:10]))
        ndcgs.append(dcg / idcg if idcg else 0.0)
        relevant = {d for d, r in judged.items() if r > 0}
        recalls.append(len(relevant & {d for d, _ in ranked[:100]}) / len(relevant) if relevant else 0.0)
    return sum(ndcgs) / max(1, len(ndcgs)), sum(recalls) / max(1, len(recalls))


