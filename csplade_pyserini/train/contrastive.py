"""Phase 2 (and the CPU recipe's only phase): put the data, the model and the Trainer together.

``run_contrastive`` reads the run's data (:func:`~.data.load_training_data`: examples, filtered negatives,
pseudo-queries, held-out validation queries), builds the model with its loss
(:meth:`~.model.SparseBiEncoder.build`, the objective from :func:`~.losses.build_loss`), caches the frozen
bottom's activations when layers are frozen (:mod:`.cache`), calibrates the logit bias, and trains with
:class:`~.trainer.SparseTrainer`.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Mapping

import torch

from csplade_pyserini.train.checkpoint import BEST_DIR, FINAL_DIR, export_model
from csplade_pyserini.train.collator import (
    CacheSource,
    ContrastiveCollator,
    QueryBatchSampler,
    TextSource,
)
from csplade_pyserini.train.data import PSEUDO_PREFIX, load_training_data

logger = logging.getLogger(__name__)


def run_contrastive(model_args, data_args, training_args):
    """Train; returns the trainer (``trainer.state`` holds the log) after exporting ``final``."""
    from transformers import set_seed

    from csplade_pyserini.train.model import SparseBiEncoder
    from csplade_pyserini.train.trainer import SparseTrainer, claim_output_dir, resolve_resume
    from csplade_pyserini.train.validation import RetrievalValidation

    resume = resolve_resume(training_args)
    claim_output_dir(training_args.output_dir, training_args.overwrite_output_dir, resume)
    if model_args.threads:
        torch.set_num_threads(model_args.threads)
    set_seed(training_args.seed)
    data = load_training_data(data_args, training_args.seed, training_args.objective)
    bi_encoder = SparseBiEncoder.build(model_args, training_args)
    queries, pseudo, docs = feature_sources(bi_encoder, data, model_args, training_args)
    if model_args.bias_target_df is not None and bi_encoder.card.expansion and not bi_encoder.card.is_dense:
        calibrate_logit_bias(bi_encoder, docs, sorted(data.docs), model_args, training_args)
    collator = ContrastiveCollator(data.examples, queries, docs, data_args.negatives,
                                   teacher=data.teacher if training_args.objective != "cl" else None,
                                   positives=data.positives, pseudo_queries=pseudo, seed=training_args.seed)
    sampler = QueryBatchSampler(data.examples, training_args.per_device_train_batch_size, training_args.seed,
                                data_args.pseudo_query_share if pseudo is not None else 0.0)
    validation = None
    if data.validation:
        validation = RetrievalValidation(data.validation, sorted(data.docs), data.validation_qrels, queries, docs)
    trainer = SparseTrainer(bi_encoder, training_args, collator, sampler, validation)
    torch.manual_seed(training_args.seed + training_args.process_index)  # dropout: one stream per process
    if validation is not None and not resume:
        trainer.args.eval_on_start = True  # the starting point, step 0
    trainer.train(resume_from_checkpoint=resume)
    final = Path(training_args.output_dir) / FINAL_DIR
    if training_args.should_save:
        export_model(final, bi_encoder.encoder, notes=training_notes(trainer, model_args, data_args, training_args))
    if validation is not None and trainer.state.global_step % max(1, training_args.eval_steps or 1) != 0:
        trainer.evaluate()
    best = Path(training_args.output_dir) / BEST_DIR
    if training_args.should_save and best.exists():
        annotate_best(best, training_notes(trainer, model_args, data_args, training_args))
    logger.info("done: %d steps; final model in %s%s", trainer.state.global_step, final,
                f", best validated model in {best}" if best.exists() else "")
    return trainer


def feature_sources(bi_encoder, data, model_args, training_args):
    """``(queries, pseudo-queries or None, documents)``: texts tokenised on the fly, or, with frozen layers,
    the frozen bottom's activations cached once on disk (one process builds, the others read)."""
    encoder = bi_encoder.encoder
    frozen, total = bi_encoder.frozen_layers, bi_encoder.num_layers
    real_queries = {q: t for q, t in data.queries.items() if not q.startswith(PSEUDO_PREFIX)}
    pseudo_queries = {q: t for q, t in data.queries.items() if q.startswith(PSEUDO_PREFIX)}
    if frozen is None:
        pseudo = TextSource(encoder, pseudo_queries, "query") if pseudo_queries else None
        return TextSource(encoder, real_queries, "query"), pseudo, TextSource(encoder, data.docs, "doc")
    from csplade_pyserini.train.cache import ActivationCache

    cache_dir = Path(model_args.cache_dir or Path(training_args.output_dir) / "cache")
    all_frozen = frozen == total
    pooled = all_frozen and encoder.card.expansion and not encoder.card.is_dense
    lexical_layer = encoder.card.lexical_layer if encoder.lexical is not None else None
    layer = lexical_layer if all_frozen and not encoder.card.is_dense else frozen
    pad = encoder.tokenizer.pad_token_id or 0
    device = str(training_args.device)

    def build(texts: Mapping[str, str], kind: str, name: str):
        ids = list(texts)
        folder = cache_dir / f"{encoder.card.variant}-{name}"  # one cache per variant (echo doubles the input)
        cache = ActivationCache.build(encoder, [texts[i] for i in ids], kind, folder, layer, pooled, device,
                                      desc=f"cache {name}")
        return CacheSource(cache, {i: n for n, i in enumerate(ids)}, pad)

    was_training = encoder.model.training
    encoder.model.eval()
    try:
        with training_args.main_process_first(desc="activation cache"):
            queries = build(real_queries, "query", "queries")
            pseudo = build(pseudo_queries, "query", "pseudo-queries") if pseudo_queries else None
            docs = build(data.docs, "doc", "docs")
    finally:
        encoder.model.train(was_training)
    return queries, pseudo, docs


def calibrate_logit_bias(bi_encoder, doc_source, doc_ids: list[str], model_args, training_args) -> None:
    """Give the encoder a per-term logit bias that makes each term active in ``--bias-target-df`` of a seeded
    sample of the documents (:func:`~.model.calibrate_bias_to_df`), trainable unless ``--no-train-bias``."""
    from csplade_pyserini.train.model import calibrate_bias_to_df

    encoder, device = bi_encoder.encoder, str(training_args.device)
    sample = random.Random(f"bias:{training_args.seed}").sample(doc_ids, min(model_args.bias_sample, len(doc_ids)))
    pooled = _pooled_logits(encoder, doc_source, sample, bi_encoder.start_layer, device)
    bias = calibrate_bias_to_df(pooled, model_args.bias_target_df, encoder.logit_scale)
    encoder.logit_bias = torch.nn.Parameter(bias.to(device), requires_grad=model_args.train_bias)
    logger.info("logit bias calibrated on %d documents: each term active in %.2f%% of them", len(sample),
                100 * model_args.bias_target_df)


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
