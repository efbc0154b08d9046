"""Reading and writing TREC run files: six whitespace-separated columns ``qid Q0 docid rank score tag``.

Reading is strict and located (every bad line is named by its number) because a silently misparsed run
gives silently wrong scores in ``trec_eval``. Writing always goes through :func:`rank_hits`, so every
file this package writes has ranks 1..n in ``trec_eval``'s order (score descending, ties broken by docid
DESCENDING: that is how trec_eval ranks equal scores), and scores printed with ``repr`` so that they read back as exactly the same floats (rounding them could
create ties that contradict the written ranks).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable

from csplade_pyserini.atomic import atomic_file
from csplade_pyserini.errors import InputError
from csplade_pyserini.textio import read_lines

logger = logging.getLogger(__name__)

COLUMNS = ("qid", "Q0", "docid", "rank", "score", "tag")


@dataclass(frozen=True)
class Hit:
    """One result line; ``line`` is its 1-based line number in the file it came from (0 if computed)."""

    qid: str
    docid: str
    rank: int
    score: float
    tag: str
    line: int = 0


class RunFileError(InputError):
    """A run with malformed lines; ``problems`` holds one located :class:`InputError` per problem."""

    def __init__(self, problems: list[InputError]):
        self.problems = problems
        first = problems[0]
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        super().__init__(first.message + more, path=first.path, line=first.line, field=first.field)


class Descending(str):
    """A string that sorts in descending order inside an ascending sort key."""

    def __lt__(self, other):
        return str.__gt__(self, other)

    def __gt__(self, other):
        return str.__lt__(self, other)


def trec_order(score: float, docid: str) -> tuple:
    """The sort key of trec_eval's ranking: score descending, then docid descending. Every ranking this
    package writes or checks uses it, so the rank column always agrees with what gets evaluated."""
    return (-score, Descending(docid))


def sort_key(hit: Hit) -> tuple:
    """The canonical order of a topic's hits (:func:`trec_order`)."""
    return trec_order(hit.score, hit.docid)


def qid_key(qid: str) -> tuple:
    """Topics in numeric order when they are numbers (``2`` before ``10``), else as strings."""
    return (0, int(qid), qid) if qid.isdigit() else (1, 0, qid)


def parse_line(text: str | None, number: int, path: str | Path) -> tuple[Hit | None, list[InputError]]:
    """Every problem of one line (not just the first), and the hit when there is none."""
    if text is None:
        return None, [InputError("line is not valid UTF-8", path=path, line=number)]
    parts = text.split()
    if len(parts) != len(COLUMNS):
        return None, [InputError(f"expected 6 columns 'qid Q0 docid rank score tag', found {len(parts)}",
                                 path=path, line=number)]
    qid, q0, docid, rank_text, score_text, tag = parts
    problems = []
    if q0 != "Q0":
        problems.append(InputError(f"second column is {q0!r}, expected 'Q0'", path=path, line=number, field="Q0"))
    try:
        rank = int(rank_text)
    except ValueError:
        problems.append(InputError(f"rank {rank_text!r} is not an integer", path=path, line=number, field="rank"))
    try:
        score = float(score_text)
        if not math.isfinite(score):
            problems.append(InputError(f"score {score_text!r} is not finite", path=path, line=number, field="score"))
    except ValueError:
        problems.append(InputError(f"score {score_text!r} is not a number", path=path, line=number, field="score"))
    if problems:
        return None, problems
    return Hit(qid, docid, rank, score, tag, number), []


def parse_run(path: str | Path) -> tuple[list[Hit], list[InputError], set[str]]:
    """Tolerant read for the validator: good hits, every line problem, and the qids of broken lines.

    Blank lines are skipped (``trec_eval`` ignores them too).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("run file does not exist", path=path)
    hits, problems, broken = [], [], set()
    for number, text in read_lines(path, strict=False):
        if text is not None and not text.strip():
            continue
        hit, line_problems = parse_line(text, number, path)
        if hit is not None:
            hits.append(hit)
        else:
            problems.extend(line_problems)
            if text is not None and text.split():
                broken.add(text.split()[0])
    return hits, problems, broken


def read_run(path: str | Path) -> list[Hit]:
    """Strict read for the tools that rewrite runs: raise :class:`RunFileError` naming every bad line."""
    hits, problems, _ = parse_run(path)
    if problems:
        raise RunFileError(problems)
    if not hits:
        raise InputError("run has no result lines", path=path)
    return hits


def by_topic(hits: Iterable[Hit]) -> dict[str, list[Hit]]:
    """Hits grouped by qid, topics in first-appearance order, lines in file order."""
    topics: dict[str, list[Hit]] = {}
    for hit in hits:
        topics.setdefault(hit.qid, []).append(hit)
    return topics


def rank_hits(hits: Iterable[Hit], depth: int | None = None) -> list[Hit]:
    """One topic's hits in canonical order, each docid once (its best score), ranks 1..n, at most ``depth``."""
    ranked: list[Hit] = []
    seen: set[str] = set()
    for hit in sorted(hits, key=sort_key):
        if hit.docid in seen:
            continue
        seen.add(hit.docid)
        ranked.append(replace(hit, rank=len(ranked) + 1))
        if depth is not None and len(ranked) >= depth:
            break
    return ranked


def check_tag(tag: str) -> str:
    """A tag is one non-empty column; whitespace would shift every later column."""
    if not tag or any(c.isspace() for c in tag):
        raise InputError(f"tag {tag!r} must be non-empty and contain no whitespace", field="tag")
    return tag


def format_hit(hit: Hit, tag: str | None = None) -> str:
    return f"{hit.qid} Q0 {hit.docid} {hit.rank} {float(hit.score)!r} {tag or hit.tag}\n"


def write_run(path: str | Path, topics: dict[str, list[Hit]], tag: str | None = None) -> int:
    """Write ranked topics (sorted by :func:`qid_key`) atomically; returns the number of lines."""
    if tag is not None:
        check_tag(tag)
    count = 0
    with atomic_file(path) as handle:
        for qid in sorted(topics, key=qid_key):
            for hit in topics[qid]:
                handle.write(format_hit(hit, tag))
                count += 1
    logger.info("wrote %d lines for %d topics to %s", count, len(topics), path)
    return count
