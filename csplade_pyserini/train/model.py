"""The model a training run optimises: one :class:`SparseEncoder` for queries and documents.

What learns is chosen by the options (``config.ModelArguments``):

* ``--frozen-layers`` none: LoRA (or ``--full``) on every layer, a full forward per step (the papers'
  recipes, on GPUs);
* ``--frozen-layers N``: the bottom N layers are frozen and read from the activation cache; LoRA (or
  ``--full``) on the layers above;
* ``--frozen-layers all``: the backbone is frozen; only the heads learn.

Heads, trained with any of these: the per-term logit bias (calibrated to a target document frequency
before the first step, then learned), the lexical impact head and the channel weight (beyond CSPLADE,
when ``--lexical-layer`` is set), and the loss's score scale (a learnable inverse temperature).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch

from csplade_pyserini.errors import InputError
from csplade_pyserini.model.card import CARD_NAME, ModelCard
from csplade_pyserini.model.pooling import keep_top_k
from csplade_pyserini.model.sparse import SparseEncoder, num_layers

logger = logging.getLogger(__name__)


def frozen_layer_count(option: str | None, total: int) -> int | None:
    """``--frozen-layers`` as a number of layers (None: nothing frozen, no cache)."""
    if option is None:
        return None
    count = total if option == "all" else int(option)
    if count > total:
        raise InputError(f"the backbone has {total} layers; cannot freeze {count}", field="frozen_layers")
    return count


def load_backbone(model_args, device: str):
    """The backbone (and tokenizer), with the ``--init-checkpoint`` adapter applied when there is one."""
    from csplade_pyserini.model.backbone import apply_adapter, load_causal_lm, load_tokenizer, resolve_backbone

    init_card, init_dir = _init_card(model_args)
    backbone = init_card.backbone if init_card is not None else model_args.backbone
    source = resolve_backbone(backbone, init_dir)
    tokenizer = load_tokenizer(source)
    model = load_causal_lm(source, dtype=model_args.dtype, device=device)
    model.config.use_cache = False
    base_adapter = None
    if init_card is not None and init_card.adapter:
        adapter = Path(init_card.adapter)
        adapter = adapter if adapter.is_absolute() else init_dir / adapter
        # The adapter keeps training (above the frozen layers), unless nothing but the heads trains: then it is
        # merged (faster) and copied as it is into every checkpoint.
        keep = model_args.frozen_layers != "all" and not model_args.full
        model = apply_adapter(model, adapter, merge=not keep, trainable=keep)
        base_adapter = None if keep else adapter
        logger.info("%s the adapter of %s", "continuing" if keep else "merged", model_args.init_checkpoint)
    return model, tokenizer, init_card, init_dir, base_adapter


def _init_card(model_args) -> tuple[ModelCard | None, Path | None]:
    if not model_args.init_checkpoint:
        return None, None
    folder = Path(model_args.init_checkpoint)
    if (folder / "adapter_config.json").exists():  # a bare peft adapter folder
        card = ModelCard(backbone=model_args.backbone, adapter=str(folder.resolve()))
        return card, folder.resolve()
    if not (folder / CARD_NAME).exists():
        raise InputError(f"not a checkpoint (no {CARD_NAME}) nor a peft adapter folder", path=folder,
                         field="init_checkpoint")
    return ModelCard.load(folder), folder.resolve()


def make_trainable(model, model_args, frozen: int | None):
    """Freeze the backbone, then open LoRA (or every weight, ``--full``) on the layers above ``frozen``."""
    from csplade_pyserini.train.checkpoint import is_peft_model

    total = num_layers(model)
    if is_peft_model(model):  # an adapter continued from --init-checkpoint: it trains above the frozen layers
        for name, parameter in model.named_parameters():
            layer = _layer_of(name)
            parameter.requires_grad_("lora_" in name and (layer is None or layer >= (frozen or 0)))
        return model
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    first = frozen or 0
    if first >= total:
        return model
    if model_args.full:
        from csplade_pyserini.model.sparse import decoder_and_head

        decoder, _ = decoder_and_head(model)
        for layer in list(decoder.layers)[first:]:
            layer.requires_grad_(True)
        decoder.norm.requires_grad_(True)
        return model
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=model_args.lora_rank, lora_alpha=model_args.lora_alpha, lora_dropout=model_args.lora_dropout,
                      target_modules=list(model_args.target_modules), bias="none", task_type="CAUSAL_LM",
                      layers_to_transform=list(range(first, total)) if first else None)
    try:
        return get_peft_model(model, lora)
    except ValueError as exc:
        raise InputError(f"LoRA target modules {list(model_args.target_modules)} do not fit this model: {exc}",
                         field="target_modules") from None


def _layer_of(name: str) -> int | None:
    match = re.search(r"\.layers\.(\d+)\.", name)
    return int(match.group(1)) if match else None


def build_encoder(model_args, model, tokenizer, init_card: ModelCard | None, init_dir: Path | None,
                  bias: torch.Tensor | None = None, base_adapter: Path | None = None) -> SparseEncoder:
    """The SparseEncoder being trained: card from the options (its heads from ``--init-checkpoint``)."""
    from csplade_pyserini.model.lexical import LexicalHead
    from csplade_pyserini.model.logit_bias import load_logit_bias

    lexical_layer = model_args.lexical_layer
    lexical = None
    expansion_weight = model_args.expansion_weight
    if init_card is not None:
        if bias is None and init_card.logit_bias:
            bias = load_logit_bias(init_card.logit_bias, init_dir, model.get_output_embeddings().weight.shape[0])
        if init_card.lexical_head:
            lexical = LexicalHead.load(init_card.lexical_head, init_dir, model.config.hidden_size)
            lexical_layer = init_card.lexical_layer if lexical_layer is None else lexical_layer
            expansion_weight = init_card.expansion_weight
    if lexical_layer is not None and lexical is None:
        lexical = LexicalHead(model.config.hidden_size, model_args.lexical_width)
    card = model_args.card(lexical_layer=lexical_layer, lexical_head="lexical_head.safetensors" if lexical else None,
                           expansion_weight=expansion_weight)
    if card.is_dense:
        from csplade_pyserini.model.dense import DenseEncoder

        encoder = DenseEncoder(model, tokenizer, card)
        encoder.base_adapter = base_adapter
        return encoder
    encoder = SparseEncoder(model, tokenizer, card, logit_bias=bias, lexical=lexical)
    if encoder.logit_bias is not None:
        encoder.logit_bias.requires_grad_(model_args.train_bias)
    encoder.expansion_weight.requires_grad_(lexical is not None and card.expansion)
    encoder.base_adapter = base_adapter
    return encoder


class SparseBiEncoder(torch.nn.Module):
    """One encoder for both sides; ``encode`` accepts token ids, cached states or cached pooled logits.
    The encoder may be a :class:`~csplade_pyserini.model.dense.DenseEncoder` (``--representation dense``):
    the same inputs give ``[batch, hidden]`` vectors and the same losses score them.

    Cached pooled logits stand for the whole model only when nothing in it trains (``use_pooled``): a cache
    built by a frozen-backbone run also holds them, and a LoRA run reading its states must not use them.

    The loss (and its learnable score scale) is a sub-module and runs inside :meth:`forward`, so that
    under DDP every trainable parameter is used inside the wrapped forward, as DDP requires."""

    def __init__(self, encoder: SparseEncoder, start_layer: int = 0, top_k_slack: float | None = None,
                 loss: torch.nn.Module | None = None, use_pooled: bool = True):
        super().__init__()
        self.encoder = encoder
        self.use_pooled = use_pooled
        self.start_layer = start_layer
        self.top_k_slack = top_k_slack
        self.loss_fn = loss

    @classmethod
    def build(cls, model_args, training_args) -> "SparseBiEncoder":
        """The model a run trains, from its options (Tevatron's ``EncoderModel.build``): the backbone (with
        the ``--init-checkpoint`` adapter), frozen below ``--frozen-layers``, LoRA or full training above,
        the heads, and the run's loss. ``frozen_layers`` (None: nothing frozen) and ``num_layers`` tell the
        run whether to cache the frozen bottom."""
        from csplade_pyserini.train.losses import build_loss

        model, tokenizer, init_card, init_dir, base_adapter = load_backbone(model_args, str(training_args.device))
        total = num_layers(model)
        frozen = frozen_layer_count(model_args.frozen_layers, total)
        model = make_trainable(model, model_args, frozen)
        encoder = build_encoder(model_args, model, tokenizer, init_card, init_dir, base_adapter=base_adapter)
        lexical_layer = encoder.card.lexical_layer if encoder.lexical is not None else None
        if frozen is not None and frozen < total and lexical_layer is not None and lexical_layer < frozen:
            raise InputError(f"the lexical head reads layer {lexical_layer}, inside the {frozen} frozen layers; "
                             f"freeze at most {lexical_layer} layers (or 'all')", field="frozen_layers")
        bi_encoder = cls(encoder, start_layer=frozen or 0, top_k_slack=training_args.train_top_k_slack,
                         loss=build_loss(training_args, dense=encoder.card.is_dense),
                         use_pooled=frozen == total and not encoder.card.is_dense)
        bi_encoder.frozen_layers, bi_encoder.num_layers = frozen, total
        return bi_encoder

    @property
    def card(self) -> ModelCard:
        return self.encoder.card

    def score_scale(self) -> float:
        """The loss's inverse temperature now (NaN for a loss without one: MarginMSE)."""
        scale = getattr(self.loss_fn, "scale", None)
        return float(scale.value) if scale is not None else float("nan")

    def parameter_groups(self) -> dict[str, list[torch.nn.Parameter]]:
        """The trainable parameters by optimizer group, each with its own learning rate: ``backbone`` (LoRA or
        full layers), ``head`` (lexical head, channel weight), ``bias`` (the logit bias), ``scale`` (the
        loss's inverse temperature)."""
        groups: dict[str, list] = {"backbone": [], "head": [], "bias": [], "scale": []}
        for name, parameter in self.named_parameters():
            if not parameter.requires_grad:
                continue
            if name.endswith("log_scale"):
                groups["scale"].append(parameter)
            elif name.endswith("logit_bias"):
                groups["bias"].append(parameter)
            elif ".lexical." in name or name.endswith("expansion_weight"):
                groups["head"].append(parameter)
            else:
                groups["backbone"].append(parameter)
        return {name: params for name, params in groups.items() if params}

    def encode(self, features: dict, kind: str) -> torch.Tensor:
        ids, attention, pool = features["input_ids"], features["attention_mask"], features["pool_mask"]
        if "pooled" in features and self.use_pooled:
            weights = self.encoder.combine(features["pooled"], features.get("states"), ids, pool)
        elif "states" in features:
            weights = self.encoder(ids, attention, pool, start_layer=self.start_layer, states=features["states"])
        else:
            weights = self.encoder(ids, attention, pool)
        top_k = self.card.top_k(kind)
        if self.top_k_slack is not None and top_k is not None:
            weights = keep_top_k(weights, int(round(top_k * self.top_k_slack)))
        return weights

    def activation_checkpointing_enable(self, activation_checkpointing_kwargs: dict | None = None, **_) -> None:
        """Called by the Trainer for ``--gradient-checkpointing``: the backbone recomputes its activations
        in the backward pass (transformers >= 5.2x calls it this; older versions call the name below)."""
        from csplade_pyserini.train.checkpoint import is_peft_model

        model = self.encoder.model
        kwargs = activation_checkpointing_kwargs or {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        if is_peft_model(model):
            model.enable_input_require_grads()

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None, **_) -> None:
        self.activation_checkpointing_enable(gradient_checkpointing_kwargs)

    def forward(self, query: dict, docs: dict, **batch) -> dict:
        """The loss's named parts (``loss`` is the total) and the batch's mean terms per query and document;
        ``batch`` holds what the collator adds (group size, keys, teacher scores)."""
        q, d = self.encode(query, "query"), self.encode(docs, "doc")
        parts = dict(self.loss_fn(q, d, batch))
        if self.card.is_dense:
            return parts
        with torch.no_grad():
            parts["terms_q"] = (q > 0).sum(-1).float().mean()
            parts["terms_d"] = (d > 0).sum(-1).float().mean()
        return parts

    # --- what a checkpoint holds for resuming --------------------------------------------------------
    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {name: p.detach().cpu().clone() for name, p in self.named_parameters() if p.requires_grad}

    def load_trainable_state(self, state: dict[str, torch.Tensor], source: str | Path | None = None) -> None:
        own = dict(self.named_parameters())
        missing = [n for n, p in own.items() if p.requires_grad and n not in state]
        unknown = [n for n in state if n not in own]
        if missing or unknown:
            raise InputError(f"checkpoint does not fit this run: missing {missing[:3]}, unknown {unknown[:3]}",
                             path=source)
        with torch.no_grad():
            for name, value in state.items():
                own[name].copy_(value.to(own[name].device, own[name].dtype))


def calibrate_bias_to_df(pooled: torch.Tensor, target_df: float, scale: float | None = None) -> torch.Tensor:
    """A per-term bias that makes each term active in ``target_df`` of the sampled documents.

    ``pooled`` is ``[documents, vocab]`` max-pooled logits (:meth:`SparseEncoder.max_logits`), a
    seeded random sample of the corpus. The bias is minus the ``1 - target_df`` quantile of each
    term's (scaled) pooled logit: a term then scores only in the documents where it stands out most,
    an IDF-like selectivity. Calibrating on per-position logits instead (mean + k std) and applying
    the bias to the max over ~125 positions left 48.7k of 49.1k terms active in every document, so
    top-k did all the sparsifying and almost nothing was left to train.
    """
    if pooled.dim() != 2 or pooled.shape[0] < 2:
        raise ValueError(f"need [documents >= 2, vocab] pooled logits, got {tuple(pooled.shape)}")
    values = pooled.float() * (scale if scale is not None else 1.0)
    return -torch.quantile(values, 1.0 - target_df, dim=0)
