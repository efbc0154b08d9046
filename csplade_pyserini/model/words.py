"""The word channel: BM25-shaped impacts of analysed words, with term frequencies read from the LM.

Why it exists. Matching on the LM's byte-level BPE pieces loses to matching on words: ``Ġcancer``,
``cancer``, ``Cancer`` and ``ĠCancer`` are four terms, and a word split differently in two texts does not
match at all. BM25 over SmolLM2's pieces scores well under BM25 over Lucene-analysed words on every
collection measured (``docs/zero-shot.md``). Learned weights then have to recover what the spelling lost,
and weights fitted on one domain do not transfer.

So the terms are words, analysed as Lucene's ``EnglishAnalyzer`` does for BM25 (lower case, Lucene's
English stop words removed, Porter stems), and a document term's impact is BM25's saturation

    impact(t, d) = tf' (k1 + 1) / (tf' + k1 (1 - b + b |d| / avgdl))

of a *contextual term frequency* ``tf' = sum over t's occurrences of exp(g(h))``, where ``h`` is the
LM's hidden state (layer ``tf_layer``) at the occurrence's last token and ``g`` a small learned head
(DeepCT's idea: the model says how much each occurrence counts). ``g = 0`` gives every occurrence 1, so
an untrained head is exactly BM25 (up to the integer rounding), and training moves away from BM25 only as
far as the validation queries reward. Words beyond the model's window keep weight 1. The query side is
inference-free: each query word, weighted by its count and the searched index's idf.

``avgdl`` is BM25's: the mean analysed length of the collection being indexed. The encode command and the
main job measure it over the whole corpus before encoding (:func:`average_length`) and record it in the
index's card; an encoder that sees one batch at a time (literal ``pyserini.encode``) falls back to the
card's value (the training corpora's), or to ``csplade,bm25_avgdl=N`` in the spec.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections import Counter
from typing import Iterable, Mapping, Sequence

import torch

from csplade_pyserini.errors import InputError
from csplade_pyserini.model.lexical import TokenHead

WORD_SCHEME = "words-porter-v1"
TF_HEAD_FILE = "tf_head.safetensors"
# Lucene's EnglishAnalyzer.ENGLISH_STOP_WORDS_SET, which Anserini's default BM25 analyzer removes.
STOP_WORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then there these "
    "they this to was will with".split())
_WORD = re.compile(r"[^\W_]+")  # runs of letters and digits; never whitespace, so always a valid term


class WordAnalyzer:
    """Lower case, letter/digit runs, stop words out, Porter stems (``snowballstemmer``'s ``porter``, the
    algorithm of Lucene's ``PorterStemFilter``)."""

    def __init__(self) -> None:
        import snowballstemmer

        self._stemmer = snowballstemmer.stemmer("porter")
        self._stem = functools.lru_cache(maxsize=200_000)(self._stem_word)

    def _stem_word(self, word: str) -> str:
        """Words of one or two characters are left as they are (Lucene's ``PorterStemmer`` does so; the
        Snowball implementation would turn ``s`` into an empty term)."""
        return word if len(word) <= 2 else (self._stemmer.stemWord(word) or word)

    def words(self, text: str) -> list[tuple[str, int]]:
        """``(term, end)`` for every kept word: its stem and the offset just past it in ``text``."""
        return [(self._stem(m.group()), m.end()) for m in _WORD.finditer(text.lower())
                if m.group() not in STOP_WORDS]

    def terms(self, text: str) -> list[str]:
        return [term for term, _ in self.words(text)]

    @staticmethod
    def fingerprint() -> str:
        """Identifies the term spelling, so indexes and query encoders can be matched."""
        return hashlib.sha256((WORD_SCHEME + "|" + " ".join(sorted(STOP_WORDS))).encode()).hexdigest()[:16]


def average_length(texts: Iterable[str], analyzer: WordAnalyzer | None = None) -> float:
    """BM25's ``avgdl``: the mean number of analysed words per text (0.1 precision, as cards record it)."""
    analyzer = analyzer or WordAnalyzer()
    lengths = [len(analyzer.words(text)) for text in texts]
    return round(sum(lengths) / len(lengths), 1) if lengths else 0.0


class TermFrequencyHead(TokenHead):
    """``g(h) = W2 gelu(W1 h + b1) + b2``: the log of how much one occurrence counts. Initialised to 0
    (``W2 = 0, b2 = 0``): every occurrence counts 1, the plain term frequency."""

    FILE = TF_HEAD_FILE
    FIELD = "tf_head"
    # exp(g) is kept within [e^-6, e^3]: one occurrence counts between 0.0025 and 20.
    LOW, HIGH = -6.0, 3.0

    def __init__(self, hidden_size: int, width: int = 64):
        super().__init__(hidden_size, width)
        torch.nn.init.zeros_(self.out.weight)
        torch.nn.init.zeros_(self.out.bias)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        """``[..., hidden]`` -> ``[...]`` occurrence counts ``exp(g)`` (float32)."""
        return torch.exp(self.logits(states).clamp(self.LOW, self.HIGH))


def bm25_saturation(tf: torch.Tensor, length: torch.Tensor, k1: float, b: float, avgdl: float) -> torch.Tensor:
    """BM25's term-frequency part ``tf (k1 + 1) / (tf + k1 (1 - b + b length / avgdl))``, element-wise."""
    return tf * (k1 + 1) / (tf + k1 * (1 - b + b * length / avgdl))


class WordDocument:
    """One analysed text: its term list (with repeats), which LM position each occurrence reads (-1: past
    the model's window), and the analysed length |d|."""

    __slots__ = ("terms", "positions")

    def __init__(self, terms: list[str], positions: list[int]):
        self.terms = terms
        self.positions = positions

    @property
    def length(self) -> int:
        return len(self.terms)


class WordEncoder(torch.nn.Module):
    """Documents -> ``{word: float impact}`` through the first ``tf_layer`` layers of the backbone.

    The decoder is cut to those layers and its final norm removed at construction, so a document costs
    ``tf_layer`` layers and no LM head: the head reads the raw output of layer ``tf_layer``."""

    def __init__(self, model, tokenizer, card, tf_head: TermFrequencyHead | None = None):
        super().__init__()
        from csplade_pyserini.model.sparse import decoder_and_head

        self.model = model
        self.tokenizer = tokenizer
        self.card = card
        self.analyzer = WordAnalyzer()
        self.tf_head = tf_head
        self.decoder = None
        if tf_head is not None:
            decoder, _ = decoder_and_head(model)
            if card.tf_layer > len(decoder.layers):
                raise InputError(f"tf_layer {card.tf_layer} is beyond the model's {len(decoder.layers)} layers",
                                 field="tf_layer")
            decoder.layers = decoder.layers[:card.tf_layer]
            decoder.norm = torch.nn.Identity()
            self.decoder = decoder

    # --- analysis ----------------------------------------------------------------------------------
    def analyse(self, texts: Sequence[str]) -> tuple[list[WordDocument], list[list[int]]]:
        """Each text's words and the token ids the model reads (prefix + text, at most ``max_doc_length``)."""
        prefix = self.card.doc_prefix or ""
        encoded = self.tokenizer([prefix + t for t in texts], add_special_tokens=False, truncation=True,
                                 max_length=self.card.max_doc_length, split_special_tokens=True,
                                 return_offsets_mapping=True)
        documents = []
        for text, offsets in zip(texts, encoded["offset_mapping"]):
            owner = [-1] * (len(prefix) + len(text) + 1)
            for position, (begin, end) in enumerate(offsets):
                for char in range(begin, min(end, len(owner))):
                    owner[char] = position
            words = self.analyzer.words(text)
            documents.append(WordDocument([w for w, _ in words], [owner[len(prefix) + end - 1] for _, end in words]))
        return documents, encoded["input_ids"]

    @torch.no_grad()  # not inference_mode: the training cache feeds these states to a head that learns
    def occurrence_states(self, sequences: Sequence[Sequence[int]], positions: Sequence[Sequence[int]],
                          device: str | torch.device = "cpu", max_tokens: int = 1024, progress=None) -> list[torch.Tensor]:
        """Layer ``tf_layer``'s state at each listed position (``[n, hidden]`` per text, -1 positions left out),
        in sorted batches of at most ``max_tokens`` padded tokens."""
        from csplade_pyserini.model.pooling import SHAPE_MULTIPLE, round_up

        out: list = [None] * len(sequences)
        order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        start = 0
        while start < len(order):
            width = round_up(max(1, len(sequences[order[start]])), SHAPE_MULTIPLE)
            chunk = order[start:start + max(1, max_tokens // width)]
            start += len(chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for row, i in enumerate(chunk):
                ids[row, :len(sequences[i])] = torch.tensor(sequences[i], dtype=torch.long)
                mask[row, :len(sequences[i])] = 1
            states = self.decoder(input_ids=ids.to(device), attention_mask=mask.to(device),
                                  use_cache=False).last_hidden_state
            for row, i in enumerate(chunk):
                keep = torch.tensor([p for p in positions[i] if p >= 0], dtype=torch.long, device=states.device)
                out[i] = states[row].index_select(0, keep).float().cpu()
            if progress is not None:
                progress.update(len(chunk))
        return out

    def occurrence_counts(self, document: WordDocument, states: torch.Tensor | None) -> torch.Tensor:
        """How much each occurrence counts: ``exp(g(h))`` inside the window, 1 past it (or without a head)."""
        counts = torch.ones(document.length)
        if self.tf_head is not None and states is not None and states.shape[0]:
            inside = torch.tensor([p >= 0 for p in document.positions], dtype=torch.bool)
            counts[inside] = self.tf_head(states).to(counts.dtype)
        return counts

    def impacts(self, document: WordDocument, counts: torch.Tensor) -> dict[str, float]:
        if not document.terms:
            return {}
        vocabulary = {term: i for i, term in enumerate(dict.fromkeys(document.terms))}
        index = torch.tensor([vocabulary[t] for t in document.terms], dtype=torch.long)
        tf = torch.zeros(len(vocabulary), dtype=counts.dtype).index_add_(0, index, counts)
        card = self.card
        weights = bm25_saturation(tf, torch.tensor(float(document.length)), card.bm25_k1, card.bm25_b, card.bm25_avgdl)
        return dict(zip(vocabulary, weights.tolist()))

    @torch.inference_mode()
    def encode_documents(self, texts: Sequence[str], device: str | torch.device = "cpu", max_tokens: int = 1024,
                         progress=None) -> tuple[list[dict[str, float]], int]:
        """Float impacts per text, and how many tokens the model read."""
        if self.card.tf_head is not None and self.tf_head is None:
            raise InputError("this word channel was loaded without its term-frequency head (a query-side runtime): "
                             "its documents need runtime=torch", field="runtime")
        documents, sequences = self.analyse(texts)
        states: list = [None] * len(texts)
        if self.tf_head is not None:
            states = self.occurrence_states(sequences, [d.positions for d in documents], device, max_tokens, progress)
        elif progress is not None:
            progress.update(len(texts))
        vectors = [self.impacts(d, self.occurrence_counts(d, s)) for d, s in zip(documents, states)]
        return vectors, sum(len(s) for s in sequences)

    def query_vectors(self, texts: Sequence[str], idf: Mapping[str, float], scale: float) -> list[dict[str, int]]:
        """The inference-free query side: each query word weighted ``round(scale x count x idf)`` (a repeated
        word counts as often as it occurs, as in a Lucene BM25 query); words the index lacks are dropped."""
        vectors = []
        for text in texts:
            counts = Counter(self.analyzer.terms(text))
            vectors.append({t: max(1, round(scale * c * idf[t])) for t, c in counts.items() if t in idf and idf[t] > 0})
        return vectors
