"""Phase 1, adaptation on corpus text, on transformers' ``Trainer``.

* ``--adapt-objective clm`` (CSPLADE): ``L = L_CLM + lambda * L_ReLU`` on packed corpus text; L_ReLU is
  the next-token cross-entropy on ``log(1 + relu(logits))``, the per-position SPLADE weights, which
  keeps the ReLU alive when the contrastive phase starts.
* ``--adapt-objective mntp`` (Lion / LLM2Vec): masked next-token prediction with bidirectional
  attention: position ``i - 1`` predicts the masked token ``i``.

The result is a checkpoint (card + adapter) that ``contrastive --init-checkpoint`` continues.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch
from transformers import Trainer

from csplade_pyserini.errors import InputError
from csplade_pyserini.train.losses import IGNORE_INDEX, adaptation_loss, shift_labels

logger = logging.getLogger(__name__)


def mask_token_id(tokenizer) -> int:
    """The tokenizer's mask token; else ``_`` as LLM2Vec does for Llama (no mask token), else UNK / pad."""
    if getattr(tokenizer, "mask_token_id", None) is not None:
        return tokenizer.mask_token_id
    underscore = tokenizer("_", add_special_tokens=False)["input_ids"]
    if len(underscore) == 1:
        return underscore[0]
    return tokenizer.unk_token_id if tokenizer.unk_token_id is not None else tokenizer.pad_token_id


def mask_block(input_ids: torch.Tensor, fraction: float, mask_id: int, seed: int):
    """Masked inputs and labels aligned with the logits: position ``i - 1`` predicts the original token
    ``i`` for every masked ``i >= 1``; every row masks at least one token. Seeded by the block's
    content and ``seed``, so the mask of a block is the same on resume."""
    key = hashlib.sha256(f"{seed}:".encode() + input_ids.numpy().tobytes()).digest()[:8]
    generator = torch.Generator().manual_seed(int.from_bytes(key, "little") & ((1 << 63) - 1))
    batch, length = input_ids.shape
    chosen = torch.rand(batch, length, generator=generator) < fraction
    chosen[:, 0] = False
    for row in range(batch):
        if not bool(chosen[row].any()):
            chosen[row, 1 + int(torch.randint(length - 1, (1,), generator=generator))] = True
    masked = torch.where(chosen, torch.full_like(input_ids, mask_id), input_ids)
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    labels[:, :-1] = torch.where(chosen[:, 1:], input_ids[:, 1:], torch.full_like(input_ids[:, 1:], IGNORE_INDEX))
    return masked, labels


class _Blocks(torch.utils.data.Dataset):
    def __init__(self, blocks: torch.Tensor):
        self.blocks = blocks

    def __len__(self) -> int:
        return self.blocks.shape[0]

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.blocks[index]


class AdaptationTrainer(Trainer):
    """The causal LM (LoRA) trained on blocks; the loss is L_CLM + lambda L_ReLU, or MNTP's."""

    def __init__(self, *args, mntp: bool = False, mask_id: int | None = None, **kwargs):
        self.mntp, self.mask_id = mntp, mask_id
        super().__init__(*args, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        input_ids = inputs["input_ids"]
        if self.mntp:
            masked, labels = mask_block(input_ids.cpu(), self.args.mask_fraction, self.mask_id, self.args.seed)
            logits = model(input_ids=masked.to(input_ids.device), use_cache=False).logits
            labels = labels.to(input_ids.device)
        else:
            logits = model(input_ids=input_ids, use_cache=False).logits
            labels = shift_labels(input_ids)
        result = adaptation_loss(logits, labels, relu_weight=self.args.relu_weight)
        return (result.total, logits) if return_outputs else result.total


def read_blocks(data: str, tokenizer, seq_len: int, max_documents: int | None) -> torch.Tensor:
    from csplade_pyserini.datasets import read_corpus
    from csplade_pyserini.train.packing import pack_sequences

    texts = []
    for doc in read_corpus(data):
        texts.append(doc.contents)
        if max_documents and len(texts) >= max_documents:
            break
    eos = tokenizer.eos_token_id
    if eos is None:
        raise InputError("the tokenizer has no EOS token to separate packed documents", field="backbone")
    token_lists: list[list[int]] = []
    for start in range(0, len(texts), 1000):
        token_lists.extend(tokenizer(texts[start:start + 1000], add_special_tokens=False)["input_ids"])
    packed = pack_sequences(token_lists, seq_len, eos)
    if len(packed) == 0:
        raise InputError(f"the corpus ({sum(map(len, token_lists))} tokens) does not fill one sequence of "
                         f"{seq_len} tokens; lower --seq-len", field="data")
    logger.info("packed %d documents into %d sequences of %d tokens", len(texts), len(packed), seq_len)
    return packed.input_ids


def run_adapt(model_args, data_args, training_args):
    from transformers import set_seed

    from csplade_pyserini.model.sparse import set_bidirectional
    from csplade_pyserini.train.checkpoint import FINAL_DIR, write_model_folder
    from csplade_pyserini.train.model import load_backbone, make_trainable

    from csplade_pyserini.train.trainer import claim_output_dir, resolve_resume

    resume = resolve_resume(training_args)
    claim_output_dir(training_args.output_dir, training_args.overwrite_output_dir, resume)
    if model_args.threads:
        torch.set_num_threads(model_args.threads)
    set_seed(training_args.seed)
    mntp = training_args.adapt_objective == "mntp"
    if mntp and model_args.variant != "bidirectional":
        raise InputError("masked next-token prediction trains bidirectional attention: use --variant bidirectional "
                         "(or --adapt-objective clm)", field="variant")
    model, tokenizer, _, _, _ = load_backbone(model_args, str(training_args.device))
    model = make_trainable(model, model_args, None)
    set_bidirectional(model, mntp)
    blocks = read_blocks(data_args.data, tokenizer, training_args.seq_len, training_args.max_documents)
    training_args.remove_unused_columns = False
    trainer = AdaptationTrainer(model=model, args=training_args, train_dataset=_Blocks(blocks),
                                data_collator=lambda rows: {"input_ids": torch.stack(rows)}, mntp=mntp,
                                mask_id=mask_token_id(tokenizer) if mntp else None)
    trainer.train(resume_from_checkpoint=resume)
    if training_args.should_save:
        from csplade_pyserini.atomic import atomic_dir
        from csplade_pyserini.train.checkpoint import portable_backbone

        final = Path(training_args.output_dir) / FINAL_DIR
        card = model_args.card(notes={"training": {"phase": "adapt", "objective": training_args.adapt_objective,
                                                   "steps": trainer.state.global_step}})
        with atomic_dir(final) as tmp:
            write_model_folder(Path(tmp), model, tokenizer, card.replace(backbone=portable_backbone(card.backbone, final)))
        logger.info("adapted model in %s (continue it with contrastive --init-checkpoint %s)", final, final)
    return trainer
