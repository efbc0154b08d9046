"""Teachers for distillation and negative filtering: :func:`score_teacher` writes ``qid pid score`` lines
for the candidates of a run (its top-k per query, plus the judged positives when qrels are given, so
that every training group can be scored) with any model the toolkit loads: a ``csplade[:MODEL]`` spec
or checkpoint, a SPLADE masked-LM folder (such as ``splade-tiny``) or a cross-encoder
(``*ForSequenceClassification``) folder.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Mapping, Sequence

import torch
from tqdm import tqdm

from csplade_pyserini.errors import InputError

logger = logging.getLogger(__name__)


# --- models ----------------------------------------------------------------------------------------
class _SparseTeacher:
    """Scores as dot products of sparse weight vectors; subclasses produce (ids, weights) per text."""

    def encode(self, texts: Sequence[str], kind: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
        raise NotImplementedError

    def score(self, queries: Mapping[str, str], docs: Mapping[str, str],
              candidates: Mapping[str, Sequence[str]]) -> dict[str, dict[str, float]]:
        docids = sorted({d for ds in candidates.values() for d in ds})
        position = {d: i for i, d in enumerate(docids)}
        doc_vectors: list[tuple[torch.Tensor, torch.Tensor]] = []
        with tqdm(total=len(docids), desc="teacher docs", unit="doc", dynamic_ncols=True) as bar:
            for start in range(0, len(docids), 1024):
                chunk = docids[start:start + 1024]
                doc_vectors.extend(self.encode([docs[d] for d in chunk], "doc"))
                bar.update(len(chunk))
        qids = list(candidates)
        query_vectors = self.encode([queries[q] for q in qids], "query")
        vocab = 1 + max((int(ids.max()) for ids, _ in doc_vectors + query_vectors if ids.numel()), default=0)
        scores: dict[str, dict[str, float]] = {}
        for qid, (q_ids, q_weights) in zip(qids, query_vectors):
            dense = torch.zeros(vocab, dtype=torch.float64)
            dense[q_ids] = q_weights.double()
            row = {}
            for docid in candidates[qid]:
                ids, weights = doc_vectors[position[docid]]
                row[docid] = float((dense[ids] * weights.double()).sum())
            scores[qid] = row
        return scores


class CspladeTeacher(_SparseTeacher):
    def __init__(self, spec: str, device: str = "cpu", batch_size: int = 32):
        from csplade_pyserini.model.encoder import CspladeModel

        self.model = CspladeModel.from_spec(spec, device=device)
        self.batch_size = batch_size

    def encode(self, texts, kind):
        return self.model.encode_weights(texts, kind, max_batch=self.batch_size)


class MlmSpladeTeacher(_SparseTeacher):
    """A SPLADE masked-LM (BERT style): ``max_t log(1 + relu(logits))`` over the real tokens."""

    def __init__(self, folder: str | Path, device: str = "cpu", batch_size: int = 8, max_length: int = 256):
        from transformers import AutoModelForMaskedLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self.model = AutoModelForMaskedLM.from_pretrained(str(folder)).to(device).eval()
        self.device, self.batch_size, self.max_length = device, batch_size, max_length

    @torch.inference_mode()
    def encode(self, texts, kind):
        """Longest first (little padding), pooled max first (:func:`~csplade_pyserini.model.pooling.mlm_splade_pool`)."""
        from csplade_pyserini.model.pooling import mlm_splade_pool

        out: list = [None] * len(texts)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            batch = self.tokenizer([texts[i] for i in chunk], padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="pt").to(self.device)
            weights = mlm_splade_pool(self.model(**batch).logits, batch["attention_mask"]).float().cpu()
            for row, index in enumerate(chunk):
                ids = weights[row].nonzero(as_tuple=True)[0]
                out[index] = (ids, weights[row, ids])
        return out


class CrossEncoderTeacher:
    """A cross-encoder (``*ForSequenceClassification``): the relevance logit of (query, passage)."""

    def __init__(self, folder: str | Path, device: str = "cpu", batch_size: int = 32, max_length: int = 512):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self.model = AutoModelForSequenceClassification.from_pretrained(str(folder)).to(device).eval()
        self.device, self.batch_size, self.max_length = device, batch_size, max_length

    @torch.inference_mode()
    def score(self, queries, docs, candidates):
        pairs = [(qid, docid) for qid, ds in candidates.items() for docid in ds]
        size = self.batch_size
        scores: dict[str, dict[str, float]] = {}
        for start in tqdm(range(0, len(pairs), size), desc="teacher pairs", unit="batch", dynamic_ncols=True):
            chunk = pairs[start:start + size]
            batch = self.tokenizer([queries[q] for q, _ in chunk], [docs[d] for _, d in chunk], padding=True,
                                   truncation="only_second", max_length=self.max_length,
                                   return_tensors="pt").to(self.device)
            logits = self.model(**batch).logits.float()
            values = logits[:, 0] if logits.shape[-1] == 1 else logits[:, 1] - logits[:, 0]
            for (qid, docid), value in zip(chunk, values.tolist()):
                scores.setdefault(qid, {})[docid] = value
        return scores


def load_teacher(teacher: str, device: str = "cpu", batch_size: int | None = None, max_length: int | None = None):
    """A ``csplade[...]`` spec, a csplade checkpoint, a SPLADE MLM folder or a cross-encoder folder."""
    from csplade_pyserini.model.card import CARD_NAME

    sizes = {"batch_size": batch_size} if batch_size else {}
    from csplade_pyserini.model.spec import is_csplade_spec

    if is_csplade_spec(teacher):
        return CspladeTeacher(teacher, device, **sizes)
    path = Path(teacher)
    if (path / CARD_NAME).exists() or (path.is_file() and path.suffix in (".gguf", ".json")):
        return CspladeTeacher(f"csplade:{teacher}", device, **sizes)
    config_path = path / "config.json"
    if not config_path.exists():
        raise InputError("teacher is neither a csplade spec nor a model folder with config.json", path=teacher,
                         field="teacher")
    try:
        architectures = json.loads(config_path.read_text(encoding="utf-8")).get("architectures") or []
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON: {exc.msg}", path=config_path) from None
    kinds = " ".join(architectures)
    extra = {"max_length": max_length, **sizes} if max_length else sizes
    if "MaskedLM" in kinds:
        return MlmSpladeTeacher(path, device, **extra)
    if "SequenceClassification" in kinds:
        return CrossEncoderTeacher(path, device, **extra)
    if "CausalLM" in kinds:
        return CspladeTeacher(f"csplade:{teacher}", device, **sizes)
    raise InputError(f"cannot use a {kinds or 'model without architectures'} as a teacher (expected a SPLADE "
                     "masked LM, a cross-encoder or a csplade model)", path=config_path, field="architectures")


def score_teacher(teacher: str, run: str | Path, output: str | Path, data: str | Path | None = None,
                  queries: str | Path | None = None, corpus: str | Path | None = None,
                  qrels: str | Path | None = None, split: str = "train", top_k: int | None = None,
                  device: str = "cpu", batch_size: int | None = None, max_length: int | None = None) -> dict:
    """Teacher scores for the top-``top_k`` of ``run`` (all when ``None``) and the judged positives.

    Texts come from a BEIR folder (``data``) or from ``queries`` and ``corpus`` files; qrels from
    ``qrels`` or ``data/qrels/SPLIT.tsv`` when present. Writes ``qid pid score`` lines atomically.
    """
    from csplade_pyserini.atomic import atomic_file
    from csplade_pyserini.datasets import beir_file, load_qrels, read_corpus, read_queries
    from csplade_pyserini.train.data import read_run

    if top_k is not None and top_k < 1:
        raise InputError(f"top-k must be positive, got {top_k}", field="top_k")
    folder = Path(data) if data is not None else None
    if queries is None:
        if folder is None:
            raise InputError("queries are needed: --data BEIR_FOLDER or --queries FILE", field="queries")
        queries = beir_file(folder, "queries")
    if corpus is None:
        if folder is None:
            raise InputError("documents are needed: --data BEIR_FOLDER or --corpus FILE", field="corpus")
        corpus = folder
    if qrels is None and folder is not None:
        qrels = beir_file(folder, "qrels", split, required=False)
    query_texts = read_queries(Path(queries))
    ranked = read_run(run)
    candidates: dict[str, list[str]] = {}
    for qid, hits in ranked.items():
        if qid not in query_texts:
            raise InputError(f"query {qid!r} of the run is not in the queries", path=run, line=hits[0][2], field="qid")
        candidates[qid] = [docid for docid, _, _ in (hits if top_k is None else hits[:top_k])]
    if qrels is not None:
        for qid, judged in load_qrels(qrels).items():
            if qid in candidates:
                candidates[qid].extend(d for d, rel in judged.items() if rel > 0 and d not in candidates[qid])
    wanted = {d for ds in candidates.values() for d in ds}
    docs = {doc.docid: doc.contents for doc in read_corpus(corpus) if doc.docid in wanted}
    unknown = wanted - docs.keys()
    if unknown:
        raise InputError(f"{len(unknown)} candidate documents are not in the corpus (first: {sorted(unknown)[0]!r})",
                         path=run, field="docid")
    model = load_teacher(teacher, device, batch_size, max_length)
    scores = model.score(query_texts, docs, candidates)
    pairs = 0
    with atomic_file(output) as handle:
        for qid in candidates:
            for docid in candidates[qid]:
                handle.write(f"{qid} {docid} {scores[qid][docid]:.6f}\n")
                pairs += 1
    logger.info("wrote %d teacher scores for %d queries to %s", pairs, len(candidates), output)
    return {"queries": len(candidates), "pairs": pairs}
