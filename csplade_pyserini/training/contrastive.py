"""Phase 2 (and the CPU recipe's only phase): put the data, the model, the loss and the Trainer together.

``run_contrastive`` reads the training examples (:mod:`.data`), holds out the validation queries,
loads the model (:mod:`.model`), builds the activation caches when layers are frozen (:mod:`.cache`),
calibrates the logit bias, and trains with :class:`~.trainer.SparseTrainer`. The objective of the run
is built in one place, :func:`build_loss`.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch

from csplade_pyserini.errors import InputError
from csplade_pyserini.training.checkpoint import BEST_DIR, FINAL_DIR, export_model
from csplade_pyserini.training.collator import (
    PSEUDO_PREFIX,
    CacheSource,
    ContrastiveCollator,
    QueryBatchSampler,
    TextSource,
)
from csplade_pyserini.training.data import TrainingExample
from csplade_pyserini.training.losses import (
    CombinedLoss,
    InfoNCELoss,
    KLDistillationLoss,
    MarginMSELoss,
    ScoreScale,
    SpladeLoss,
)

logger = logging.getLogger(__name__)


def build_loss(args, dense: bool = False) -> SpladeLoss:
    """The run's objective from ``--objective``, in one line per case. A dense model's scores are cosine-like
    (at most 1), divided by the fixed ``--dense-temperature`` as Lion-DS does; it has no FLOPS terms."""
    if dense:  # SpladeLoss refuses FLOPS weights for a dense model
        scale = ScoreScale(1.0 / args.dense_temperature, learnable=False, max_scale=1.0 / args.dense_temperature)
    else:
        scale = ScoreScale(args.score_scale, learnable=args.learn_score_scale)
    kd = MarginMSELoss() if args.kd_loss == "margin-mse" else KLDistillationLoss(scale, args.teacher_temperature)
    main = {"cl": InfoNCELoss(scale), "kd": kd,
            "clkd": CombinedLoss({"cl": InfoNCELoss(scale), "kd": kd}, {"cl": 1 - args.kd_weight, "kd": args.kd_weight})
            }[args.objective]
    return SpladeLoss(main, args.flops_query_weight, args.flops_doc_weight, args.flops_ramp_fraction, sparse=not dense)


@dataclass
class TrainingData:
    examples: list[TrainingExample]
    queries: dict[str, str]  # every query text by id (training, pseudo and validation)
    docs: dict[str, str]  # every document text by id (the whole corpus for a BEIR folder)
    teacher: dict[str, dict[str, float]] | None
    positives: dict[str, set[str]]  # every judged-relevant document of a query (false-negative masking)
    validation: list[str]  # held-out query ids
    validation_qrels: dict[str, dict[str, int]]


def load_training_data(data_args, seed: int, objective: str) -> TrainingData:
    """Examples with their negatives filtered, pseudo-queries, and the held-out validation queries."""
    from csplade_pyserini.datasets import beir_file, load_qrels, read_corpus
    from csplade_pyserini.training.data import load_examples, read_teacher_scores
    from csplade_pyserini.training.validation import holdout_queries

    examples = load_examples(data_args)
    folder = Path(data_args.data) if data_args.data and Path(data_args.data).is_dir() else None
    docs = {e.docid: e.text for ex in examples for e in [*ex.positives, *ex.negatives]}
    positives: dict[str, set[str]] = {}
    for ex in examples:
        positives.setdefault(ex.query_id, set()).update(p.docid for p in ex.positives)
    corpus = None
    if folder is not None:
        corpus = list(read_corpus(folder))
        docs = {d.docid: d.contents for d in corpus}
    validation: list[str] = []
    validation_qrels: dict[str, dict[str, int]] = {}
    if data_args.validation_queries:
        source = Path(data_args.validation_data) if data_args.validation_data else folder
        if source is None:
            raise InputError("validation needs a BEIR folder (--validation-data, or --data as a folder); "
                             "or pass --validation-queries 0", field="validation_data")
        validation_qrels = load_qrels(beir_file(source, "qrels", data_args.validation_split))
        validation = holdout_queries(validation_qrels, data_args.validation_queries, seed)
        if source == folder:
            held = set(validation)
            before = len(examples)
            examples = [e for e in examples if e.query_id not in held]
            logger.info("%d validation queries held out of training (%d training queries left)",
                        before - len(examples), len(examples))
    teacher = None
    if data_args.teacher_scores:
        teacher = read_teacher_scores(data_args.teacher_scores)
    elif objective != "cl":
        raise InputError(f"objective {objective} needs teacher scores (--teacher-scores, from `train score-teacher`)",
                         field="teacher_scores")
    examples = filter_negatives(examples, data_args, teacher, required=objective != "cl")
    queries = {e.query_id: e.query for e in examples}
    if validation:
        from csplade_pyserini.datasets import read_queries

        source = Path(data_args.validation_data) if data_args.validation_data else folder
        texts = read_queries(beir_file(source, "queries"))
        queries.update({q: texts[q] for q in validation})
    if data_args.pseudo_queries:
        if corpus is None:
            raise InputError("pseudo-queries need a BEIR folder as --data", field="pseudo_queries")
        pseudo = pseudo_query_examples(corpus, data_args, seed)
        examples.extend(pseudo)
        queries.update({e.query_id: e.query for e in pseudo})
        for e in pseudo:
            positives[e.query_id] = {p.docid for p in e.positives}
    if not examples:
        raise InputError("no usable training example", field="data")
    return TrainingData(examples, queries, docs, teacher, positives, validation, validation_qrels)


def filter_negatives(examples: list[TrainingExample], data_args, teacher, required: bool) -> list[TrainingExample]:
    """Drop likely false negatives: the top ``--skip-top-negatives`` candidates, and (with a teacher and
    ``--teacher-margin``) every candidate the teacher scores above ``positive - margin``. With a teacher
    required (kd, clkd), candidates without a teacher score are dropped too."""
    kept, dropped, skipped_queries = [], 0, 0
    for e in examples:
        negatives = e.negatives[data_args.skip_top_negatives:data_args.skip_top_negatives + data_args.negative_depth]
        positives = e.positives
        if teacher is not None:
            row = teacher.get(e.query_id, {})
            if required:
                positives = [p for p in positives if p.docid in row]
                negatives = [n for n in negatives if n.docid in row]
            if data_args.teacher_margin is not None and positives:
                floor = min(row.get(p.docid, float("inf")) for p in positives) - data_args.teacher_margin
                before = len(negatives)
                negatives = [n for n in negatives if row.get(n.docid, float("-inf")) < floor]
                dropped += before - len(negatives)
        if not positives or (data_args.negatives and not negatives):
            skipped_queries += 1
            continue
        kept.append(TrainingExample(e.query_id, e.query, positives, negatives))
    if dropped or skipped_queries:
        logger.info("negatives: %d dropped by the teacher margin; %d queries without positives or negatives skipped",
                    dropped, skipped_queries)
    return kept


def pseudo_query_examples(corpus, data_args, seed: int) -> list[TrainingExample]:
    """Title -> text pseudo-queries: each titled document's title is a query whose positive is the
    document; negatives are the documents sharing the most title words (a cheap lexical ranking)."""
    from collections import Counter, defaultdict

    from csplade_pyserini.training.data import Passage

    titled = [d for d in corpus if d.title and d.text]
    words = {d.docid: {w for w in d.title.lower().split() if len(w) > 3} for d in titled}
    frequency = Counter(w for ws in words.values() for w in ws)
    postings: dict[str, list[str]] = defaultdict(list)
    for d in titled:
        for w in words[d.docid]:
            if frequency[w] <= 200:
                postings[w].append(d.docid)
    contents = {d.docid: d.contents for d in corpus}
    rng = random.Random(f"pseudo:{seed}")
    out = []
    for d in titled:
        shared = Counter(o for w in words[d.docid] for o in postings[w] if o != d.docid)
        ranked = [o for o, _ in shared.most_common(data_args.negative_depth)]
        if len(ranked) < data_args.negatives:
            ranked += rng.sample(list(contents), data_args.negatives)
        negatives = [Passage(o, contents[o]) for o in ranked if o != d.docid]
        out.append(TrainingExample(f"{PSEUDO_PREFIX}{d.docid}", d.title, [Passage(d.docid, d.contents)], negatives))
    logger.info("%d title -> text pseudo-queries", len(out))
    return out


def run_contrastive(model_args, data_args, training_args):
    """Train; returns the trainer (``trainer.state`` holds the log) after exporting ``final``."""
    from transformers import set_seed

    from csplade_pyserini.model.sparse import num_layers
    from csplade_pyserini.training.model import (
        SparseBiEncoder,
        build_encoder,
        calibrate_bias_to_df,
        frozen_layer_count,
        load_backbone,
        make_trainable,
    )
    from csplade_pyserini.training.trainer import SparseTrainer, claim_output_dir, resolve_resume
    from csplade_pyserini.training.validation import RetrievalValidation

    resume = resolve_resume(training_args)
    claim_output_dir(training_args.output_dir, training_args.overwrite_output_dir, resume)
    if model_args.threads:
        torch.set_num_threads(model_args.threads)
    set_seed(training_args.seed)
    data = load_training_data(data_args, training_args.seed, training_args.objective)
    device = str(training_args.device)
    model, tokenizer, init_card, init_dir, base_adapter = load_backbone(model_args, device)
    total = num_layers(model)
    frozen = frozen_layer_count(model_args.frozen_layers, total)
    model = make_trainable(model, model_args, frozen)
    encoder = build_encoder(model_args, model, tokenizer, init_card, init_dir, base_adapter=base_adapter)
    lexical_layer = encoder.card.lexical_layer if encoder.lexical is not None else None
    if frozen is not None and frozen < total and lexical_layer is not None and lexical_layer < frozen:
        raise InputError(f"the lexical head reads layer {lexical_layer}, inside the {frozen} frozen layers; freeze "
                         f"at most {lexical_layer} layers (or 'all')", field="frozen_layers")

    # --- feature sources: cached (frozen bottom) or tokenised on the fly ---------------------------------
    pad = tokenizer.pad_token_id or 0
    real_queries = {q: t for q, t in data.queries.items() if not q.startswith(PSEUDO_PREFIX)}
    pseudo_queries = {q: t for q, t in data.queries.items() if q.startswith(PSEUDO_PREFIX)}
    if frozen is None:
        query_source, doc_source = TextSource(encoder, real_queries, "query"), TextSource(encoder, data.docs, "doc")
        pseudo_source = TextSource(encoder, pseudo_queries, "query") if pseudo_queries else None
        start_layer = 0
    else:
        from csplade_pyserini.training.cache import ActivationCache

        cache_dir = Path(model_args.cache_dir or Path(training_args.output_dir) / "cache")
        all_frozen = frozen == total
        pooled = all_frozen and encoder.card.expansion and not encoder.card.is_dense
        layer = (lexical_layer if all_frozen and not encoder.card.is_dense else frozen)
        was_training = model.training
        model.eval()

        def build(texts: Mapping[str, str], kind: str, name: str):
            ids = list(texts)
            folder = cache_dir / f"{encoder.card.variant}-{name}"  # one cache per variant (echo doubles the input)
            cache = ActivationCache.build(encoder, [texts[i] for i in ids], kind, folder, layer, pooled,
                                          device, desc=f"cache {name}")
            return CacheSource(cache, {i: n for n, i in enumerate(ids)}, pad)

        with training_args.main_process_first(desc="activation cache"):  # one process builds, the others read
            query_source = build(real_queries, "query", "queries")
            pseudo_source = build(pseudo_queries, "query", "pseudo-queries") if pseudo_queries else None
            doc_source = build(data.docs, "doc", "docs")
        model.train(was_training)
        start_layer = frozen

    # --- the logit bias, calibrated to a document frequency on a seeded sample -------------------------
    if model_args.bias_target_df is not None and encoder.card.expansion and not encoder.card.is_dense:
        sample = random.Random(f"bias:{training_args.seed}").sample(sorted(data.docs), min(model_args.bias_sample,
                                                                                            len(data.docs)))
        pooled_sample = _pooled_logits(encoder, doc_source, sample, start_layer, device)
        bias = calibrate_bias_to_df(pooled_sample, model_args.bias_target_df, encoder.logit_scale)
        encoder.logit_bias = torch.nn.Parameter(bias.to(device), requires_grad=model_args.train_bias)
        logger.info("logit bias calibrated on %d documents: each term active in %.2f%% of them", len(sample),
                    100 * model_args.bias_target_df)

    slack = training_args.train_top_k_slack
    loss = build_loss(training_args, dense=encoder.card.is_dense)
    bi_encoder = SparseBiEncoder(encoder, start_layer=start_layer, top_k_slack=slack, loss=loss,
                                 use_pooled=frozen == total and not encoder.card.is_dense)
    collator = ContrastiveCollator(data.examples, query_source, doc_source, data_args.negatives,
                                   teacher=data.teacher if training_args.objective != "cl" else None,
                                   positives=data.positives, pseudo_queries=pseudo_source, seed=training_args.seed)
    sampler = QueryBatchSampler(data.examples, training_args.per_device_train_batch_size, training_args.seed,
                                data_args.pseudo_query_share if pseudo_source is not None else 0.0)
    validation = None
    if data.validation:
        validation = RetrievalValidation(data.validation, sorted(data.docs), data.validation_qrels, query_source,
                                         doc_source)
    trainer = SparseTrainer(bi_encoder, training_args, loss, collator, sampler, validation)
    torch.manual_seed(training_args.seed + training_args.process_index)  # dropout: one stream per process
    if validation is not None and not resume:
        trainer.args.eval_on_start = True  # the starting point, step 0
    trainer.train(resume_from_checkpoint=resume)
    final = Path(training_args.output_dir) / FINAL_DIR
    if training_args.should_save:
        export_model(final, encoder, notes=training_notes(trainer, model_args, data_args, training_args))
    if validation is not None and trainer.state.global_step % max(1, training_args.eval_steps or 1) != 0:
        trainer.evaluate()
    best = Path(training_args.output_dir) / BEST_DIR
    if training_args.should_save and best.exists():
        annotate_best(best, training_notes(trainer, model_args, data_args, training_args))
    logger.info("done: %d steps; final model in %s%s", trainer.state.global_step, final,
                f", best validated model in {best}" if best.exists() else "")
    return trainer


@torch.no_grad()
def _pooled_logits(encoder, source, ids, start_layer: int, device) -> torch.Tensor:
    """Max-pooled LM-head logits of documents ``ids`` (from the cache's pooled rows when it has them)."""
    from csplade_pyserini.model.pooling import max_pool_lm_head
    from csplade_pyserini.model.sparse import decoder_and_head

    rows = []
    was_training = encoder.model.training
    encoder.model.eval()
    try:
        for start in range(0, len(ids), 32):
            features = {k: v.to(device) for k, v in source.features(ids[start:start + 32]).items()}
            if "pooled" in features:
                rows.append(features["pooled"].float())
                continue
            final, _ = encoder.encoder_states(features["input_ids"], features["attention_mask"],
                                              start_layer if "states" in features else 0, features.get("states"))
            _, head = decoder_and_head(encoder.model)
            rows.append(max_pool_lm_head(final, head, features["pool_mask"], encoder.chunk_elements).float())
    finally:
        encoder.model.train(was_training)
    return torch.cat(rows).cpu()


def annotate_best(best: Path, notes: dict) -> None:
    """Give the best validated model the whole run's training notes (it was exported mid-run, when they
    were not known yet), keeping its own ``validation`` entry: the step it was kept at."""
    from csplade_pyserini.model.card import ModelCard

    card = ModelCard.load(best)
    card.replace(notes={**card.notes, **notes, "validation": card.notes.get("validation")}).save(best)


def training_notes(trainer, model_args, data_args, training_args) -> dict:
    """What the card's ``notes`` say about how this model was trained."""
    history = trainer.state.log_history
    evals = [(h["step"], round(h["eval_ndcg@10"], 4)) for h in history if "eval_ndcg@10" in h]
    return {"training": {
        "objective": training_args.objective, "data": data_args.data, "negatives": data_args.negatives,
        "pseudo_queries": data_args.pseudo_queries, "teacher_scores": data_args.teacher_scores,
        "frozen_layers": model_args.frozen_layers, "lexical_layer": model_args.lexical_layer,
        "bias_target_df": model_args.bias_target_df, "steps": trainer.state.global_step,
        "batch_size": training_args.per_device_train_batch_size, "learning_rate": training_args.learning_rate,
        "seed": training_args.seed, "validation_ndcg@10": evals}}
