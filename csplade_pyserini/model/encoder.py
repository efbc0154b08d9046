"""A loaded CSPLADE model ready to turn texts into integer impact vectors."""

from __future__ import annotations

import copy
import logging
import threading
from pathlib import Path
from typing import Any, Mapping, Sequence

from csplade_pyserini import __version__
from csplade_pyserini.errors import InputError
from csplade_pyserini.model.backbone import load_card_model
from csplade_pyserini.model.card import ModelCard
from csplade_pyserini.model.spec import card_from_spec, parse_spec
from csplade_pyserini.vectors.quantize import quantize_tensor
from csplade_pyserini.vectors.terms import TermMap

logger = logging.getLogger(__name__)

_CACHE: dict[tuple, "CspladeModel"] = {}
# idf-tokens query side: query impact = round(scale x idf). Measured on SciFact with the default model:
# scale 10 gave nDCG@10 0.6520, 30 gave 0.6533 (the model's own query side: 0.6558).
IDF_TOKEN_SCALE = 30.0
# The LM-head channel's terms beside the word channel's: a vocabulary entry behind a prefix no analysed word
# carries (words are runs of letters and digits), so ``lm_cell`` never meets the word ``cell``.
EXPANSION_PREFIX = "lm_"
_CACHE_LOCK = threading.Lock()


class CspladeModel:
    def __init__(self, encoder, card: ModelCard, base_dir: Path | None, device: str = "cpu",
                 expansion: "CspladeModel | None" = None):
        self.encoder = encoder
        self.card = card
        self.base_dir = base_dir
        self.device = device
        self.expansion = expansion
        """The word channel's LM-head expansion (card ``expansion: true``): a model of its own, over
        :meth:`ModelCard.expansion_card`, whose vocabulary terms join the words (:meth:`expansion_impacts`)."""
        self.term_map = None  # the word channel's terms are open-ended words, not vocabulary entries
        if not card.is_words:
            self.term_map = TermMap.from_tokenizer(encoder.tokenizer)
            vocab = encoder.vocab
            if vocab > len(self.term_map):  # padded embedding rows have no token: never terms
                self.term_map.terms.extend([None] * (vocab - len(self.term_map)))

    @classmethod
    def from_card(cls, card: ModelCard, base_dir: Path | None = None, device: str = "cpu") -> "CspladeModel":
        from csplade_pyserini.model.dense import DenseEncoder
        from csplade_pyserini.model.sparse import SparseEncoder

        if card.runtime != "torch":
            return cls.from_onnx(card, base_dir, device)
        model, tokenizer = load_card_model(card, base_dir, device=device,
                                           dtype="float32" if card.quantization else None)
        if card.quantization:
            from csplade_pyserini.model.quantization import quantize_decoder

            quantize_decoder(model, card.quantization, device)
        model.eval()
        positions = getattr(model.config, "max_position_embeddings", None)
        for name in ("max_doc_length", "max_query_length"):
            if positions and getattr(card, name) > positions:
                raise InputError(f"{getattr(card, name)} tokens is beyond the backbone's {positions} positions",
                                 field=name)
        if card.is_words:
            from csplade_pyserini.model.words import TermFrequencyHead, WordEncoder

            head = TermFrequencyHead.load(card.tf_head, base_dir, model.config.hidden_size) if card.tf_head else None
            expansion = cls.from_card(card.expansion_card(), base_dir, device) if card.expansion else None
            return cls(WordEncoder(model, tokenizer, card, head).to(device).eval(), card, base_dir, device, expansion)
        bias = lexical = None
        if card.logit_bias:
            from csplade_pyserini.model.logit_bias import load_logit_bias

            bias = load_logit_bias(card.logit_bias, base_dir, model.get_output_embeddings().weight.shape[0])
        if card.lexical_head:
            from csplade_pyserini.model.lexical import LexicalHead

            lexical = LexicalHead.load(card.lexical_head, base_dir, model.config.hidden_size)
        if card.is_dense:
            encoder = DenseEncoder(model, tokenizer, card, logit_bias=bias, lexical=lexical).to(device)
        else:
            context = None
            if card.context_head:
                from csplade_pyserini.model.context import ContextHead

                context = ContextHead.load(card.context_head, base_dir, model.config.hidden_size)
            encoder = SparseEncoder(model, tokenizer, card, logit_bias=bias, lexical=lexical, context=context).to(device)
        return cls(encoder.eval(), card, base_dir, device)

    @classmethod
    def from_onnx(cls, card: ModelCard, base_dir: Path | None = None, device: str = "cpu",
                  tokenizer=None) -> "CspladeModel":
        """A card with ``runtime: onnx`` (or ``onnx-int8``): its forward pass in ONNX Runtime, PyTorch's model never
        loaded (the graph is exported once if no export matches, ``model/onnx.py``). A word-channel card keeps its
        inference-free queries and runs its LM-head channel, if any, in ONNX Runtime (with the same tokenizer:
        the expansion card keeps the backbone, tokenizer and padding side); its documents need PyTorch."""
        from csplade_pyserini.model.backbone import load_card_tokenizer

        tokenizer = tokenizer if tokenizer is not None else load_card_tokenizer(card, base_dir)
        if card.is_words:
            from csplade_pyserini.model.words import WordEncoder

            expansion = cls.from_onnx(card.expansion_card(), base_dir, device, tokenizer) if card.expansion else None
            return cls(WordEncoder(None, tokenizer, card), card, base_dir, device, expansion)
        from csplade_pyserini.model.onnx import OnnxSparseEncoder

        return cls(OnnxSparseEncoder.for_card(card, base_dir, tokenizer, device), card, base_dir, device)

    @classmethod
    def from_spec(cls, spec: str, device: str = "cpu", cache: bool = True) -> "CspladeModel":
        """Load (once per process) the model a ``csplade[:MODEL][,k=v]`` spec names."""
        card, base_dir = card_from_spec(spec)
        key = (repr(card.to_dict()), str(base_dir), device)
        with _CACHE_LOCK:
            if cache and key in _CACHE:
                return _CACHE[key]
            model = cls.from_card(card, base_dir, device)
            if cache:
                _CACHE[key] = model
            return model

    # --- terms -------------------------------------------------------------------------------------
    def term_fingerprint(self) -> str:
        """Identifies how terms are spelled (the vocabulary, or the word analyzer, with the expansion's vocabulary)."""
        if not self.card.is_words:
            return self.term_map.fingerprint()
        words = self.encoder.analyzer.fingerprint()
        return words if self.expansion is None else f"{words}+{EXPANSION_PREFIX}{self.expansion.term_fingerprint()}"

    def known_terms(self) -> set[str] | None:
        """Every term this model can emit; None where that set is open (analysed words)."""
        return None if self.card.is_words else self.term_map.term_set()

    # --- encoding ----------------------------------------------------------------------------------
    def encode_documents(self, texts: Sequence[str], max_length: int | None = None, max_tokens: int | None = None,
                         max_batch: int = 256, progress=None) -> tuple[list[dict[str, int]], int]:
        """Integer document vectors, and how many tokens the model read (the encode command's block)."""
        self.require_documents()
        if self.card.is_words:
            if max_length is not None and max_length != self.card.max_doc_length:
                raise InputError("the word channel reads max_doc_length tokens: change it in the spec "
                                 f"(csplade,max_doc_length={max_length}), not with --max-length", field="max_length")
            if self.expansion is None:
                vectors, tokens = self.encoder.encode_documents(texts, self.device, max_tokens or 1024, progress)
                return [self.quantize_impacts(v) for v in vectors], tokens
            words, pieces, tokens = self.document_channels(texts, max_tokens, progress)
            scale = self.card.quant_scale * self.card.expansion_weight
            return [{**w, **self.expansion_impacts(p, scale)} for w, p in zip(words, pieces)], tokens
        self._require("sparse")
        sequences = self.encoder.tokenize(texts, "doc", max_length)
        encoded = self.encoder.encode_sequences(sequences, top_k=self.card.doc_top_k, max_tokens=max_tokens,
                                                max_batch=max_batch, device=self.device, progress=progress)
        return [self.to_impacts(ids, weights) for ids, weights in encoded], sum(len(s) for s in sequences)

    def require_documents(self) -> None:
        """Refuse a model loaded for its queries only (a word channel under an ONNX runtime: its term-frequency
        head needs PyTorch); the encode commands call it before they write anything."""
        if self.card.is_words and self.card.runtime != "torch":
            raise InputError(f"the word channel's documents are encoded by PyTorch; runtime {self.card.runtime} "
                             "serves its queries: encode with runtime=torch", field="runtime")

    def document_channels(self, texts: Sequence[str], max_tokens: int | None = None, progress=None
                          ) -> tuple[list[dict[str, int]], list[tuple], int]:
        """A word-channel model with expansion, channel by channel: the words' integer impacts, the LM-head
        channel's (token ids, float weights), and the tokens read. ``train join`` weighs the second against
        the first on validation before :meth:`encode_documents` merges them at the card's weight."""
        vectors, tokens = self.encoder.encode_documents(texts, self.device, max_tokens or 1024)
        pieces = self.expansion.encode_weights(texts, "doc", max_tokens=max_tokens, progress=progress)
        return [self.quantize_impacts(v) for v in vectors], pieces, tokens

    def expansion_impacts(self, encoded: tuple, scale: float) -> dict[str, int]:
        """One text's LM-head (token ids, float weights) as prefixed integer terms, ``round(weight x scale)``."""
        return self.expansion.to_impacts(*encoded, scale=scale, prefix=EXPANSION_PREFIX)

    def for_collection(self, texts: Sequence[str], spec: str | None = None) -> "CspladeModel":
        """This model with the collection statistics its document side needs: for the word channel, BM25's
        avgdl measured over ``texts`` (the whole collection), unless ``spec`` sets ``bm25_avgdl`` itself.
        Other models need none and come back as they are. The copy shares the weights."""
        if not self.card.is_words or not texts:
            return self
        if spec is not None and "bm25_avgdl" in parse_spec(spec)[1]:
            return self
        from csplade_pyserini.model.words import average_length

        avgdl = average_length(texts, self.encoder.analyzer)
        if avgdl <= 0:
            return self
        logger.info("word channel: the collection's avgdl is %.1f analysed words (the card's: %.1f)", avgdl,
                    self.card.bm25_avgdl)
        return self.with_card(bm25_avgdl=avgdl)

    def with_card(self, **changes: Any) -> "CspladeModel":
        """This model under a card with ``changes`` (validated as the card validates itself; a length beyond
        the backbone's positions refused). The copy shares the weights: only the card differs."""
        card = self.card.replace(**changes)
        positions = self.max_positions()
        for name in ("max_doc_length", "max_query_length"):
            if name in changes and positions and getattr(card, name) > positions:
                raise InputError(f"{getattr(card, name)} tokens is beyond the backbone's {positions} positions",
                                 field=name)
        encoder = copy.copy(self.encoder)  # shallow: the backbone and heads are shared
        encoder.card = card
        expansion = None
        if self.expansion is not None:
            old, new = self.expansion.card.to_dict(), card.expansion_card().to_dict()
            expansion = self.expansion.with_card(**{k: v for k, v in new.items() if old[k] != v})
        return CspladeModel(encoder, card, self.base_dir, self.device, expansion)

    def max_positions(self) -> int | None:
        """The backbone's positions (the longest input it reads); None where unknown."""
        model = self.encoder.model
        if model is None:
            return getattr(self.encoder, "positions", None)
        return getattr(model.config, "max_position_embeddings", None)

    def quantize_impacts(self, weights: Mapping[str, float]) -> dict[str, int]:
        """``round(weight x quant_scale)``, terms rounding to 0 left out (Anserini would truncate floats)."""
        scale = self.card.quant_scale
        return {term: q for term, w in weights.items() if (q := int(round(w * scale))) > 0}

    def encode_weights(self, texts: Sequence[str], kind: str, max_length: int | None = None,
                       max_tokens: int | None = None, max_batch: int = 256, progress=None):
        self._require("sparse")
        if self.card.is_words:
            raise InputError("the word channel has no vocabulary-sized weights; use encode()", field="term_scheme")
        sequences = self.encoder.tokenize(texts, kind, max_length)
        return self.encoder.encode_sequences(sequences, top_k=self.card.top_k(kind), max_tokens=max_tokens,
                                             max_batch=max_batch, device=self.device, progress=progress, kind=kind)

    def encode_dense(self, texts: Sequence[str], kind: str = "doc", max_length: int | None = None,
                     max_tokens: int | None = None, max_batch: int = 256, progress=None):
        """``[len(texts), hidden]`` float32 numpy vectors of a dense model (card ``representation: dense``)."""
        self._require("dense")
        sequences = self.encoder.tokenize(texts, kind, max_length)
        return self.encoder.encode_dense(sequences, max_tokens=max_tokens, max_batch=max_batch, device=self.device,
                                         progress=progress, kind=kind).numpy()

    def _require(self, representation: str) -> None:
        if self.card.representation != representation:
            other = "csplade-dense" if self.card.is_dense else "csplade"
            raise InputError(f"this model card is {self.card.representation}, not {representation}: use "
                             f"--encoder {other}:MODEL (a dense model goes into a FAISS index, a sparse one into a "
                             "Lucene impact index)", field="representation")

    def to_impacts(self, ids, weights, scale: float | None = None, prefix: str = "") -> dict[str, int]:
        """Vocabulary (token ids, float weights) as ``prefix + term -> round(weight x scale)`` (the card's
        ``quant_scale`` unless given), terms rounding to 0 and excluded ids left out."""
        quantized = quantize_tensor(weights, self.card.quant_scale if scale is None else scale)
        keep = quantized > 0
        terms = self.term_map.terms
        return {prefix + terms[i]: q for i, q in zip(ids[keep].tolist(), quantized[keep].tolist())
                if terms[i] is not None}

    def idf_token_vectors(self, texts: Sequence[str], idf: Mapping[str, float]) -> list[dict[str, int]]:
        """The inference-free query side (card ``query_side: idf-tokens``): each query token after the prefix,
        weighted ``max(1, round(IDF_TOKEN_SCALE * idf))`` with the searched index's idf; tokens the index
        does not hold are dropped (they could not match). A repeated token counts once. The word channel weights
        analysed words instead, a repeated word as often as it occurs (:meth:`WordEncoder.query_vectors`); its
        LM-head expansion adds the model's own query terms, ``round(IDF_TOKEN_SCALE * weight)``, those the index
        holds with an idf above 0 (the words' rule, and Pyserini's impact searcher's)."""
        if self.card.is_words:
            vectors = self.encoder.query_vectors(texts, idf, IDF_TOKEN_SCALE)
            if self.expansion is not None:
                pieces = self.expansion.encode_weights(list(texts), "query")
                vectors = [{**v, **{t: w for t, w in self.expansion_impacts(p, IDF_TOKEN_SCALE).items()
                                    if idf.get(t, 0) > 0}}
                           for v, p in zip(vectors, pieces)]
            return vectors
        excluded = set(self.encoder.excluded_ids(self.encoder.vocab, "cpu").tolist())
        terms = self.term_map.terms
        vectors = []
        for ids in self.encoder.tokenize(list(texts), "query"):
            vector = {}
            for i in ids[self.encoder.prefix_length(ids, "query"):]:
                term = terms[i] if i < len(terms) else None
                if i not in excluded and term is not None and term in idf:
                    vector[term] = max(1, round(IDF_TOKEN_SCALE * idf[term]))
            vectors.append(vector)
        return vectors

    def encode(self, texts: Sequence[str], kind: str = "doc", **kwargs) -> list[dict[str, int]]:
        """Integer impact vectors (term -> weight), ready for JsonVectorCollection or a query."""
        if self.card.is_words:
            if kind != "doc":
                raise InputError("the word channel's queries are weighted by the searched index's idf: search "
                                 "through pyserini.search.lucene --impact or csplade_pyserini.search", field="query_side")
            return self.encode_documents(texts, kwargs.get("max_length"), kwargs.get("max_tokens"),
                                         progress=kwargs.get("progress"))[0]
        return [self.to_impacts(ids, w) for ids, w in self.encode_weights(texts, kind, **kwargs)]

    def weight_files(self) -> dict[str, str | None]:
        """Content fingerprints of the card's adapter, logit bias and heads (None where absent)."""
        from csplade_pyserini.model.card import weight_fingerprints

        return weight_fingerprints(self.card, self.base_dir)

    def info(self) -> dict[str, Any]:
        """What an index needs to remember about the model that built it."""
        model = self.encoder.model
        dtype = self.card.runtime if model is None else str(next(model.parameters()).dtype).replace("torch.", "")
        return {"card": self.card.to_dict(), "dtype": dtype, "term_fingerprint": self.term_fingerprint(),
                "vocab_size": None if self.term_map is None else len(self.term_map), "weight_files": self.weight_files(),
                "toolkit": f"csplade-pyserini {__version__}"}
