"""Training the pure CSPLADE path: the LM-head channel read early, its context map and logit bias.

    python -m csplade_pyserini.train pure --data ../shared/data/beir/scifact --data ../shared/data/beir/nfcorpus \\
        --output-dir runs/train/pure

The model (``model/context.py``): every pooled position's vocabulary distribution is SmolLM2's own LM head
read on ``final_norm(embed(x) + W rms(h))``, ``h`` the backbone's states after ``--context-layer`` layers;
max-pooled ``log(1 + relu(logits + bias))`` as in CSPLADE, the query side the same model (top
``--query-top-k`` terms). Trained: the map ``W`` (zero at the start), the per-term bias (calibrated first so
that each term is active in ``--bias-target-df`` of a sample of documents) and InfoNCE's inverse
temperature; the backbone and the LM head are frozen.

The frozen part is read once: every document's and query's token ids and layer states are cached
(``OUTPUT_DIR/cache``). A step then costs the map and the LM head, and the LM head only over a candidate
vocabulary: the terms of the batch's queries (a document's other terms do not touch a query's score, so
the ranking loss is exact) plus ``--flops-sample`` random terms, on which the FLOPS regulariser of the
documents is estimated. Validation ranks each domain's validation queries (its ``dev`` split, else
``--held-out`` train queries never trained on) against its whole corpus exactly, with the vectors the index
would hold (documents keep every active term: the card's ``doc_top_k`` is null); the best mean is kept.
Nothing of the zero-shot suite's collections is read.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from csplade_pyserini.model.pooling import keep_top_k
from csplade_pyserini.train.config import option
from csplade_pyserini.train.domains import (
    Domain,
    keyed_cache,
    parse_options,
    start_run,
    train_steps,
    validate_domains,
    validation_notes,
    write_model,
)

logger = logging.getLogger(__name__)


class PositionCache:
    """The pooled positions of many texts, flat: token id and the frozen backbone's state at each, and where
    each text's positions start."""

    def __init__(self, ids: torch.Tensor, states: torch.Tensor | None, offsets: torch.Tensor):
        self.ids, self.states, self.offsets = ids, states, offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @classmethod
    def build(cls, encoder, texts: list[str], kind: str, path: Path | None, device: str = "cpu") -> "PositionCache":
        """Run the (cut) backbone over ``texts`` once, or read the cache built for the same texts and model."""
        card = encoder.card
        digest = hashlib.sha256(json.dumps([card.backbone, card.variant, card.context_layer, kind,
                                            card.doc_prefix if kind == "doc" else card.query_prefix,
                                            encoder.max_length(kind)]).encode())
        for text in texts:
            digest.update(text.encode() + b"\0")

        def build() -> dict:
            from csplade_pyserini.model.sparse import decoder_and_head

            decoder = decoder_and_head(encoder.model)[0]
            sequences = encoder.tokenize(texts, kind)
            per_text: list = [None] * len(texts)
            with tqdm(total=len(texts), desc=f"cache {path.stem if path else kind}", unit=kind,
                      dynamic_ncols=True) as bar:
                for batch in encoder.batches(sequences, 2048, 64, 8, kind):
                    with torch.inference_mode():
                        states = decoder(input_ids=batch.input_ids.to(device),
                                         attention_mask=batch.attention_mask.to(device),
                                         use_cache=False).last_hidden_state.cpu()
                    for row, i in enumerate(batch.order):
                        keep = batch.pool_mask[row].bool()
                        per_text[i] = (batch.input_ids[row][keep].clone(),
                                       states[row][keep].to(torch.bfloat16).clone())
                    bar.update(len(batch.order))
            offsets = torch.zeros(len(texts) + 1, dtype=torch.long)
            offsets[1:] = torch.cumsum(torch.tensor([len(ids) for ids, _ in per_text]), 0)
            return {"ids": torch.cat([ids for ids, _ in per_text]),
                    "states": torch.cat([states for _, states in per_text]), "offsets": offsets}

        blob = keyed_cache(path, digest.hexdigest(), build, f"{kind} positions")
        return cls(blob["ids"], blob["states"], blob["offsets"])

    def padded(self, rows: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``[B, L]`` ids, ``[B, L, hidden]`` float32 states and ``[B, L]`` mask of the listed texts."""
        spans = [(int(self.offsets[r]), int(self.offsets[r + 1])) for r in rows]
        width = max(1, max(end - start for start, end in spans))
        index = torch.zeros(len(rows), width, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.bool)
        for i, (start, end) in enumerate(spans):
            index[i, :end - start] = torch.arange(start, end)
            mask[i, :end - start] = True
        return self.ids[index], self.states[index].float(), mask


class LMHeadChannel(torch.nn.Module):
    """The trainable view of a :class:`SparseEncoder` with a context map, over cached positions: the same
    ``final_norm(embed(x) + W rms(h))``, LM head, bias and activation, on any candidate vocabulary."""

    def __init__(self, encoder, inverse_temperature: float, bias: torch.Tensor | None = None):
        super().__init__()
        from csplade_pyserini.model.sparse import decoder_and_head

        decoder, head = decoder_and_head(encoder.model)
        self.embeddings = decoder.get_input_embeddings().weight.detach().float()
        self.head = head.detach().float()
        self.norm = copy.deepcopy(decoder.norm).float().requires_grad_(False)
        self.context = encoder.context
        self.bias = torch.nn.Parameter(torch.zeros(self.head.shape[0]) if bias is None else bias.float().clone())
        self.log_scale = torch.nn.Parameter(torch.tensor(float(inverse_temperature)).log())
        keep = torch.ones(self.head.shape[0])
        keep[encoder.excluded_ids(self.head.shape[0], "cpu")] = 0.0  # special tokens never become terms
        self.register_buffer("keep", keep, persistent=False)

    def pooled_logits(self, cache: PositionCache, rows: list[int], candidates: torch.Tensor | None = None,
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``[len(rows), candidates]`` LM-head logits max-pooled over each text's positions, before the bias."""
        ids, states, mask = (t.to(self.head.device) for t in cache.padded(rows))
        hidden = self.norm(self.context(self.embeddings[ids], states))
        head = self.head if candidates is None else self.head[candidates]
        logits = (hidden.to(dtype) @ head.t().to(dtype)).float()
        # floored at 0 before the bias, as the encoder's max-pool is (``model/pooling.py``)
        return logits.masked_fill(~mask.unsqueeze(-1), torch.finfo(torch.float32).min).amax(1).clamp_min(0)

    def weights(self, cache: PositionCache, rows: list[int], candidates: torch.Tensor | None = None,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
        bias = self.bias if candidates is None else self.bias[candidates]
        keep = self.keep if candidates is None else self.keep[candidates]
        return torch.log1p(torch.relu(self.pooled_logits(cache, rows, candidates, dtype) + bias)) * keep


@dataclass
class Corpus:
    docids: list[str]
    docs: PositionCache
    query_row: dict[str, int]
    queries: PositionCache


@dataclass
class Group:
    query: int  # row in the domain's query cache
    positives: list[int]  # document rows of the best judged grade
    judged: set[int]  # every document judged relevant: never a negative
    negatives: list[int]


def training_groups(domain: Domain, corpus: Corpus, run: dict) -> list[Group]:
    position = {d: i for i, d in enumerate(corpus.docids)}
    groups = []
    for q, judgements in domain.train.qrels.items():
        judged = {position[d]: r for d, r in judgements.items() if r > 0 and d in position}
        negatives = [position[d] for d, _, _ in run.get(q, []) if d not in judgements and d in position]
        if judged and negatives:
            best = max(judged.values())
            groups.append(Group(corpus.query_row[q], [d for d, r in judged.items() if r == best], set(judged),
                                negatives))
    return groups


@torch.no_grad()
def rank(channel: LMHeadChannel, corpus: Corpus, queries: list[str], query_top_k: int | None,
         depth: int = 100) -> dict[str, dict[str, float]]:
    """Every query against the whole corpus, exactly: the queries' terms are the only candidates a document
    needs."""
    rows = [corpus.query_row[q] for q in queries]
    query_weights = torch.cat([keep_top_k(channel.weights(corpus.queries, rows[i:i + 64]), query_top_k)
                               for i in range(0, len(rows), 64)])
    candidates = torch.nonzero(query_weights.sum(0) > 0).squeeze(1)
    documents = torch.cat([channel.weights(corpus.docs, list(range(i, min(i + 64, len(corpus.docids)))), candidates,
                                           torch.bfloat16) for i in range(0, len(corpus.docids), 64)])
    scores = query_weights[:, candidates] @ documents.t()
    top = scores.topk(min(depth, scores.shape[1]), dim=1)
    run = {q: {corpus.docids[j]: float(s) for s, j in zip(top.values[i].tolist(), top.indices[i].tolist()) if s > 0}
           for i, q in enumerate(queries)}
    return run


def validate(domains: list[Domain], corpora: dict[str, Corpus], channel: LMHeadChannel,
             query_top_k: int | None) -> dict[str, float]:
    return validate_domains(domains, lambda domain: rank(channel, corpora[domain.name],
                                                         list(domain.validation.queries), query_top_k))


@dataclass
class PureChannelArguments:
    """Every option of ``train pure`` (``HfArgumentParser``: each field a flag with its default and help)."""

    data: list[str] = field(metadata=option("BEIR folders with a train split (and a dev split, else --held-out train "
                                           "queries validate); repeat the flag or list them", action="extend"))
    output_dir: str = field(metadata=option("where the model (model/best), the log and the caches go"))
    backbone: str = field(default="smollm2", metadata=option("the frozen LM whose head and states are read"))
    context_layer: int = field(default=4, metadata=option("layers the backbone runs; the context map reads their "
                                                         "output"))
    max_doc_length: int = field(default=256, metadata=option("tokens per document"))
    max_query_length: int = field(default=64, metadata=option("tokens per query"))
    query_top_k: int = field(default=64, metadata=option("terms kept per query"))
    bias_target_df: float = field(default=0.05, metadata=option("the calibrated bias makes each term active in this "
                                                               "share of the sampled documents"))
    bias_sample: int = field(default=300, metadata=option("documents sampled to calibrate the bias"))
    steps: int = field(default=300, metadata=option("optimiser steps"))
    batch_size: int = field(default=16, metadata=option("training queries per step, all from one domain"))
    negatives: int = field(default=7, metadata=option("BM25 negatives per query, from the top --negative-depth"))
    negative_depth: int = field(default=50, metadata=option("BM25 ranking depth that negatives come from"))
    learning_rate: float = field(default=3e-4, metadata=option("AdamW learning rate of the context map (cosine)"))
    bias_learning_rate: float = field(default=1e-3, metadata=option("learning rate of the per-term bias"))
    scale: float = field(default=0.03, metadata=option("initial inverse temperature of InfoNCE (learned)"))
    flops: float = field(default=1e-5, metadata=option("weight of the documents' FLOPS regulariser"))
    flops_sample: int = field(default=1024, metadata=option("random vocabulary entries per step on which the "
                                                           "documents' FLOPS is estimated"))
    eval_steps: int = field(default=100, metadata=option("validate every this many steps (and at step 0 and the end)"))
    held_out: int = field(default=100, metadata=option("train queries held out to validate a domain without a dev "
                                                      "split"))
    seed: int = field(default=42, metadata=option("seeds the sampling, the batches and the held-out queries"))
    threads: int = field(default=0, metadata=option("torch threads (0: every core)"))
    device: str = field(default="cpu", metadata=option("where the caches are built and the channel trains (cuda on a "
                                                      "GPU machine; the caches stay in CPU memory)"))
    overwrite_output_dir: bool = field(default=False, metadata=option(
        "replace the model and log an earlier run left in --output-dir (its caches are always reused)"))


def parse_arguments(argv: list[str] | None) -> PureChannelArguments:
    return parse_options(PureChannelArguments, "python -m csplade_pyserini.train pure", __doc__, argv)


def base_card(args: PureChannelArguments):
    from csplade_pyserini.model.card import ModelCard
    from csplade_pyserini.model.context import CONTEXT_FILE
    from csplade_pyserini.model.logit_bias import BIAS_FILE

    return ModelCard(backbone=args.backbone, variant="causal", max_doc_length=args.max_doc_length,
                     max_query_length=args.max_query_length, query_top_k=args.query_top_k, doc_top_k=None,
                     context_layer=args.context_layer, context_head=CONTEXT_FILE, logit_bias=BIAS_FILE,
                     dtype="float32")


@torch.no_grad()
def calibrated_bias(channel: LMHeadChannel, corpora: dict[str, Corpus], sample: int, target_df: float,
                    rng: random.Random) -> torch.Tensor:
    """Each term active in ``target_df`` of ``sample`` documents drawn from every corpus in proportion."""
    from csplade_pyserini.train.model import calibrate_bias_to_df

    total = sum(len(c.docids) for c in corpora.values())
    pooled = []
    for corpus in corpora.values():
        rows = rng.sample(range(len(corpus.docids)), max(2, round(sample * len(corpus.docids) / total)))
        pooled.extend(channel.pooled_logits(corpus.docs, rows[i:i + 16], None, torch.bfloat16)
                      for i in range(0, len(rows), 16))
    return calibrate_bias_to_df(torch.cat(pooled), target_df)


def step_loss(channel: LMHeadChannel, corpus: Corpus, batch: list[Group], args: PureChannelArguments,
              rng: random.Random) -> dict[str, torch.Tensor]:
    """InfoNCE over the batch's documents (a document judged relevant to a query is never its negative) +
    ``flops`` x the documents' FLOPS estimated on a random slice of the vocabulary."""
    docs, targets = [], []
    for group in batch:
        targets.append(len(docs))
        docs.append(rng.choice(group.positives))
        docs.extend(rng.sample(group.negatives, min(args.negatives, len(group.negatives))))
    queries = keep_top_k(channel.weights(corpus.queries, [g.query for g in batch]), args.query_top_k)
    support = torch.nonzero(queries.detach().sum(0) > 0).squeeze(1)
    vocab = channel.head.shape[0]
    sampled = torch.tensor(rng.sample(range(vocab), min(args.flops_sample, vocab)), device=support.device)
    candidates = torch.unique(torch.cat([support, sampled]))
    documents = channel.weights(corpus.docs, docs, candidates)
    scores = queries[:, candidates] @ documents.t()
    mask = torch.zeros_like(scores, dtype=torch.bool)
    for i, group in enumerate(batch):
        for j, d in enumerate(docs):
            mask[i, j] = d in group.judged and j != targets[i]
    logits = (scores * channel.log_scale.exp()).masked_fill(mask, float("-inf"))
    contrastive = torch.nn.functional.cross_entropy(logits, torch.tensor(targets, device=logits.device))
    in_sample = torch.isin(candidates, sampled)
    flops = (documents[:, in_sample].mean(0) ** 2).sum() * vocab / max(1, int(in_sample.sum()))
    return {"loss": contrastive + args.flops * flops, "infonce": contrastive.detach(), "flops": flops.detach(),
            "scale": channel.log_scale.exp().detach(), "query_terms": (queries > 0).sum(1).float().mean().detach()}


def train(args: PureChannelArguments) -> Path:
    """Train, keep the best validated map and bias, write ``OUTPUT_DIR/model/best`` (card, map, bias) and the log."""
    from transformers import get_cosine_schedule_with_warmup

    from csplade_pyserini.datasets import beir_file, read_corpus, read_queries
    from csplade_pyserini.model.backbone import load_card_model, resolve_dtype
    from csplade_pyserini.model.context import ContextHead
    from csplade_pyserini.model.logit_bias import save_logit_bias
    from csplade_pyserini.model.sparse import SparseEncoder
    from csplade_pyserini.train.data import read_run
    from csplade_pyserini.train.mining import mine_negatives

    run = start_run(args)
    out, rng, begin, domains = run.out, run.rng, run.begin, run.domains
    names = [d.name for d in domains]
    card = base_card(args)
    # the caches are read in the precision inference runs in (bfloat16 where the CPU has it); training is float32
    model, tokenizer = load_card_model(card, None, device=args.device, dtype=resolve_dtype("auto", args.device))
    encoder = SparseEncoder(model, tokenizer, card, context=ContextHead(model.config.hidden_size))
    corpora, groups = {}, {}
    for domain in domains:
        documents = list(read_corpus(domain.folder))
        queries = read_queries(beir_file(domain.folder, "queries"))
        wanted = sorted(set(domain.train.queries) | set(domain.validation.queries))
        corpora[domain.name] = Corpus(
            [d.docid for d in documents],
            PositionCache.build(encoder, [d.contents for d in documents], "doc",
                                out / "cache" / f"{domain.name}.docs.L{args.context_layer}.pt", args.device),
            {q: i for i, q in enumerate(wanted)},
            PositionCache.build(encoder, [queries[q] for q in wanted], "query",
                                out / "cache" / f"{domain.name}.queries.L{args.context_layer}.pt", args.device))
        run_file = out / "negatives" / f"{domain.name}.bm25.trec"
        if not run_file.exists():
            run_file.parent.mkdir(parents=True, exist_ok=True)
            mine_negatives(domain.folder, run_file, hits=args.negative_depth)
        groups[domain.name] = training_groups(domain, corpora[domain.name], read_run(run_file))
        logger.info("%s: %d training queries with positives and negatives; validation: %s (%d queries)",
                    domain.name, len(groups[domain.name]), domain.validation_source, len(domain.validation.queries))
    cache_seconds = time.perf_counter() - begin
    channel = LMHeadChannel(encoder, args.scale).to(args.device)
    channel.bias.data = calibrated_bias(channel, corpora, args.bias_sample, args.bias_target_df, rng)
    optimizer = torch.optim.AdamW([
        {"params": list(encoder.context.parameters()), "lr": args.learning_rate},
        {"params": [channel.bias], "lr": args.bias_learning_rate},
        {"params": [channel.log_scale], "lr": 1e-2}], weight_decay=0.0)
    schedule = get_cosine_schedule_with_warmup(optimizer, args.steps // 10, args.steps)
    best, best_state, log = train_steps(
        run, args, groups, lambda domain, batch: step_loss(channel, corpora[domain.name], batch, args, rng),
        optimizer, schedule, lambda: validate(domains, corpora, channel, args.query_top_k),
        lambda: copy.deepcopy({"context": encoder.context.state_dict(), "bias": channel.bias.detach().clone()}),
        "pure", "untrained map, calibrated bias")
    encoder.context.load_state_dict(best_state["context"])
    seconds = time.perf_counter() - begin
    notes = {
        "what": f"{args.backbone}, frozen, run to layer {args.context_layer}. Pure CSPLADE (LM-head channel only): the "
                "backbone's own LM head read on final_norm(embed(x) + W rms(h)), h the states after "
                f"{args.context_layer} layers and W a trained {model.config.hidden_size}x{model.config.hidden_size} "
                "map; max-pooled log(1 + relu(logits + bias)) with a trained per-term bias; queries by the same model.",
        "trained_on": names,
        "training": {"data": {d.name: f"{len(groups[d.name])} train queries" for d in domains}, "steps": args.steps,
                     "batch_size": args.batch_size, "negatives": f"{args.negatives} of BM25's top {args.negative_depth}"
                     ", judged documents left out", "objective": f"InfoNCE over the batch's documents + {args.flops} "
                     "x documents' FLOPS", "learning_rate": args.learning_rate,
                     "bias": f"calibrated to {args.bias_target_df} document frequency, then trained at "
                     f"{args.bias_learning_rate}", "seed": args.seed, "seconds": round(seconds, 1),
                     "cache_seconds": round(cache_seconds, 1)},
        "validation": validation_notes(domains, best, log),
        "made_by": "python -m csplade_pyserini.train pure " + " ".join(f"--data {d.folder}" for d in domains),
    }
    final = card.replace(name=f"{args.backbone}-pure-context{args.context_layer}", dtype="auto", notes=notes)
    def write_files(folder: Path) -> None:
        encoder.context.save(folder)
        save_logit_bias(best_state["bias"], folder)

    target = write_model(out, final, write_files, log)
    logger.info("kept step %d (validation nDCG@10 %s) in %s; %.0f s", best["step"], best, target, seconds)
    return target


def main(argv: list[str] | None = None) -> int:
    train(parse_arguments(argv))
    return 0
