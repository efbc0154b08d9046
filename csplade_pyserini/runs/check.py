"""Validate a TREC run and report every problem with its line, before it is evaluated or shared.

``trec_eval`` accepts many broken runs without a word (it re-sorts by score and ignores ranks, counts a
missing topic as zero or skips it, scores duplicates twice), so the numbers it prints can be wrong in
ways nobody notices. The checks here make such runs fail loudly instead.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from csplade_pyserini.errors import InputError
from csplade_pyserini.runs.format import Hit, by_topic, parse_run, sort_key

logger = logging.getLogger(__name__)


@dataclass
class CheckResult:
    path: str
    lines: int = 0
    topics: int = 0
    tags: list[str] = field(default_factory=list)
    problems: list[InputError] = field(default_factory=list)
    judged_at_10: float | None = None
    checked: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def messages(self) -> list[str]:
        return [format_problem(p) for p in self.problems]

    def summary(self) -> str:
        if not self.ok:
            return f"{self.path}: {len(self.problems)} problem(s)"
        text = f"{self.path}: OK, {self.topics} topics, {self.lines} lines, tag {self.tags[0] if self.tags else None!r}"
        if self.judged_at_10 is not None:
            text += f", judged@10 {self.judged_at_10:.4f}"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "lines": self.lines, "topics": self.topics, "tags": self.tags,
                "checked": self.checked, "judged_at_10": self.judged_at_10, "problems": self.messages()}


def format_problem(problem: InputError) -> str:
    """``RUN:LINE: message``; problems of the run as a whole (a missing topic) have no line."""
    where = problem.path if problem.line is None else f"{problem.path}:{problem.line}"
    return f"{where}: {problem.message}"


@functools.lru_cache(maxsize=4)
def open_index(index_dir: str):
    """A Pyserini index reader (starts the JVM, hence imported here and cached)."""
    if not Path(index_dir).is_dir():
        raise InputError("index folder does not exist", path=index_dir)
    from pyserini.index.lucene import LuceneIndexReader

    try:
        return LuceneIndexReader(index_dir)
    except Exception as exc:  # jnius.JavaException: no segments file, wrong Lucene version...
        raise InputError(f"not a readable Lucene index ({str(exc).splitlines()[0]})", path=index_dir) from None


def missing_docids(index_dir: str | Path, docids: set[str]) -> set[str]:
    """The docids the index does not hold. Pyserini 1.6 returns -1 for an unknown docid; None or an
    exception (other versions) are taken to mean the same."""
    reader = open_index(str(index_dir))
    missing = set()
    for docid in docids:
        try:
            internal = reader.convert_collection_docid_to_internal_docid(docid)
        except Exception:  # noqa: BLE001 - an unknown docid, whatever form the failure takes
            internal = None
        if internal is None or internal < 0:
            missing.add(docid)
    return missing


def _check_topic(path: Path, qid: str, hits: list[Hit], depth: int | None, check_ranks: bool) -> list[InputError]:
    problems = []
    first_line: dict[str, int] = {}
    for hit in hits:
        if hit.docid in first_line:
            problems.append(InputError(f"docid {hit.docid!r} appears again in topic {qid!r} "
                                       f"(first on line {first_line[hit.docid]})", path=path, line=hit.line,
                                       field="docid"))
        else:
            first_line[hit.docid] = hit.line
    if check_ranks:
        for expected, hit in enumerate(sorted(hits, key=lambda h: (*sort_key(h), h.line)), start=1):
            if hit.rank != expected:
                problems.append(InputError(
                    f"rank {hit.rank} of docid {hit.docid!r} in topic {qid!r} should be {expected} "
                    f"(ranks go 1..n by score descending, ties by docid descending, as trec_eval ranks)", path=path, line=hit.line,
                    field="rank"))
    if depth is not None and len(hits) > depth:
        problems.append(InputError(f"topic {qid!r} has {len(hits)} lines, more than the depth {depth}",
                                   path=path, line=hits[depth].line))
    return problems


def check_run(path: str | Path, topics: dict[str, str] | None = None, depth: int | None = 1000,
              index: str | Path | None = None, qrels: dict[str, dict[str, int]] | None = None) -> CheckResult:
    """Every problem of a run, located by line. ``topics``, ``index`` and ``qrels`` enable the checks
    that need them; ``depth`` None disables the length check."""
    path = Path(path)
    hits, problems, broken = parse_run(path)
    grouped = by_topic(hits)
    result = CheckResult(str(path), lines=len(hits) + len({p.line for p in problems}),
                         topics=len(set(grouped) | broken))
    result.checked = ["format", "tag", "duplicates", "ranks"] + (["depth"] if depth is not None else [])

    tag_lines: dict[str, int] = {}
    for hit in hits:
        tag_lines.setdefault(hit.tag, hit.line)
    result.tags = list(tag_lines)
    first_tag = result.tags[0] if result.tags else None
    for tag, line in list(tag_lines.items())[1:]:
        problems.append(InputError(f"tag {tag!r} differs from {first_tag!r} (line {tag_lines[first_tag]}); "
                                   f"a run has one tag", path=path, line=line, field="tag"))

    for qid, topic_hits in grouped.items():
        problems.extend(_check_topic(path, qid, topic_hits, depth, check_ranks=qid not in broken))

    if topics is not None:
        result.checked.append("topics")
        for qid, topic_hits in grouped.items():
            if qid not in topics:
                problems.append(InputError(f"topic {qid!r} is not in the topics", path=path,
                                           line=topic_hits[0].line, field="qid"))
        for qid in topics:
            if qid not in grouped and qid not in broken:
                problems.append(InputError(f"topic {qid!r} of the topics has no lines in the run", path=path))
    if index is not None:
        result.checked.append("index")
        missing = missing_docids(index, {hit.docid for hit in hits})
        problems.extend(InputError(f"docid {hit.docid!r} is not in the index {index}", path=path, line=hit.line,
                                   field="docid") for hit in hits if hit.docid in missing)
    if qrels is not None:
        result.checked.append("qrels")
        if topics is None:  # with topics, a missing topic is already reported above
            problems.extend(InputError(f"topic {qid!r} has relevance judgements but no lines in the run", path=path)
                            for qid in qrels if qid not in grouped and qid not in broken)
        judged = [sum(h.docid in qrels[qid] for h in sorted(grouped[qid], key=sort_key)[:10])
                  / min(10, len(grouped[qid])) for qid in grouped if qid in qrels]
        result.judged_at_10 = sum(judged) / len(judged) if judged else 0.0
    if not hits and not problems:
        problems.append(InputError("run has no result lines", path=path))

    result.problems = sorted(problems, key=lambda p: (p.line is None, p.line or 0))
    logger.info(result.summary())
    return result
