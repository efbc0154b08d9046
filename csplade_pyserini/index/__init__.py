"""Building indexes: a Lucene impact index from JsonVectorCollection vectors with Anserini, a FAISS flat
index from dense vectors, and their statistics. The command, ``python -m csplade_pyserini.index``, is
``__main__.py``.

Vectors are validated first (integer weights, whitespace-free terms, unique ids), Anserini then runs
as ``python -m pyserini.index.lucene --collection JsonVectorCollection ... --impact --pretokenized``
into a temporary folder that replaces the index only if indexing succeeded. Index statistics and
the model's term-vocabulary fingerprint go into ``csplade-index.info`` inside the index (Lucene
ignores files it does not own), where the query encoder checks them.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from tqdm import tqdm

from csplade_pyserini.atomic import atomic_dir
from csplade_pyserini.errors import CspladeError, InputError
from csplade_pyserini.vectors.jsonvec import INDEX_INFO_NAME, read_info, read_vectors

logger = logging.getLogger(__name__)


def folder_size(path: str | Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def write_faiss_index(vectors, docids: list[str], index_dir: str | Path, info: dict | None = None) -> dict:
    """Float vectors (``[documents, dimension]``, one row per docid) -> a FAISS ``IndexFlatIP`` and its
    ``docid`` list, the layout ``pyserini.encode --to-faiss`` writes and Pyserini's ``FaissSearcher`` reads;
    ``info`` goes beside them as ``csplade-index.info``. The folder appears whole or not at all."""
    import faiss
    import numpy as np

    matrix = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
    if matrix.ndim != 2 or matrix.shape[0] != len(docids):
        raise InputError(f"{matrix.shape} vectors for {len(docids)} document ids", path=index_dir)
    with atomic_dir(Path(index_dir)) as tmp:
        flat = faiss.IndexFlatIP(matrix.shape[1])
        flat.add(matrix)
        (tmp / "docid").write_text("".join(f"{d}\n" for d in docids), encoding="utf-8")
        if info is not None:
            (tmp / INDEX_INFO_NAME).write_text(json.dumps({**info, "dimension": matrix.shape[1]}, indent=2),
                                               encoding="utf-8")
        faiss.write_index(flat, str(tmp / "index"))
    return {"size_bytes": folder_size(index_dir), "documents": len(docids), "dimension": matrix.shape[1]}


def anserini_index_command(input_dir: Path, index_dir: Path, threads: int, pretokenized: bool = True) -> list[str]:
    command = [sys.executable, "-m", "pyserini.index.lucene", "--collection", "JsonVectorCollection",
               "--input", str(input_dir), "--index", str(index_dir), "--generator", "DefaultLuceneDocumentGenerator",
               "--threads", str(threads), "--impact"]
    return command + (["--pretokenized"] if pretokenized else [])


def die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the parent dies (a killed ``index`` must not leave the
    Anserini JVM running as an orphan). Linux only; elsewhere a no-op."""
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    except OSError:
        pass


def run_anserini(command: list[str], log_path: Path) -> dict[str, int]:
    """Run the indexer, keep its log, and return its counters (indexed, empty, errors...)."""
    with open(log_path, "w", encoding="utf-8") as log:
        result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, text=True,
                                preexec_fn=die_with_parent)
    text = log_path.read_text(encoding="utf-8", errors="replace")
    counters = {name: int(value) for name, value in re.findall(r"- (\w+):\s+(\d+)\s*$", text, flags=re.M)}
    if result.returncode != 0 or "Exception" in text or counters.get("errors", 0):
        tail = "\n".join(text.splitlines()[-15:])
        raise CspladeError(f"Anserini indexing failed (exit {result.returncode}); log {log_path}:\n{tail}")
    return counters


def index_statistics(index_dir: str | Path) -> dict[str, float]:
    """Documents, unique terms, postings, impact mass and size on disk of an impact index."""
    from pyserini.index.lucene import LuceneIndexReader

    reader = LuceneIndexReader(str(index_dir))
    stats = reader.stats()
    postings = 0
    for term in reader.terms():
        postings += term.df
    documents = stats["documents"]
    return {"documents": documents, "unique_terms": stats["unique_terms"], "postings": postings,
            "total_impact": stats["total_terms"], "avg_terms_per_doc": postings / max(1, documents),
            "size_bytes": folder_size(index_dir)}


def check_complete(input_dir: Path) -> None:
    """Refuse vectors that an encode is still writing, or that a killed one left half-written: our own
    encoders rename their output into place when done (and lock it meanwhile); the literal
    ``pyserini.encode`` marks its output partial until it succeeds (the start-up hook's patch)."""
    from csplade_pyserini.integration.patches import PARTIAL_MARKER

    partial = sorted(input_dir.rglob(PARTIAL_MARKER))
    if partial:
        raise InputError("the vectors are incomplete: an encode is still writing them, or was killed before it "
                         "finished (delete the folder and encode again)", path=partial[0].parent)
    lock = input_dir.with_name(input_dir.name + ".lock")
    if lock.exists():
        raise InputError("an encode is writing these vectors right now (or was killed: remove the lock file)",
                         path=lock)


def build_index(input_dir: str | Path, index_dir: str | Path, threads: int = 1, validate: bool = True) -> dict:
    input_dir, index_dir = Path(input_dir), Path(index_dir)
    if not input_dir.is_dir():
        raise InputError("vector folder does not exist", path=input_dir)
    check_complete(input_dir)
    expected = None
    if validate:
        expected = sum(1 for _ in tqdm(read_vectors(input_dir), desc="validate vectors", unit="doc",
                                       dynamic_ncols=True))
    start = time.perf_counter()
    with atomic_dir(index_dir) as tmp:
        log_path = tmp.parent / f".{index_dir.name}.{os.getpid()}.anserini.log"
        counters = run_anserini(anserini_index_command(input_dir, tmp, threads), log_path)
        if not any(tmp.glob("segments_*")):  # Anserini can exit 0 when the JVM could not write its files
            raise CspladeError(f"Anserini wrote no complete index (no segments file; log {log_path}): the disk "
                               "is probably full, or a file-size limit (ulimit -f) was reached")
        os.unlink(log_path)
        stats = index_statistics(tmp)
        stats["index_seconds"] = time.perf_counter() - start
        stats["anserini"] = counters
        if expected is not None and stats["documents"] + counters.get("empty", 0) != expected:
            raise CspladeError(f"{input_dir}: {expected} vectors but Anserini indexed {stats['documents']} "
                               f"(+{counters.get('empty', 0)} empty)")
        info = {**(read_info(input_dir) or {}), "index": stats, "vectors": str(input_dir)}
        (tmp / INDEX_INFO_NAME).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    logger.info("indexed %d documents (%d unique terms, %.1f terms/doc, %.1f MB) into %s", stats["documents"],
                stats["unique_terms"], stats["avg_terms_per_doc"], stats["size_bytes"] / 2**20, index_dir)
    return stats


def is_index_folder(folder: str | Path) -> bool:
    """An index this toolkit built (its info file is inside): the only kind ``--overwrite`` replaces."""
    return (Path(folder) / INDEX_INFO_NAME).is_file()
