"""Build a Lucene impact index from JsonVectorCollection vectors with Anserini.

    python -m csplade_pyserini.index --input encode/scifact.csplade --index index/scifact.csplade

Vectors are validated first (integer weights, whitespace-free terms, unique ids), Anserini then runs
as ``python -m pyserini.index.lucene --collection JsonVectorCollection ... --impact --pretokenized``
into a temporary folder that replaces ``--index`` only if indexing succeeded. Index statistics and
the model's term-vocabulary fingerprint go into ``csplade-index.info`` inside the index (Lucene
ignores files it does not own), where the query encoder checks them.
"""

from __future__ import annotations

import argparse
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
from csplade_pyserini.cli import run_cli
from csplade_pyserini.errors import CspladeError, InputError
from csplade_pyserini.vectors.jsonvec import INDEX_INFO_NAME, read_info, read_vectors

logger = logging.getLogger(__name__)


def folder_size(path: str | Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def anserini_index_command(input_dir: Path, index_dir: Path, threads: int, pretokenized: bool = True) -> list[str]:
    command = [sys.executable, "-m", "pyserini.index.lucene", "--collection", "JsonVectorCollection",
               "--input", str(input_dir), "--index", str(index_dir), "--generator", "DefaultLuceneDocumentGenerator",
               "--threads", str(threads), "--impact"]
    return command + (["--pretokenized"] if pretokenized else [])


def run_anserini(command: list[str], log_path: Path) -> dict[str, int]:
    """Run the indexer, keep its log, and return its counters (indexed, empty, errors...)."""
    with open(log_path, "w", encoding="utf-8") as log:
        result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, text=True)
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


def build_index(input_dir: str | Path, index_dir: str | Path, threads: int = 1, validate: bool = True) -> dict:
    input_dir, index_dir = Path(input_dir), Path(index_dir)
    if not input_dir.is_dir():
        raise InputError("vector folder does not exist", path=input_dir)
    expected = None
    if validate:
        expected = sum(1 for _ in tqdm(read_vectors(input_dir), desc="validate vectors", unit="doc",
                                       dynamic_ncols=True))
    start = time.perf_counter()
    with atomic_dir(index_dir) as tmp:
        log_path = tmp.parent / f".{index_dir.name}.anserini.log"
        counters = run_anserini(anserini_index_command(input_dir, tmp, threads), log_path)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m csplade_pyserini.index", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="JsonVectorCollection folder")
    parser.add_argument("--index", required=True, help="output index folder")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--no-validate", action="store_true", help="skip the vector check (large collections)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    stats = build_index(args.input, args.index, args.threads, validate=not args.no_validate)
    print(json.dumps({k: v for k, v in stats.items() if k != "anserini"}, indent=2))
    return 0


if __name__ == "__main__":
    run_cli(main)
