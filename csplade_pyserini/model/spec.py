"""``csplade[:MODEL][,key=value...]`` encoder specs, as typed after Pyserini's ``--encoder``.

``MODEL`` is a checkpoint folder holding ``csplade_card.json``, a card file itself, a preset name for a
published checkpoint (``laconic-1b``, ``lion-sp-8b``...: ``model/presets.py``), or a backbone
(``smollm2``, a Hugging Face folder, a ``.gguf`` file, a hub id). ``key=value`` pairs override card
fields, for example ``csplade,variant=echo`` or ``csplade:ckpt/best,max_doc_length=512``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from csplade_pyserini.errors import InputError, ModelSpecError
from csplade_pyserini.model.card import CARD_NAME, DEFAULT_BACKBONE, ModelCard, parse_card_value
from csplade_pyserini.model.presets import preset_card
from csplade_pyserini.paths import PACKAGE_DIR

PREFIX = "csplade"
DENSE_PREFIX = "csplade-dense"  # the dense counterpart (Lion-DS) in Pyserini's FAISS path
DEFAULT_MODEL_DIR = PACKAGE_DIR / "assets" / "default-model"
# Models that ship inside the package, by name (``--encoder csplade:smollm2-pure``): the default's two channels
# alone, the pure CSPLADE path (the LM-head channel read after layer 4 through a trained context map, ``train
# pure``) and the word channel (``train words``, inference-free queries), and an earlier default (LM-head
# expansion + lexical head on SmolLM2, trained on SciFact only), kept for comparison.
PACKAGED_MODELS = {"smollm2-pure": PACKAGE_DIR / "assets" / "smollm2-pure",
                   "smollm2-words": PACKAGE_DIR / "assets" / "smollm2-words",
                   "smollm2-lexical": PACKAGE_DIR / "assets" / "smollm2-lexical"}
# An untrained LM head gives almost every vocabulary entry a positive logit (SmolLM2: ~49k terms per
# text), which no inverted index can serve; a bare backbone therefore keeps its top terms only.
# Trained checkpoints carry their own card (FLOPS-regularised, sparse by themselves).
BARE_BACKBONE_DEFAULTS = {"doc_top_k": 256, "query_top_k": 64}


def is_csplade_spec(name: Any) -> bool:
    """``csplade``, ``csplade:MODEL...`` or ``csplade,key=value...`` (not ``csplade-dense``, not ``splade``)."""
    return isinstance(name, str) and (name == PREFIX or name.startswith((PREFIX + ":", PREFIX + ",")))


def is_dense_spec(name: Any) -> bool:
    """``csplade-dense``, ``csplade-dense:MODEL...`` or ``csplade-dense,key=value...``."""
    return isinstance(name, str) and (name == DENSE_PREFIX or name.startswith((DENSE_PREFIX + ":",
                                                                                DENSE_PREFIX + ",")))


def parse_spec(spec: str) -> tuple[str | None, dict[str, Any]]:
    """Split a spec into the model reference (``None`` = default) and card overrides."""
    if is_dense_spec(spec):
        prefix = DENSE_PREFIX
    elif is_csplade_spec(spec):
        prefix = PREFIX
    else:
        raise ModelSpecError(f"not a csplade encoder spec: {spec!r} (expected csplade[:MODEL][,key=value...] "
                             "or csplade-dense[:MODEL][,key=value...])")
    rest = spec[len(prefix):]
    model = None
    if rest.startswith(":"):
        model, _, options = rest[1:].partition(",")
        if not model:
            raise ModelSpecError(f"empty model after '{prefix}:' in {spec!r}")
    else:
        options = rest[1:]
    overrides: dict[str, Any] = {}
    fields = {f.name for f in dataclasses.fields(ModelCard)}
    for item in filter(None, options.split(",")):
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise ModelSpecError(f"option {item!r} in {spec!r} is not key=value")
        if key not in fields or key in ("notes",):
            raise ModelSpecError(f"unknown option {key!r} in {spec!r}; known: {', '.join(sorted(fields - {'notes'}))}")
        overrides[key] = parse_card_value(key, value.strip())
    return model, overrides


def default_model_ref() -> str | None:
    """The packaged default checkpoint if one ships with the toolkit, else the bare default backbone."""
    return str(DEFAULT_MODEL_DIR) if (DEFAULT_MODEL_DIR / CARD_NAME).exists() else None


def _named_card(model: str) -> tuple[ModelCard, Path | None] | None:
    """The card ``model`` names and the folder its relative paths start from: a preset (unless a local file
    or folder has that name), a card file, or a checkpoint folder; None when ``model`` is a bare backbone."""
    path = Path(model).expanduser()
    if model in PACKAGED_MODELS and not path.exists():
        path = PACKAGED_MODELS[model]
    preset = preset_card(model)
    if preset is not None and not path.exists():
        return ModelCard(**preset), None
    if path.is_file() and path.suffix == ".json":
        return ModelCard.load(path), path.parent.resolve()
    if path.is_dir() and (path / CARD_NAME).exists():
        return ModelCard.load(path), path.resolve()
    return None


def resolve_card(model: str | None, overrides: dict[str, Any] | None = None) -> tuple[ModelCard, Path | None]:
    """Card and the folder its relative paths are resolved against."""
    model = model if model is not None else default_model_ref()
    named = _named_card(model) if model is not None else None
    if named is not None:
        card, base_dir = named
    else:
        card, base_dir = ModelCard(**({"backbone": model} if model else {}), **BARE_BACKBONE_DEFAULTS), None
    return _with_overrides(card, overrides), base_dir


def _with_overrides(card: ModelCard, overrides: dict[str, Any] | None) -> ModelCard:
    """``card`` with a spec's ``key=value`` overrides applied (a bad value names its field)."""
    if not overrides:
        return card
    try:
        return card.replace(**overrides)
    except InputError as exc:
        raise ModelSpecError(f"bad option {exc.field}: {exc.message}") from None


def resolve_dense_card(model: str | None, overrides: dict[str, Any] | None = None) -> tuple[ModelCard, Path | None]:
    """A ``csplade-dense`` spec's card: a dense checkpoint or preset, or a bare backbone (default: the offline
    default backbone, untrained) read as a dense model; a sparse checkpoint is refused."""
    named = _named_card(model) if model is not None else None
    if named is None:
        card = ModelCard(backbone=model or DEFAULT_BACKBONE, representation="dense")
        return _with_overrides(card, overrides), None
    card, base_dir = _with_overrides(named[0], overrides), named[1]
    if not card.is_dense:
        raise ModelSpecError(f"{model} is a sparse model: search it with --encoder csplade:{model} (Lucene impact "
                             "index); csplade-dense needs a dense checkpoint (train contrastive --representation dense)")
    return card, base_dir


def card_from_spec(spec: str) -> tuple[ModelCard, Path | None]:
    model, overrides = parse_spec(spec)
    if is_dense_spec(spec):
        return resolve_dense_card(model, overrides)
    return resolve_card(model, overrides)
