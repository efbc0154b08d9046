"""Collections, topics and qrels: local files first, Pyserini names, ``ir_datasets`` ids when online.

Readers validate as they go and name the file, line and field of the first problem: a corpus line
without an id or text, an empty document, bytes that are not UTF-8, a duplicate id.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from csplade_pyserini.errors import InputError
from csplade_pyserini.paths import shared_path, topics_dir
from csplade_pyserini.textio import json_object, read_lines

logger = logging.getLogger(__name__)

# Pyserini topic names -> (topics file, qrels file) under Anserini's cache names.
TOPICS = {
    "dl19-passage": ("topics.dl19-passage.txt", "qrels.dl19-passage.txt"),
    "dl20": ("topics.dl20.txt", "qrels.dl20-passage.txt"),
    "dl20-passage": ("topics.dl20.txt", "qrels.dl20-passage.txt"),
    "msmarco-passage-dev-subset": ("topics.msmarco-passage.dev-subset.txt", "qrels.msmarco-passage.dev-subset.txt"),
}
BEIR_PUBLIC = ("trec-covid", "nfcorpus", "fiqa", "arguana", "webis-touche2020", "dbpedia-entity", "scidocs",
               "climate-fever", "scifact", "nq", "hotpotqa", "quora", "fever")
for _name in BEIR_PUBLIC:
    for _alias in (f"beir-v1.0.0-{_name}.test", f"beir-v1.0.0-{_name}-test"):
        TOPICS[_alias] = (f"topics.beir-v1.0.0-{_name}.test.tsv.gz", f"qrels.beir-v1.0.0-{_name}.test.txt")

PYSERINI_CACHE = Path.home() / ".cache" / "pyserini" / "topics-and-qrels"

# Local collections that ship with ../shared (name -> corpus path relative to shared/data, topics name).
LOCAL_COLLECTIONS = {
    "scifact": ("beir/scifact", "beir-v1.0.0-scifact.test"),
    "dl19-pool": ("msmarco-dl19-mini", "dl19-passage"),
}
IR_DATASETS = {"scifact": "beir/scifact/test", "dl19-pool": "msmarco-passage/trec-dl-2019/judged"}


def join_title(title: str | None, text: str | None) -> str:
    """Title and body as one passage, the way BEIR evaluations feed SPLADE models (the one place for it)."""
    title, text = (title or "").strip(), (text or "").strip()
    return f"{title} {text}".strip() if title else text


@dataclass(frozen=True)
class Document:
    docid: str
    title: str
    text: str

    @property
    def contents(self) -> str:
        return join_title(self.title, self.text)


def beir_file(folder: str | Path, part: str, split: str | None = None, required: bool = True) -> Path | None:
    """One file of a BEIR folder, by the names BEIR and ir_datasets exports use: ``corpus`` (corpus.jsonl
    [.gz]), ``queries`` (queries.jsonl[.gz] or queries.tsv), ``qrels`` (qrels/SPLIT.tsv). Every reader of
    a BEIR folder goes through here, so they all accept the same names and fail the same way."""
    folder = Path(folder)
    names = {"corpus": ["corpus.jsonl", "corpus.jsonl.gz"],
             "queries": ["queries.jsonl", "queries.jsonl.gz", "queries.tsv"],
             "qrels": [f"qrels/{split or 'test'}.tsv"]}[part]
    for name in names:
        if (folder / name).is_file():
            return folder / name
    if not required:
        return None
    if not folder.is_dir():
        raise InputError("BEIR folder does not exist", path=folder)
    raise InputError(f"no {' or '.join(names)} in this BEIR folder", path=folder, field=part)


def is_blank(text: str) -> bool:
    """No visible character: whitespace, control and format characters (zero-width spaces, BOMs) only."""
    import unicodedata

    return all(c.isspace() or unicodedata.category(c) in ("Cc", "Cf", "Zs", "Zl", "Zp") for c in text)


def corpus_file(path: str | Path) -> Path:
    """A corpus path may be the file or a BEIR folder (``corpus.jsonl``) or an MS MARCO folder."""
    path = Path(path)
    if path.is_dir():
        for name in ("corpus.jsonl", "corpus.jsonl.gz", "collection.tsv", "collection.tsv.gz"):
            if (path / name).exists():
                return path / name
        raise InputError("no corpus.jsonl or collection.tsv in this folder", path=path)
    if not path.exists():
        raise InputError("corpus file does not exist", path=path)
    return path


def read_corpus(path: str | Path, allow_empty: bool = False) -> Iterator[Document]:
    """BEIR JSONL (``_id``/``id``/``docid``, ``title``, ``text``/``contents``) or TSV (``id<TAB>text``)."""
    path = corpus_file(path)
    is_tsv = ".tsv" in path.suffixes
    seen: dict[str, int] = {}
    for number, line in read_lines(path):
        if not line.strip():
            continue
        if is_tsv:
            docid, sep, text = line.partition("\t")
            if not sep:
                raise InputError("expected 'id<TAB>text'", path=path, line=number, field="text")
            title = ""
        else:
            record = json_object(line, path, number)
            docid = next((record[k] for k in ("_id", "id", "docid") if k in record), None)
            if docid is None:
                raise InputError("missing document id", path=path, line=number, field="_id")
            text = record.get("text", record.get("contents"))
            if text is None:
                raise InputError("missing document text", path=path, line=number, field="text")
            title = record.get("title") or ""
            if not isinstance(text, str) or not isinstance(title, str):
                raise InputError("text and title must be strings", path=path, line=number, field="text")
        docid = str(docid).strip()
        if not docid or any(c.isspace() for c in docid):
            raise InputError(f"document id {docid!r} is empty or contains whitespace (TREC runs would break)",
                             path=path, line=number, field="_id" if not is_tsv else "id")
        if docid in seen:
            raise InputError(f"duplicate document id {docid!r} (first on line {seen[docid]})", path=path,
                             line=number, field="_id" if not is_tsv else "id")
        seen[docid] = number
        if is_blank(title) and is_blank(text) and not allow_empty:
            raise InputError(f"document {docid!r} is empty (pass --allow-empty to index it with no terms)",
                             path=path, line=number, field="text")
        yield Document(docid, title.strip(), text.strip())


# --- topics ----------------------------------------------------------------------------------------
def _topics_file(name: str) -> Path:
    base = topics_dir()
    if name in TOPICS and base is not None:
        candidate = base / TOPICS[name][0]
        if candidate.exists():
            return candidate
    cache = PYSERINI_CACHE / TOPICS[name][0] if name in TOPICS else None
    if cache is not None and cache.exists():
        return cache
    raise InputError(f"unknown topics {name!r}: not a file, and no offline copy under a known Pyserini name "
                     f"(set CSPLADE_TOPICS_DIR); known names: {', '.join(sorted(TOPICS))}")


def read_queries(path: Path) -> dict[str, str]:
    """``qid<TAB>text`` (optionally gzipped) or BEIR ``queries.jsonl`` (``_id``, ``text``)."""
    queries: dict[str, str] = {}
    jsonl = ".jsonl" in path.suffixes
    for number, line in read_lines(path):
        if not line.strip():
            continue
        if jsonl:
            record = json_object(line, path, number)
            qid, text = record.get("_id", record.get("id")), record.get("text")
            if qid is None:
                raise InputError("missing query id", path=path, line=number, field="_id")
            if text is None:
                raise InputError("missing query text", path=path, line=number, field="text")
        else:
            qid, sep, text = line.partition("\t")
            if not sep:
                raise InputError("expected 'qid<TAB>text'", path=path, line=number, field="text")
        qid = str(qid).strip()
        if not qid or any(c.isspace() for c in qid):
            raise InputError(f"query id {qid!r} is empty or contains whitespace (TREC runs would break)", path=path,
                             line=number, field="_id" if jsonl else "qid")
        if qid in queries:
            raise InputError(f"duplicate query id {qid!r}", path=path, line=number, field="qid")
        if not str(text).strip():
            raise InputError(f"query {qid!r} is empty", path=path, line=number, field="text")
        queries[qid] = str(text).strip()
    return queries


def load_topics(name_or_path: str | Path) -> dict[str, str]:
    """Topics by Pyserini name (``dl19-passage``, ``beir-v1.0.0-scifact.test``) or file path."""
    path = Path(name_or_path)
    if not path.is_file():
        path = _topics_file(str(name_or_path))
    return read_queries(path)


def qrels_file(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.is_file():
        return path
    name = str(name_or_path)
    base = topics_dir()
    if name in TOPICS and base is not None and (base / TOPICS[name][1]).exists():
        return base / TOPICS[name][1]
    if name in TOPICS and (PYSERINI_CACHE / TOPICS[name][1]).exists():
        return PYSERINI_CACHE / TOPICS[name][1]
    raise InputError(f"no qrels for {name!r}: not a file, and no offline copy under a known Pyserini name")


def load_qrels(name_or_path: str | Path) -> dict[str, dict[str, int]]:
    """TREC (``qid 0 docid rel``) or BEIR TSV with a header (``query-id corpus-id score``).

    The format is decided once per file (a BEIR header, else the first line's columns) and every line
    must follow it: a TREC line that lost its relevance column would otherwise read as a BEIR line
    with docid ``0``."""
    path = qrels_file(name_or_path)
    qrels: dict[str, dict[str, int]] = {}
    columns = None
    for number, line in read_lines(path):
        parts = line.split()
        if not parts:
            continue
        if columns is None:
            if parts[0] == "query-id":
                columns = 3
                continue
            columns = len(parts)
            if columns not in (3, 4):
                raise InputError(f"expected 'qid 0 docid relevance' or 'qid docid relevance', got {len(parts)} "
                                 "columns", path=path, line=number)
        if len(parts) != columns:
            raise InputError(f"expected {columns} columns like the file's first line, got {len(parts)}", path=path,
                             line=number)
        qid, docid, rel = (parts[0], parts[2], parts[3]) if columns == 4 else parts
        try:
            value = float(rel)
        except ValueError:
            raise InputError(f"relevance {rel!r} is not a number", path=path, line=number, field="relevance") from None
        if not value.is_integer():
            raise InputError(f"relevance {rel!r} is not an integer", path=path, line=number, field="relevance")
        judged = qrels.setdefault(qid, {})
        if docid in judged:
            raise InputError(f"query {qid!r} judges document {docid!r} twice (trec_eval refuses such qrels)",
                             path=path, line=number, field="docid")
        judged[docid] = int(value)
    return qrels


def topics_kind(name: str) -> str:
    """Which standard measure set applies: ``dl``, ``msmarco-dev`` or ``beir``."""
    lowered = str(name).lower()
    if "dl19" in lowered or "dl20" in lowered or "dl-20" in lowered:
        return "dl"
    if "msmarco" in lowered and "dev" in lowered:
        return "msmarco-dev"
    return "beir"


def local_collection(name: str) -> Path | None:
    """Corpus folder of a collection that ships with ``../shared`` (``scifact``, ``dl19-pool``)."""
    if name not in LOCAL_COLLECTIONS:
        return None
    path = shared_path("data", LOCAL_COLLECTIONS[name][0])
    return path if path is not None and path.exists() else None


def write_ir_datasets_corpus(dataset_id: str, out: Path) -> Path:
    """Materialise an ``ir_datasets`` corpus (online machines) as BEIR-style JSONL."""
    import ir_datasets

    from csplade_pyserini.atomic import atomic_file

    dataset = ir_datasets.load(dataset_id)
    target = out / "corpus.jsonl"
    with atomic_file(target) as handle:
        for doc in dataset.docs_iter():
            handle.write(json.dumps({"_id": doc.doc_id, "title": getattr(doc, "title", "") or "",
                                     "text": doc.text}, ensure_ascii=False) + "\n")
    return target
