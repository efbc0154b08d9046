"""Named presets for published causal-LM sparse retrievers: ``--encoder csplade:laconic-1b``.

A preset is a model card that reproduces its authors' conventions (variant, prefixes, BOS, logit scale,
padding side, lengths, top-k, weight scale) around their hub checkpoint, so a user loads it by name
without reading their code. Any field can still be overridden: ``csplade:lion-sp-1b,max_doc_length=192``.
Dense presets (``lion-ds-*``) are read by the dense encoder: ``--encoder csplade-dense:lion-ds-1b``.
The published scores live in the 2CR matrices (``repro/*.yaml``, marked ``published``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Preset:
    name: str
    card: dict[str, Any]
    source: str
    """Where the conventions come from (paper, model card, reference implementation)."""
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


LLAMA3_TOKENIZER = "unsloth/Llama-3.2-1B"


def _laconic(size: str, tokenizer: str) -> Preset:
    # LACONIC: full models that ship no tokenizer (it comes from the Llama-3 base; any ungated mirror of it).
    # Bidirectional, no BOS (an attention sink that collapses every vector: SciFact nDCG@10 0.022 with it),
    # E5 prefixes (0.648 without them), log1p(relu) max pooling, top-512 terms, integer weights x100, and the
    # 256-token encoding of the Tevatron port that reproduces the paper.
    return Preset(
        name=f"laconic-{size}",
        card=dict(backbone=f"utahnlp/laconic-{size}", tokenizer=tokenizer, variant="bidirectional", add_bos=False,
                  query_prefix="query: ", doc_prefix="passage: ", max_query_length=256, max_doc_length=256,
                  logit_scale=None, query_top_k=512, doc_top_k=512, quant_scale=100.0, padding_side="right"),
        source="LACONIC (arXiv 2601.01684); Tevatron examples/laconic (encode flags of run_beir.sh)",
        notes="tokenizer from the Llama-3 base; no BOS; query:/passage: prefixes; bidirectional; top-512")


def _lion_sp(size: str) -> Preset:
    # Lion-SP: one peft LoRA adapter (the masked-next-token phase continued by retrieval training) on the base
    # Llama-3 its adapter_config.json names, merged; the tokenizer is in the adapter repo and keeps its BOS
    # (the authors' code tokenizes with the defaults); bidirectional; logits x hidden_size ** -0.25 before the
    # activation; no prompt, no EOS appended; EOS as pad with left padding; queries 64 tokens, documents 512 at
    # BEIR evaluation (192 on MS MARCO, 128 in training): ``csplade:lion-sp-1b,max_doc_length=192`` for MS MARCO.
    # Should an adapter name a base path that only existed on the authors' machine, ``,backbone=HUB_ID`` sets it.
    repo = f"hzeng/Lion-SP-{size.upper()}-llama3-marco-mntp"
    return Preset(
        name=f"lion-sp-{size}",
        card=dict(backbone=None, adapter=repo, tokenizer=repo, variant="bidirectional", add_bos=True,
                  query_prefix="", doc_prefix="", max_query_length=64, max_doc_length=512, logit_scale="auto",
                  query_top_k=None, doc_top_k=None, quant_scale=100.0, padding_side="left"),
        source="Lion (Zeng, Killingback, Zamani, arXiv 2502.15526); its public code (HansiZeng/scaling-retriever: "
               "LlamaBiSparse.load_from_lora, eval_sparse.py)",
        notes="adapter on the base model its adapter_config names; BOS kept; bidirectional; logit scale "
              "hidden_size**-0.25; no prompt; EOS pad, left padding; 64/512 tokens")


def _lion_ds(size: str) -> Preset:
    # Lion-DS: the dense twin of Lion-SP (``csplade-dense:lion-ds-1b``). Same adapter conventions, tokenizer,
    # lengths and padding; the adapter was trained on a headless bidirectional LlamaModel (its keys address
    # ``base_model.model.layers``, which the loader applies to the decoder) and the vector is the mean of
    # the L2-normalised final states of every non-pad token, BOS included (DecoderOnlyBiDense.encode).
    repo = f"hzeng/Lion-DS-{size.upper()}-llama3-marco-mntp"
    return Preset(
        name=f"lion-ds-{size}",
        card=dict(backbone=None, adapter=repo, tokenizer=repo, representation="dense", dense_pooling="mean",
                  variant="bidirectional", add_bos=True, query_prefix="", doc_prefix="", max_query_length=64,
                  max_doc_length=512, logit_scale=None, query_top_k=None, doc_top_k=None, padding_side="left"),
        source="Lion (Zeng, Killingback, Zamani, arXiv 2502.15526); its public code (HansiZeng/scaling-retriever: "
               "LlamaBiDense.load_from_lora, DecoderOnlyBiDense.encode, eval_dense.py)",
        notes="dense; adapter on the headless decoder of the base model its adapter_config names; BOS kept; "
              "bidirectional; mean of L2-normalised token states; no prompt; EOS pad, left padding; 64/512 tokens")


PRESETS: dict[str, Preset] = {p.name: p for p in (
    # Llama 3.1 and 3.2 share one tokenizer (128,256 entries): the ungated mirror the Tevatron port tested
    # serves every size.
    _laconic("1b", LLAMA3_TOKENIZER),
    _laconic("3b", LLAMA3_TOKENIZER),
    _laconic("8b", LLAMA3_TOKENIZER),
    _lion_sp("1b"),
    _lion_sp("8b"),
    _lion_ds("1b"),
    _lion_ds("8b"),
)}


def preset_card(name: str) -> dict[str, Any] | None:
    """The card fields of preset ``name`` (with ``name`` set), or None when there is no such preset."""
    preset = PRESETS.get(name)
    return None if preset is None else {**preset.card, "name": preset.name}
