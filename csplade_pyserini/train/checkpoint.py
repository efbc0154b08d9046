"""Checkpoints: portable model folders, exact resume, and export of a merged standalone model.

A checkpoint folder is a model first and a training snapshot second::

    checkpoint-500/
      csplade_card.json        the model card; ``adapter`` is "adapter" (relative to this folder)
      adapter/                 the peft LoRA adapter (save_pretrained)          -- LoRA training
      model/                   the whole fine-tuned LM + tokenizer; card backbone "model"  -- --full
      trainer_state.pt         optimizer, scheduler, RNG states, step (only for resuming)

so ``csplade:checkpoint-500`` works wherever Pyserini takes an ``--encoder``. Nothing inside holds an
absolute path: the card's backbone is the reference the user gave (``smollm2``, a hub id, or a local
folder; a relative local folder is rewritten relative to the card), and the adapter's own
``base_model_name_or_path`` and README name that same reference instead of the folder it was loaded
from (which, for the default backbone, is a cache folder on this machine only).

Exact resume: the trainer state holds the optimizer and scheduler states, the Python / NumPy / torch
(CPU and CUDA) RNG states and the step. The data position is a pure function of the step and the
seed (see ``loop.py``), so a resumed run replays exactly the batches and dropout masks of an
uninterrupted one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from csplade_pyserini.errors import InputError
from csplade_pyserini.model.card import CARD_NAME, ModelCard

logger = logging.getLogger(__name__)

ADAPTER_DIR = "adapter"
MODEL_DIR = "model"
STATE_NAME = "trainer_state.pt"
CHECKPOINT_PREFIX = "checkpoint-"
FINAL_DIR = "final"
BEST_DIR = "best"  # the checkpoint with the best in-training evaluation (--save-best)
_SPECIAL_BACKBONES = ("smollm2", "default")
_CHECKPOINT_RE = re.compile(rf"^{CHECKPOINT_PREFIX}(\d+)$")


# --- portable references ---------------------------------------------------------------------------
def portable_backbone(ref: str, card_dir: str | Path) -> str:
    """The backbone reference to write into a card saved in ``card_dir``.

    Names (``smollm2``, hub ids) and absolute paths are kept as given; a RELATIVE local path (relative
    to the working directory, as the user typed it) is rewritten relative to ``card_dir``, because a
    card's paths are resolved against the card's folder.
    """
    if ref in _SPECIAL_BACKBONES:
        return ref
    path = Path(ref).expanduser()
    if path.is_absolute() or not path.exists():
        return ref
    return os.path.relpath(os.path.abspath(path), os.path.abspath(card_dir))


@contextlib.contextmanager
def _named_as(model, ref: str):
    """Temporarily make the model (and its peft config) name ``ref`` as its origin while saving, so
    that ``adapter_config.json`` and the README do not record a local cache folder."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = base.config
    old_name = getattr(config, "_name_or_path", None)
    peft_configs = getattr(model, "peft_config", {}) or {}
    old_peft = {k: c.base_model_name_or_path for k, c in peft_configs.items()}
    try:
        config._name_or_path = ref
        for c in peft_configs.values():
            c.base_model_name_or_path = ref
        yield
    finally:
        config._name_or_path = old_name
        for k, c in peft_configs.items():
            c.base_model_name_or_path = old_peft[k]


def is_peft_model(model) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


# --- saving ----------------------------------------------------------------------------------------
def export_model(folder: Path, encoder, notes: dict[str, Any] | None = None, atomic: bool = True) -> ModelCard:
    """Write the model an encoder being trained stands for: card, adapter (or whole model), logit bias,
    lexical head and channel weight, so that ``csplade:FOLDER`` loads exactly this model.

    A frozen backbone that carries a merged ``--init-checkpoint`` adapter (``encoder.base_adapter``) is
    written as that adapter; with a new LoRA on top of it the merged model is written whole."""
    from csplade_pyserini.atomic import atomic_dir

    folder = Path(folder)
    if atomic:
        with atomic_dir(folder) as tmp:
            card = export_model(Path(tmp), encoder, notes, atomic=False)
        return card
    folder.mkdir(parents=True, exist_ok=True)
    card = encoder.card
    card = card.replace(backbone=portable_backbone(card.backbone, folder),
                        expansion_weight=round(float(encoder.expansion_weight), 6),
                        notes={**card.notes, **(notes or {})})
    if encoder.lexical is not None:
        card = card.replace(lexical_head=encoder.lexical.save(folder))
    bias = encoder.logit_bias.detach() if encoder.logit_bias is not None else None
    model = encoder.model
    base_adapter = getattr(encoder, "base_adapter", None)
    if is_peft_model(model):
        return write_model_folder(folder, model, encoder.tokenizer, card, bias)  # the adapter
    if any(p.requires_grad for p in model.parameters()):
        return write_model_folder(folder, model, encoder.tokenizer, card, bias)  # --full: the whole model
    if base_adapter is not None:  # frozen backbone + the merged adapter it started from
        shutil.copytree(base_adapter, folder / ADAPTER_DIR, dirs_exist_ok=True)
        card = card.replace(adapter=ADAPTER_DIR)
    return write_model_folder(folder, None, encoder.tokenizer, card, bias)


def write_model_folder(folder: Path, model, tokenizer, card: ModelCard,
                       logit_bias: torch.Tensor | None = None) -> ModelCard:
    """Write the card and the weights (adapter or full model) of ``model`` into ``folder`` (existing),
    and the calibrated logit bias when there is one.

    ``card.backbone`` must already be the portable reference for ``folder``. ``model=None`` (a frozen,
    unmodified backbone) writes only the card and the bias (a card naming ``adapter`` keeps it: the
    caller copied one in). Returns the saved card.
    """
    if logit_bias is not None:
        from csplade_pyserini.model.logit_bias import save_logit_bias

        card = card.replace(logit_bias=save_logit_bias(logit_bias, folder))
    if model is None:
        saved = card if card.adapter == ADAPTER_DIR else card.replace(adapter=None)
    elif is_peft_model(model):
        with _named_as(model, card.backbone):
            model.save_pretrained(str(folder / ADAPTER_DIR))
        # peft's template README records the folder the base model was loaded from in its tags; the
        # csplade card is this checkpoint's model card, so the template is dropped.
        (folder / ADAPTER_DIR / "README.md").unlink(missing_ok=True)
        saved = card.replace(adapter=ADAPTER_DIR)
    else:
        with _named_as(model, card.backbone):
            model.save_pretrained(str(folder / MODEL_DIR))
        tokenizer.save_pretrained(str(folder / MODEL_DIR))
        saved = card.replace(backbone=MODEL_DIR, adapter=None)
    saved.save(folder)
    return saved


def resolve_adapter_dir(path: str | Path) -> Path:
    """An adapter folder, or a checkpoint folder whose card names one (``--init-adapter``)."""
    path = Path(path)
    if (path / "adapter_config.json").exists():
        return path
    if (path / CARD_NAME).exists():
        card = ModelCard.load(path)
        if not card.adapter:
            raise InputError("this checkpoint has no adapter (a --full checkpoint? pass its model/ folder as "
                             "--backbone instead)", path=path)
        adapter = Path(card.adapter)
        return adapter if adapter.is_absolute() else path / adapter
    raise InputError("neither a peft adapter folder (adapter_config.json) nor a checkpoint (csplade_card.json)",
                     path=path)


# --- export ----------------------------------------------------------------------------------------
def export_merged(checkpoint: str | Path, output_dir: str | Path, dtype: str = "float32",
                  sentence_transformers: bool = False) -> Path:
    """Merge a checkpoint's LoRA adapter into its backbone and write a standalone model folder.

    The folder holds ``config.json``, the weights, the tokenizer, the heads and a card with
    ``backbone: "."`` and no adapter, so it loads with ``csplade:OUTPUT_DIR`` (or plain transformers)
    without the original backbone; ``sentence_transformers`` also makes it a Sentence Transformers
    ``SparseEncoder`` folder (``integration/st_sparse.py``).
    """
    from csplade_pyserini.atomic import atomic_dir
    from csplade_pyserini.model.backbone import load_card_model

    checkpoint = Path(checkpoint)
    if not (checkpoint / CARD_NAME).exists():
        raise InputError(f"not a checkpoint folder (no {CARD_NAME})", path=checkpoint)
    if dtype not in ("float32", "bfloat16", "float16"):
        raise InputError(f"dtype must be float32, bfloat16 or float16, got {dtype!r}", field="dtype")
    card = ModelCard.load(checkpoint)
    base_dir = checkpoint.resolve()
    # Merge in float32 whatever the target precision, then cast once.
    model, tokenizer = load_card_model(card, base_dir, dtype="float32")
    model = model.to(getattr(torch, dtype))
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    output_dir = Path(output_dir)
    with atomic_dir(output_dir) as tmp:
        with _named_as(model, "."):
            model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        notes = dict(card.notes)
        notes["exported_from"] = {"adapter": bool(card.adapter), "dtype": dtype}
        exported = card.replace(backbone=".", adapter=None, tokenizer=None, notes=notes)
        if card.logit_bias:
            from csplade_pyserini.model.logit_bias import load_logit_bias, save_logit_bias

            exported = exported.replace(logit_bias=save_logit_bias(load_logit_bias(card.logit_bias, base_dir), tmp))
        if card.lexical_head:
            from csplade_pyserini.model.lexical import LexicalHead

            head = LexicalHead.load(card.lexical_head, base_dir, config.hidden_size)
            exported = exported.replace(lexical_head=head.save(tmp))
        if card.context_head:
            from csplade_pyserini.model.context import ContextHead

            context = ContextHead.load(card.context_head, base_dir, config.hidden_size)
            exported = exported.replace(context_head=context.save(tmp))
        exported.save(tmp)
        if sentence_transformers:
            from csplade_pyserini.integration.st_sparse import write_sentence_transformers_files

            write_sentence_transformers_files(tmp)
    logger.info("exported a merged standalone model to %s", output_dir)
    return output_dir
