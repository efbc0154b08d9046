"""Training the word channel's term-frequency head (``model/words.py``) on several domains at once.

    python -m csplade_pyserini.train words --data ../shared/data/beir/scifact --data ../shared/data/beir/nfcorpus \\
        --output-dir runs/train/words

The backbone is frozen and read once: every training corpus goes through the same
:meth:`WordEncoder.occurrence_states` that encodes documents at inference, and the states of each kept word
occurrence are cached (``OUTPUT_DIR/cache/NAME.pt``). Training then runs only the head: a batch of queries,
each with one judged positive and BM25 negatives (the untrained channel's own top 50, judged documents
left out), all the batch's documents as candidates for every query (a document judged relevant to a query is
never its negative), InfoNCE through a learned inverse temperature, and ``--reg`` times the mean squared log
count, which holds the head near BM25 where the queries say nothing. Each domain's validation queries (its
``dev`` split, else ``--held-out`` train queries never trained on) are ranked against that whole corpus
exactly, with the vectors the index would hold, before training and every ``--eval-steps``; the best mean
over the domains is kept. Nothing of the zero-shot suite's collections is read.
"""

from __future__ import annotations

import copy
import json
import logging
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from csplade_pyserini.train.config import option
from csplade_pyserini.train.domains import (
    Domain,
    Split,
    keyed_cache,
    parse_options,
    start_run,
    train_steps,
    validate_domains,
    validation_notes,
    write_model,
)

logger = logging.getLogger(__name__)


class CorpusFeatures:
    """A corpus as the word channel sees it: each kept word occurrence (term, document, whether the model
    read it) and the cached state of every read occurrence, with the corpus's idf as Pyserini computes it
    for an impact index (``log(N / df)``)."""

    def __init__(self, docids: list[str], terms: list[list[str]], positions: list[list[int]], states: torch.Tensor):
        self.docids = docids
        self.vocabulary: dict[str, int] = {}
        term_ids, doc_ids, inside = [], [], []
        for d, (words, where) in enumerate(zip(terms, positions)):
            for term, position in zip(words, where):
                term_ids.append(self.vocabulary.setdefault(term, len(self.vocabulary)))
                doc_ids.append(d)
                inside.append(position >= 0)
        self.term = torch.tensor(term_ids, dtype=torch.long)
        self.doc = torch.tensor(doc_ids, dtype=torch.long)
        self.inside = torch.tensor(inside, dtype=torch.bool)
        self.states = states  # [inside occurrences, hidden], float16
        self.length = torch.bincount(self.doc, minlength=len(docids)).float()
        self.start = torch.zeros(len(docids) + 1, dtype=torch.long)
        self.start[1:] = torch.cumsum(self.length.long(), 0)
        self.state_start = torch.zeros(len(self.term) + 1, dtype=torch.long)
        self.state_start[1:] = torch.cumsum(self.inside.long(), 0)
        pairs = torch.unique(self.doc * len(self.vocabulary) + self.term)
        df = torch.bincount(pairs % len(self.vocabulary), minlength=len(self.vocabulary)).float()
        self.idf = torch.log(len(docids) / df)
        # BM25's avgdl, as the encode command measures it for an indexed collection
        self.avgdl = round(float(self.length.mean()), 1) if len(docids) else 1.0

    @classmethod
    def build(cls, encoder, documents, cache: Path | None = None, device: str = "cpu") -> "CorpusFeatures":
        """Analyse and run the frozen backbone over ``documents`` once, or read the cache ``build`` wrote for the
        same documents, backbone, layer, prefix and length (any other cache is rebuilt, never reused)."""
        import hashlib

        texts = [d.contents for d in documents]
        digest = hashlib.sha256()
        card = encoder.card
        digest.update(json.dumps([card.backbone, card.tf_layer, card.doc_prefix, card.max_doc_length]).encode())
        for doc, text in zip(documents, texts):
            digest.update(doc.docid.encode() + b"\0" + text.encode() + b"\1")

        def build() -> dict:
            analysed, sequences = encoder.analyse(texts)
            with tqdm(total=len(texts), desc=f"cache {cache.stem if cache else 'corpus'}", unit="doc",
                      dynamic_ncols=True) as bar:
                states = encoder.occurrence_states(sequences, [a.positions for a in analysed], device, progress=bar)
            return {"docids": [d.docid for d in documents], "terms": [a.terms for a in analysed],
                    "positions": [a.positions for a in analysed],
                    "states": torch.cat(states).to(torch.float16) if states else torch.zeros(0, 1, dtype=torch.float16)}

        blob = keyed_cache(cache, digest.hexdigest(), build, "word features")
        return cls(blob["docids"], blob["terms"], blob["positions"], blob["states"])

    def occurrence_counts(self, head, occurrences: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``exp(g)`` of the given occurrences (1 outside the window) and their log counts ``g`` (inside only)."""
        counts = torch.ones(len(occurrences))
        inside = self.inside[occurrences]
        if head is None or not bool(inside.any()):
            return counts, counts.new_zeros(0)
        states = self.states[self.state_start[occurrences[inside]]].float()
        read = head(states)
        counts = counts.masked_scatter(inside, read)
        return counts, torch.log(read)

    def document_weights(self, head, card, docs: torch.Tensor):
        """``(row, term, weight)`` of the listed documents (row = position in ``docs``) and the log counts."""
        ranges = [torch.arange(self.start[d], self.start[d + 1]) for d in docs.tolist()]
        occurrences = torch.cat(ranges) if ranges else torch.zeros(0, dtype=torch.long)
        rows = torch.repeat_interleave(torch.arange(len(docs)), torch.tensor([len(r) for r in ranges]))
        counts, logs = self.occurrence_counts(head, occurrences)
        key = rows * len(self.vocabulary) + self.term[occurrences]
        unique, inverse = torch.unique(key, return_inverse=True)
        tf = torch.zeros(len(unique)).index_add(0, inverse, counts)
        row, term = unique // len(self.vocabulary), unique % len(self.vocabulary)
        from csplade_pyserini.model.words import bm25_saturation

        weight = bm25_saturation(tf, self.length[docs][row], card.bm25_k1, card.bm25_b, self.avgdl)
        return row, term, weight, logs

    def query_matrix(self, texts: list[str], analyzer) -> torch.Tensor:
        """``[queries, vocabulary]``: count x idf of each query word the corpus holds (the index's query side)."""
        matrix = torch.zeros(len(texts), len(self.vocabulary))
        for i, text in enumerate(texts):
            for term, count in Counter(analyzer.terms(text)).items():
                j = self.vocabulary.get(term)
                if j is not None and self.idf[j] > 0:
                    matrix[i, j] = count * self.idf[j]
        return matrix

    @torch.no_grad()
    def rank(self, head, card, queries: dict[str, str], analyzer, depth: int = 1000) -> dict[str, dict[str, float]]:
        """Every query against the whole corpus, exactly (float weights: the integer index ranks the same up to
        rounding ties)."""
        everything = torch.arange(len(self.docids))
        rows, terms, weights = [], [], []
        for block in everything.split(2048):
            row, term, weight, _ = self.document_weights(head, card, block)
            rows.append(row + int(block[0]))
            terms.append(term)
            weights.append(weight)
        documents = torch.sparse_coo_tensor(torch.stack([torch.cat(rows), torch.cat(terms)]), torch.cat(weights),
                                            (len(self.docids), len(self.vocabulary)))
        qids = list(queries)
        queries_matrix = self.query_matrix([queries[q] for q in qids], analyzer)
        scores = torch.sparse.mm(documents, queries_matrix.t()).t()
        top = torch.topk(scores, min(depth, scores.shape[1]), dim=1)
        return {q: {self.docids[j]: float(s) for s, j in zip(top.values[i].tolist(), top.indices[i].tolist()) if s > 0}
                for i, q in enumerate(qids)}


@dataclass
class Group:
    query: int  # row in the domain's training query matrix
    positives: list[int]  # document rows, the highest judged grade
    judged: set[int]  # every document judged relevant (never a negative)
    negatives: list[int]


def training_groups(features: CorpusFeatures, card, split: Split, analyzer, depth: int) -> tuple[list[Group], torch.Tensor]:
    """Each training query with its best-graded positives and the untrained channel's (BM25's) top ``depth``
    documents that no judgement calls relevant, and the queries' count x idf matrix."""
    qids = list(split.queries)
    matrix = features.query_matrix([split.queries[q] for q in qids], analyzer)
    run = features.rank(None, card, split.queries, analyzer, depth=depth)
    position = {d: i for i, d in enumerate(features.docids)}
    groups = []
    for i, q in enumerate(qids):
        judged = {position[d]: r for d, r in split.qrels[q].items() if r > 0 and d in position}
        if not judged:
            continue
        best = max(judged.values())
        negatives = [position[d] for d in run.get(q, {}) if d not in split.qrels[q]]
        if negatives:
            groups.append(Group(i, [d for d, r in judged.items() if r == best], set(judged), negatives))
    return groups, matrix


class WordChannelObjective(torch.nn.Module):
    """InfoNCE over a batch's documents through a learned inverse temperature, plus ``reg`` x the mean
    squared log count of the occurrences read (the pull towards BM25)."""

    def __init__(self, head, card, scale: float, reg: float):
        super().__init__()
        self.head = head
        self.card = card
        self.log_scale = torch.nn.Parameter(torch.tensor(float(scale)).log())
        self.reg = reg

    def forward(self, features: CorpusFeatures, queries: torch.Tensor, groups: list[Group],
                negatives: int, rng: random.Random) -> dict[str, torch.Tensor]:
        docs, targets = [], []
        for group in groups:
            targets.append(len(docs))
            docs.append(rng.choice(group.positives))
            docs.extend(rng.sample(group.negatives, min(negatives, len(group.negatives))))
        docs_tensor = torch.tensor(docs)
        row, term, weight, logs = features.document_weights(self.head, self.card, docs_tensor)
        query_rows = queries[[g.query for g in groups]]
        scores = torch.zeros(len(groups), len(docs)).index_add(1, row, query_rows[:, term] * weight)
        mask = torch.zeros_like(scores, dtype=torch.bool)
        for i, group in enumerate(groups):
            for j, d in enumerate(docs):
                if d in group.judged and j != targets[i]:
                    mask[i, j] = True  # another relevant document is no negative
        logits = (scores * self.log_scale.exp()).masked_fill(mask, float("-inf"))
        contrastive = torch.nn.functional.cross_entropy(logits, torch.tensor(targets))
        regulariser = (logs ** 2).mean() if logs.numel() else contrastive.new_zeros(())
        return {"loss": contrastive + self.reg * regulariser, "infonce": contrastive.detach(),
                "reg": regulariser.detach(), "scale": self.log_scale.exp().detach()}


def validate(domains: list[Domain], features: dict[str, CorpusFeatures], head, card, analyzer) -> dict[str, float]:
    return validate_domains(domains, lambda domain: features[domain.name].rank(head, card, domain.validation.queries,
                                                                               analyzer, depth=100))


@dataclass
class WordChannelArguments:
    """Every option of ``train words``: ``HfArgumentParser`` makes each field a flag (dash or underscore), with
    its default and help, as the other training commands do (``train/config.py``)."""

    data: list[str] = field(metadata=option("BEIR folders with a train split (and a dev split, else --held-out train "
                                           "queries validate); repeat the flag or list them", action="extend"))
    output_dir: str = field(metadata=option("where the model (model/best), the log and the feature cache go"))
    backbone: str = field(default="smollm2", metadata=option("the frozen LM whose states the head reads"))
    tf_layer: int = field(default=4, metadata=option("the layer the term-frequency head reads; the backbone runs "
                                                    "that far at inference"))
    width: int = field(default=64, metadata=option("the head's hidden width"))
    max_doc_length: int = field(default=256, metadata=option("tokens the backbone reads per document"))
    bm25_avgdl: float = field(default=0.0, metadata=option(
        "0: each corpus's own mean analysed length, as the encode command measures an indexed collection (the "
        "card keeps the training corpora's overall mean for encoders that see one batch at a time)"))
    steps: int = field(default=600, metadata=option("optimiser steps"))
    batch_size: int = field(default=16, metadata=option("training queries per step, all from one domain"))
    negatives: int = field(default=15, metadata=option("negatives per query, drawn from the top --negative-depth"))
    negative_depth: int = field(default=50, metadata=option("the untrained channel's (BM25 over words) ranking depth "
                                                           "that negatives come from"))
    learning_rate: float = field(default=1e-3, metadata=option("AdamW learning rate (cosine schedule)"))
    warmup_ratio: float = field(default=0.1, metadata=option("share of the steps spent warming up"))
    scale: float = field(default=0.3, metadata=option("initial inverse temperature of InfoNCE over BM25-scale "
                                                     "scores (learned)"))
    reg: float = field(default=0.1, metadata=option("weight of the mean squared log count (pulls towards BM25)"))
    eval_steps: int = field(default=50, metadata=option("validate every this many steps (and at step 0 and the end)"))
    held_out: int = field(default=100, metadata=option("train queries held out to validate a domain without a dev "
                                                      "split"))
    seed: int = field(default=42, metadata=option("seeds the head, the batches and the held-out queries"))
    threads: int = field(default=0, metadata=option("torch threads (0: every core)"))
    device: str = field(default="cpu", metadata=option(
        "where the frozen backbone builds the feature cache (cuda on a GPU machine); the head, 37k parameters, "
        "trains on the CPU either way"))
    overwrite_output_dir: bool = field(default=False, metadata=option(
        "replace the model and log an earlier run left in --output-dir (its feature cache is always reused)"))


def parse_arguments(argv: list[str] | None) -> WordChannelArguments:
    return parse_options(WordChannelArguments, "python -m csplade_pyserini.train words", __doc__, argv)


def train(args: WordChannelArguments) -> Path:
    """Train, keep the best validated head, write ``OUTPUT_DIR/model/best`` (card + head) and the log."""
    from transformers import get_cosine_schedule_with_warmup

    from csplade_pyserini.datasets import read_corpus
    from csplade_pyserini.model.backbone import load_card_model
    from csplade_pyserini.model.card import ModelCard
    from csplade_pyserini.model.words import TF_HEAD_FILE, WORD_SCHEME, TermFrequencyHead, WordEncoder

    run = start_run(args)
    out, rng, begin, domains = run.out, run.rng, run.begin, run.domains
    card = ModelCard(backbone=args.backbone, term_scheme=WORD_SCHEME, expansion=False, query_side="idf-tokens",
                     max_doc_length=args.max_doc_length, dtype="float32", tf_head=TF_HEAD_FILE, tf_layer=args.tf_layer)
    model, tokenizer = load_card_model(card, None, device=args.device, dtype="float32")
    head = TermFrequencyHead(model.config.hidden_size, args.width)
    encoder = WordEncoder(model, tokenizer, card, head)
    features = {d.name: CorpusFeatures.build(encoder, list(read_corpus(d.folder)),
                                             out / "cache" / f"{d.name}.L{args.tf_layer}.pt", args.device)
                for d in domains}
    feature_seconds = time.perf_counter() - begin
    if args.bm25_avgdl:
        for corpus in features.values():
            corpus.avgdl = args.bm25_avgdl
    avgdl = args.bm25_avgdl or float(torch.cat([f.length for f in features.values()]).mean())
    card = card.replace(bm25_avgdl=round(avgdl, 1))
    analyzer = encoder.analyzer
    groups, queries = {}, {}
    for domain in domains:
        groups[domain.name], queries[domain.name] = training_groups(features[domain.name], card, domain.train, analyzer,
                                                                    args.negative_depth)
        logger.info("%s: %d training queries with positives and negatives; validation: %s (%d queries)",
                    domain.name, len(groups[domain.name]), domain.validation_source, len(domain.validation.queries))
    objective = WordChannelObjective(head, card, args.scale, args.reg)
    optimizer = torch.optim.AdamW(objective.parameters(), lr=args.learning_rate, weight_decay=0.0)
    schedule = get_cosine_schedule_with_warmup(optimizer, int(args.warmup_ratio * args.steps), args.steps)
    best, best_state, log = train_steps(
        run, args, groups, lambda domain, batch: objective(features[domain.name], queries[domain.name], batch,
                                                           args.negatives, rng),
        optimizer, schedule, lambda: validate(domains, features, head, card, analyzer),
        lambda: copy.deepcopy(head.state_dict()), "words", "BM25 over words")
    head.load_state_dict(best_state)
    seconds = time.perf_counter() - begin
    trained_on = [d.name for d in domains]
    notes = {
        "what": f"{args.backbone}, frozen, read up to layer {args.tf_layer}. Word channel ({WORD_SCHEME}): BM25 "
                "saturation of term frequencies in which each occurrence counts exp(g(h)), g a trained head "
                f"({model.config.hidden_size}-{args.width}-1 "
                "MLP); inference-free query side (count x idf).",
        "trained_on": trained_on,
        "training": {"data": {d.name: f"{len(groups[d.name])} train queries" for d in domains}, "steps": args.steps,
                     "batch_size": args.batch_size, "negatives": f"{args.negatives} of the untrained channel's "
                     f"top {args.negative_depth} (BM25 over words), judged documents left out",
                     "objective": f"InfoNCE over the batch's documents + {args.reg} x mean squared log count",
                     "learning_rate": args.learning_rate, "seed": args.seed, "seconds": round(seconds, 1),
                     "feature_seconds": round(feature_seconds, 1),
                     "bm25_avgdl": {d.name: features[d.name].avgdl for d in domains}},
        "validation": validation_notes(domains, best, log),
        "made_by": "python -m csplade_pyserini.train words " + " ".join(f"--data {d.folder}" for d in domains),
    }
    final = card.replace(name=f"{args.backbone}-words-tf{args.tf_layer}", dtype="auto", notes=notes)
    target = write_model(out, final, head.save, log)
    logger.info("kept step %d (validation nDCG@10 %s) in %s; %.0f s", best["step"], best, target, seconds)
    return target


def main(argv: list[str] | None = None) -> int:
    train(parse_arguments(argv))
    return 0
