"""Repair a run that is well formed but inconsistent: order, duplicates, ranks, depth and tag."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from csplade_pyserini.runs.format import Hit, by_topic, check_tag, rank_hits, read_run, write_run

logger = logging.getLogger(__name__)


def fix_hits(hits: list[Hit], depth: int | None = None) -> dict[str, list[Hit]]:
    """Per topic: score descending then docid descending (trec_eval's order), each docid once (its highest-scoring line),
    ranks 1..n, at most ``depth`` lines."""
    return {qid: rank_hits(topic, depth) for qid, topic in by_topic(hits).items()}


def fix_run(path: str | Path, output: str | Path, depth: int | None = None, tag: str | None = None) -> int:
    """Write the repaired run atomically; the tag defaults to the first line's. Returns the line count.

    Lines that cannot be parsed are not guessed at: they raise :class:`RunFileError` and nothing is written.
    """
    hits = read_run(path)
    tags = Counter(hit.tag for hit in hits)
    tag = check_tag(tag) if tag is not None else hits[0].tag
    if len(tags) > 1:
        logger.warning("%s has %d tags (%s); writing all lines with tag %r", path, len(tags),
                       ", ".join(sorted(tags)), tag)
    topics = fix_hits(hits, depth)
    dropped = len(hits) - sum(len(topic) for topic in topics.values())
    if dropped:
        logger.info("dropped %d duplicate or too-deep lines", dropped)
    return write_run(output, topics, tag)
