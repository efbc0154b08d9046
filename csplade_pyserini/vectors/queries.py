"""Pyserini's pre-encoded query format, as ``csplade_pyserini.encode_queries`` writes it.

Each line is ``{"id": qid, "contents": query text, "vector": {term: int}}``: the records Pyserini's own
``CachedDataQueryEncoder`` reads when ``--encoder`` names a ``.jsonl`` file (it looks vectors up by the query
text). Beside the file, ``FILE.info.json`` records the model that encoded it, which the query encoders check
against the searched index's model.
"""

from __future__ import annotations

from pathlib import Path

from csplade_pyserini.vectors.jsonvec import INFO_SUFFIX


def queries_info_path(path: str | Path) -> Path:
    """``queries.jsonl`` -> ``queries.jsonl.info.json``: the model that encoded a pre-encoded query file."""
    path = Path(path)
    return path.with_name(path.name + INFO_SUFFIX)


def read_encoded_queries(path: str | Path) -> dict[str, dict[str, int]]:
    """Query text -> vector from a pre-encoded file; a bad line is named (file, line, field)."""
    from csplade_pyserini.textio import read_jsonl
    from csplade_pyserini.vectors.jsonvec import check_vector

    vectors: dict[str, dict[str, int]] = {}
    for number, record in read_jsonl(path, required=("contents", "vector")):
        check_vector(record["vector"], path, number)
        vectors[str(record["contents"]).strip()] = record["vector"]
    return vectors
