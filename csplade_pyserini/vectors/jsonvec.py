"""Anserini's ``JsonVectorCollection``: ``{"id", "contents", "vector": {term: int}}`` per line.

The writer shards its output, validates every vector before it is written (integer weights, no
whitespace in terms) and builds the folder under a temporary name, so a failed run leaves nothing
that Anserini could half-index. A small ``csplade-vectors.info`` file records which model and term
vocabulary produced the vectors; Anserini ignores it (it only reads ``.json``/``.jsonl``/``.gz``).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any, Iterator, Mapping

from csplade_pyserini.atomic import atomic_dir, atomic_file
from csplade_pyserini.errors import InputError
from csplade_pyserini.textio import read_jsonl

logger = logging.getLogger(__name__)

INFO_SUFFIX = ".info.json"
INDEX_INFO_NAME = "csplade-index.info"  # inside an index folder: Lucene ignores files it does not own


def info_path(folder: str | Path) -> Path:
    folder = Path(folder)
    return folder.with_name(folder.name + INFO_SUFFIX)


def shard_range(total: int, shard_id: int, shard_num: int) -> range:
    """The documents of shard ``shard_id`` of ``shard_num``, exactly as Pyserini's ``--shard-id/--shard-num``
    split a collection: ``total // shard_num`` consecutive documents each, the last shard taking the rest."""
    if shard_num < 1 or not 0 <= shard_id < shard_num:
        raise InputError(f"shard {shard_id} of {shard_num}: need 0 <= shard-id < shard-num", field="shard_id")
    size = total // shard_num
    start = shard_id * size
    return range(start, total if shard_id == shard_num - 1 else min(start + size, total))


def part_name(shard_id: int, shard_num: int) -> str:
    """The sub-folder a shard writes: Anserini walks an input folder recursively, so the parts of a
    sharded encoding index as one collection (and it reads EVERY file it finds: a part's info file
    lives beside the collection folder, :func:`part_info_path`)."""
    return f"part-{shard_id:05d}-of-{shard_num:05d}"


def part_info_path(folder: str | Path, shard_id: int, shard_num: int) -> Path:
    folder = Path(folder)
    return folder.with_name(f"{folder.name}.{part_name(shard_id, shard_num)}{INFO_SUFFIX}")


def check_docid(docid: Any, path: str | Path | None = None, line: int | None = None) -> str:
    """A document id for a TREC run: non-empty, no whitespace (a run line would get 7 columns)."""
    docid = str(docid)
    if not docid.strip() or any(c.isspace() for c in docid):
        raise InputError(f"document id {docid!r} is empty or contains whitespace (TREC runs would break)",
                         path=path, line=line, field="id")
    return docid


def check_vector(vector: Mapping[str, Any], path: str | Path | None = None, line: int | None = None) -> None:
    from csplade_pyserini.vectors.quantize import MAX_IMPACT

    total = 0
    for term, weight in vector.items():
        if not isinstance(term, str) or not term or any(c.isspace() for c in term):
            raise InputError(f"term {term!r} is empty or contains whitespace (--pretokenized would split it)",
                             path=path, line=line, field="vector")
        if isinstance(weight, bool) or not isinstance(weight, int):
            raise InputError(f"weight of term {term!r} is {weight!r}; Anserini needs integers (quantize first, "
                             f"it would truncate floats)", path=path, line=line, field="vector")
        if weight <= 0:
            raise InputError(f"weight of term {term!r} is {weight}; impacts must be positive",
                             path=path, line=line, field="vector")
        total += weight
    if total > MAX_IMPACT:
        raise InputError(f"the weights add up to {total}, beyond Lucene's integer impacts ({MAX_IMPACT}): Lucene "
                         "would drop or wrap them", path=path, line=line, field="vector")


def vector_line(docid: str, contents: str, vector: Mapping[str, int]) -> str:
    """One JsonVectorCollection record (``id``, ``contents``, ``vector``) as a JSON line."""
    return json.dumps({"id": docid, "contents": contents, "vector": dict(vector)}, ensure_ascii=False) + "\n"


class JsonVectorWriter:
    """Write a JsonVectorCollection folder atomically, ``docs-00000.jsonl`` ... one shard per ``shard_size``."""

    def __init__(self, out_dir: str | Path, shard_size: int = 100_000, info: dict[str, Any] | None = None,
                 overwrite: bool = True, info_file: str | Path | None = None):
        self.out_dir = Path(out_dir)
        self.info_file = Path(info_file) if info_file is not None else None
        self.shard_size = shard_size
        self.info = dict(info or {})
        self.overwrite = overwrite
        self.count = 0
        self.empty = 0
        self.postings = 0
        self._ids: set[str] = set()
        self._handle = None
        self._ctx = None
        self._tmp: Path | None = None

    def __enter__(self) -> "JsonVectorWriter":
        self._ctx = atomic_dir(self.out_dir, overwrite=self.overwrite)
        self._tmp = self._ctx.__enter__()
        return self

    def _next_shard(self) -> None:
        if self._handle is not None:
            self._handle.close()
        shard = self.count // self.shard_size
        self._handle = open(self._tmp / f"docs-{shard:05d}.jsonl", "w", encoding="utf-8")

    def write(self, docid: str, contents: str, vector: Mapping[str, int]) -> None:
        check_docid(docid)
        if docid in self._ids:
            raise InputError(f"duplicate document id {docid!r}", field="id")
        check_vector(vector)
        self._ids.add(docid)
        if self.count % self.shard_size == 0:
            self._next_shard()
        if not vector:
            self.empty += 1
        self.postings += len(vector)
        self._handle.write(vector_line(docid, contents, vector))
        self.count += 1

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self._handle is not None:
            self._handle.close()
        suppress = self._ctx.__exit__(exc_type, exc, tb)
        if exc_type is None:
            if self.empty:
                logger.warning("%d of %d documents have an empty vector; Anserini will skip them",
                               self.empty, self.count)
            info = {**self.info, "documents": self.count, "empty_vectors": self.empty,
                    "postings": self.postings}
            with atomic_file(self.info_file or info_path(self.out_dir)) as handle:
                json.dump(info, handle, indent=2, sort_keys=True)
                handle.write("\n")
        return suppress


def is_vector_folder(folder: str | Path) -> bool:
    """True for a folder this toolkit wrote: only ``docs-NNNNN.jsonl`` files and sharded ``part-*`` folders
    of them (an empty folder too). Only such a folder may be replaced by ``--overwrite``."""
    folder = Path(folder)
    if not folder.is_dir():
        return False
    for entry in folder.iterdir():
        if entry.is_dir() and entry.name.startswith("part-"):
            if not is_vector_folder(entry):
                return False
        elif not (entry.is_file() and re.fullmatch(r"docs-\d{5}\.jsonl", entry.name)):
            return False
    return True


def vector_files(folder: str | Path) -> list[Path]:
    """Every vector file under ``folder``, its sharded parts' sub-folders included (Anserini walks them too)."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name.endswith((".json", ".jsonl"))
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    if not files:
        raise InputError("no .json/.jsonl vector files found", path=folder)
    return files


def read_vectors(folder: str | Path) -> Iterator[dict[str, Any]]:
    """Read and validate every line of a vector folder (file, line and field named on error)."""
    seen: dict[str, tuple[Path, int]] = {}
    for path in vector_files(folder):
        for number, record in read_jsonl(path, required=("id", "vector")):
            if not isinstance(record["vector"], dict):
                raise InputError("must be an object of term: weight", path=path, line=number, field="vector")
            check_vector(record["vector"], path=path, line=number)
            docid = check_docid(record["id"], path=path, line=number)
            if docid in seen:
                first = seen[docid]
                raise InputError(f"duplicate id {docid!r} (first at {first[0]}:{first[1]})", path=path,
                                 line=number, field="id")
            seen[docid] = (path, number)
            yield record


def read_info(folder: str | Path) -> dict[str, Any] | None:
    """The vectors' info: beside the folder, or (shards encoded one by one) the first part's."""
    path = info_path(folder)
    if path.exists():
        return json.loads(path.read_text(encoding="utf-8"))
    folder = Path(folder)
    parts = sorted(folder.parent.glob(f"{folder.name}.part-*{INFO_SUFFIX}"))
    return json.loads(parts[0].read_text(encoding="utf-8")) if parts else None
