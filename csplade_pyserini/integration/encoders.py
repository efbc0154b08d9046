"""Pyserini ``DocumentEncoder`` / ``QueryEncoder`` classes backed by :class:`CspladeModel`.

Registered by the start-up hook, so ``--encoder csplade[:MODEL]`` works in ``pyserini.encode`` and
``pyserini.search.lucene --impact`` (integer impacts: Anserini truncates floats), and ``--encoder
csplade-dense[:MODEL]`` in ``pyserini.encode ... --to-faiss`` and ``pyserini.search.faiss`` (float32 vectors
for a FAISS inner-product index).
"""

from __future__ import annotations

import itertools
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from pyserini.encode import DocumentEncoder, QueryEncoder

from csplade_pyserini.errors import InputError, VocabularyMismatchError
from csplade_pyserini.model.encoder import CspladeModel
from csplade_pyserini.vectors.jsonvec import INDEX_INFO_NAME

logger = logging.getLogger(__name__)

MIN_SHARED_TERMS = 0.99


@dataclass(frozen=True)
class EncodeCommand:
    """What the user typed to ``python -m pyserini.encode``, as far as an encoder must know it: the corpus
    (collection statistics), its fields, and ``--max-length`` of the ``encoder`` group only if typed
    (Pyserini passes its default, 256, to every encode call either way)."""

    corpus: str | None
    fields: list[str]
    max_length: int | None


def pyserini_encode_command(argv: Sequence[str]) -> EncodeCommand | None:
    """The :class:`EncodeCommand` when this process is ``python -m pyserini.encode``, else None."""
    parts = Path(argv[0]).parts if argv else ()
    if len(parts) < 3 or parts[-3:] != ("pyserini", "encode", "__main__.py"):
        return None
    groups = ("input", "output", "encoder")
    group, corpus, fields, max_length = None, None, ["text"], None  # Pyserini's default input fields
    for i, arg in enumerate(argv[1:], start=1):
        value = argv[i + 1] if i + 1 < len(argv) else None
        if arg in groups:
            group = arg
        elif group == "input" and arg == "--corpus" and value is not None:
            corpus = value
        elif group == "input" and arg == "--fields":
            fields = list(itertools.takewhile(lambda f: not f.startswith("--") and f not in groups, argv[i + 1:]))
        elif group == "encoder" and (arg == "--max-length" or arg.startswith("--max-length=")):
            text = arg.split("=", 1)[1] if "=" in arg else value
            try:
                max_length = int(text)
            except (TypeError, ValueError):
                raise InputError(f"--max-length wants a positive integer, got {text!r}", field="max_length") from None
    return EncodeCommand(corpus, fields, max_length)


def collection_texts(corpus: str, fields: Sequence[str]) -> list[str]:
    """The texts ``pyserini.encode`` will hand the encoder: the title joined when ``title`` is a field."""
    from csplade_pyserini.datasets import read_corpus

    with_title = "title" in fields
    return [d.contents if with_title else d.text for d in read_corpus(corpus, allow_empty=True)]


class CspladeDocumentEncoder(DocumentEncoder):
    def __init__(self, model_name: str = "csplade", device: str = "cpu", **_ignored):
        import sys

        self.model = CspladeModel.from_spec(model_name, device=str(device))
        self.model.require_documents()
        command = pyserini_encode_command(sys.argv)
        if command is not None and command.max_length is not None:  # typed: overrides the card, as in our encode
            self.model = self.model.with_card(max_doc_length=command.max_length)
        # The word channel's avgdl is a statistic of the whole collection, which pyserini.encode never shows
        # an encoder: read it from the command's own --corpus (every shard then sees the same value).
        if command is not None and command.corpus and self.model.card.is_words:
            try:
                texts = collection_texts(command.corpus, command.fields)
            except (InputError, OSError) as error:
                logger.warning("cannot read %s for its average length (%s): the card's bm25_avgdl %.1f is used",
                               command.corpus, error, self.model.card.bm25_avgdl)
            else:
                self.model = self.model.for_collection(texts, model_name)

    def document_texts(self, texts: Sequence[str], titles: Sequence[str | None] | None) -> list[str]:
        """The texts to encode: titles joined, empty documents refused. The length is the model card's
        ``max_doc_length``: Pyserini passes its ``--max-length`` (default 256) to every call whether typed or
        not, so the value passed is not used; a ``--max-length`` typed on the command line overrides the card
        (read when the encoder is built), as ``csplade,max_doc_length=N`` does."""
        from csplade_pyserini.datasets import is_blank, join_title

        if titles is not None:
            texts = [join_title(title, text) for title, text in zip(titles, texts)]
        blank = [i for i, text in enumerate(texts) if is_blank(text)]
        if blank:
            raise InputError(f"{len(blank)} empty document(s) in this batch (the {blank[0] + 1}th first); "
                             "csplade_pyserini.encode names them, or pass --allow-empty there")
        return list(texts)

    def encode(self, texts: Sequence[str], titles: Sequence[str | None] | None = None, max_length: int | None = None,
               **_ignored) -> list[dict[str, int]]:
        return self.model.encode(self.document_texts(texts, titles), kind="doc")


# Dense models built in this process by pyserini.encode: the FAISS writer patch reads their dimension and
# model record from here (Pyserini builds its writer with --dimension, default 768, before any vector exists).
ACTIVE_DENSE_MODELS: list[CspladeModel] = []


class CspladeDenseDocumentEncoder(CspladeDocumentEncoder):
    """``--encoder csplade-dense[:MODEL]`` in ``pyserini.encode``: one float32 vector per document."""

    def __init__(self, model_name: str = "csplade-dense", device: str = "cpu", **_ignored):
        super().__init__(model_name, device)
        self.model._require("dense")
        ACTIVE_DENSE_MODELS.append(self.model)

    def encode(self, texts: Sequence[str], titles: Sequence[str | None] | None = None, max_length: int | None = None,
               **_ignored):
        return self.model.encode_dense(self.document_texts(texts, titles), kind="doc")


class CspladeQueryEncoder(QueryEncoder):
    def __init__(self, encoder_name: str = "csplade", device: str = "cpu", **_ignored):
        super().__init__()
        self.has_model = True
        self.model = CspladeModel.from_spec(encoder_name, device=str(device))
        self._cache: dict[str, dict[str, int]] = {}
        self._idf: Mapping[str, float] | None = None
        self._attached: str | None = None  # the index checked last: the hook's patch and our search both attach

    def attach_index(self, index_dir: str | Path, idf: Mapping[str, float], info: dict | None = None) -> None:
        """Bind the encoder to the index it searches: refuse an index built with another vocabulary or by a
        model whose query side differs (:func:`check_index_compatibility`), and keep the index's per-term idf
        (Pyserini's ``LuceneImpactSearcher.idf``), which the inference-free query side (card ``query_side:
        idf-tokens``) weights query tokens with. ``info``: the model record of a vector folder (Seismic)."""
        if self._attached == str(index_dir) and self._idf is idf:
            return
        check_index_compatibility(index_dir, idf.keys(), term_fingerprint=self.model.term_fingerprint(),
                                  card=self.model.card, weight_files=self.model.weight_files(),
                                  known_terms=self.model.known_terms(), source=self.model.card.backbone,
                                  info=info)
        self._idf = idf
        self._attached = str(index_dir)

    def _encode_many(self, texts: list[str], progress=None) -> list[dict[str, int]]:
        if self.model.card.query_side == "idf-tokens":
            if self._idf is None:
                raise InputError("query_side idf-tokens weights query tokens by the searched index's idf: search "
                                 "through pyserini.search.lucene --impact or csplade_pyserini.search", field="query_side")
            vectors = self.model.idf_token_vectors(texts, self._idf)
            if progress is not None:
                progress.update(len(texts))
            return vectors
        return self.model.encode(texts, kind="query", progress=progress)

    def encode(self, text: str, **_ignored) -> dict[str, int]:
        if text not in self._cache:
            self._cache[text] = self._encode_many([text])[0]
        return self._cache[text]

    def encode_batch(self, texts: Sequence[str], progress=None) -> list[dict[str, int]]:
        """Encode many queries at once (sorted batches) and remember them for :meth:`encode`."""
        todo = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if todo:
            for text, vector in zip(todo, self._encode_many(todo, progress=progress)):
                self._cache[text] = vector
        return [self._cache[t] for t in texts]


class CspladeDenseQueryEncoder(CspladeQueryEncoder):
    """``--encoder csplade-dense[:MODEL]`` in ``pyserini.search.faiss``: one float32 vector per query (the
    sparse encoder's cache, another output). Pyserini's own options for its dense encoders (``--pooling``,
    ``--l2-norm``, ``--tokenizer``, the query prefix) are ignored: the model card holds them, as it did when
    the index was built."""

    def __init__(self, encoder_dir: str = "csplade-dense", device: str = "cpu", **_ignored):
        super().__init__(encoder_dir, device)
        self.model._require("dense")

    def _encode_many(self, texts: list[str], progress=None):
        return list(self.model.encode_dense(texts, kind="query", progress=progress))

    def encode_batch(self, texts: Sequence[str], progress=None):
        import numpy as np

        return np.stack(super().encode_batch(texts, progress=progress))

    def attach_index(self, index_dir: str | Path, idf=None, info: dict | None = None) -> None:
        """Refuse a FAISS index written by another model (its record, written by the encode patch, differs
        in the query side) or of another dimension."""
        check_index_compatibility(index_dir, (), term_fingerprint=None, card=self.model.card,
                                  weight_files=self.model.weight_files(), known_terms=None,
                                  source=self.model.card.backbone, info=info)


class PreEncodedQueryEncoder(QueryEncoder):
    """Vectors from a file written by ``csplade_pyserini.encode_queries`` (Pyserini's pre-encoded format),
    checked against the index like a live encoder through the file's ``.info.json``."""

    def __init__(self, path: str | Path):
        from csplade_pyserini.vectors.queries import queries_info_path, read_encoded_queries

        super().__init__()
        self.path = Path(path)
        self.vectors = read_encoded_queries(self.path)
        info_file = queries_info_path(self.path)
        self.info = json.loads(info_file.read_text(encoding="utf-8")) if info_file.exists() else None

    def encode(self, text: str, **_ignored) -> dict[str, int]:
        try:
            return self.vectors[text.strip()]
        except KeyError:
            raise InputError(f"query {text[:60]!r} is not in the pre-encoded query file (encoded for other "
                             "topics?); encode these topics with csplade_pyserini.encode_queries",
                             path=self.path) from None

    def encode_batch(self, texts: Sequence[str], progress=None) -> list[dict[str, int]]:
        vectors = [self.encode(t) for t in texts]
        if progress is not None:
            progress.update(len(texts))
        return vectors

    def attach_index(self, index_dir: str | Path, idf: Mapping[str, float], info: dict | None = None) -> None:
        """Refuse an index whose model differs from the one that encoded the file (see the live encoder's)."""
        if self.info is None:
            logger.warning("%s has no .info.json: its vectors cannot be checked against the index's model", self.path)
            return
        from csplade_pyserini.model.card import ModelCard

        check_index_compatibility(index_dir, idf.keys(), term_fingerprint=self.info.get("term_fingerprint"),
                                  card=ModelCard.from_dict(self.info["card"], source=self.path),
                                  weight_files=self.info.get("weight_files", {}), known_terms=None,
                                  source=str(self.path), info=info)


def query_encoder(reference: str | Path, device: str = "cpu") -> QueryEncoder:
    """The query encoder an ``--encoder`` value names: a pre-encoded query file (``encode_queries``), or a
    csplade spec. The one rule behind our search, Seismic and the Pyserini patch."""
    if Path(reference).is_file():
        return PreEncodedQueryEncoder(reference)
    return CspladeQueryEncoder(str(reference), device=device)


def is_preencoded_queries(reference) -> bool:
    """A pre-encoded query file that ``csplade_pyserini.encode_queries`` wrote (it has its info file)."""
    from csplade_pyserini.vectors.queries import queries_info_path

    return isinstance(reference, (str, Path)) and Path(reference).is_file() and queries_info_path(reference).exists()


def check_index_compatibility(index_dir: str | Path, index_terms: Iterable[str], *, term_fingerprint: str | None,
                              card, weight_files: dict, known_terms: set[str] | None, source: str,
                              info: dict | None = None) -> None:
    """Refuse an index built with another vocabulary (every query term would silently miss) or by a model
    whose query side differs (same vocabulary, other vectors: the scores would silently mean nothing).
    ``info``: the model record of a vector folder (Seismic); else the Lucene index's own record is read."""
    from csplade_pyserini.model.card import card_differences

    index_dir = Path(index_dir)
    info_path = index_dir / INDEX_INFO_NAME
    if info is not None or info_path.exists():
        info = info if info is not None else json.loads(info_path.read_text(encoding="utf-8"))
        theirs = info.get("term_fingerprint")
        if theirs and term_fingerprint and theirs != term_fingerprint:
            raise VocabularyMismatchError(
                f"{info_path}: the index was built with term vocabulary {theirs} "
                f"({info.get('card', {}).get('backbone')}), the queries use {term_fingerprint} "
                f"({source}); encode queries with the model that built the index")
        if "card" in info:
            differences = card_differences(info["card"], info.get("weight_files", {}), card, weight_files)
            if differences:
                raise VocabularyMismatchError(
                    f"{info_path}: the query encoder is not the model that built the index: "
                    + "; ".join(differences) + ". Search with the encoder spec the index was built with")
    if known_terms is None:
        return
    terms = list(index_terms)
    if not terms:
        return
    foreign = [t for t in terms if t not in known_terms]
    if len(foreign) > (1 - MIN_SHARED_TERMS) * len(terms):
        raise VocabularyMismatchError(
            f"{index_dir}: {len(foreign)} of {len(terms)} index terms are not in the query encoder's "
            f"vocabulary ({source}), e.g. {foreign[:5]}; the index was built by another "
            f"model or tokenizer")
