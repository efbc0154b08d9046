"""Reproduction matrices: load a 2CR-style YAML, validate it against a schema, render its commands.

A matrix lists *topic columns* (a topics name, the qrels it is judged with, the corpus it searches and
the metrics reported on it, as Pyserini's 2CR pages do) and *conditions* (one system each). A
condition carries exact command templates:

``command``
    searches a prebuilt index of a corpus that has no documents here (``{index}`` names it; for
    Pyserini's prebuilt indexes a bare name such as ``msmarco-v1-passage``);
``index-command``
    how that index is built from the corpus (documentation, never run by the runner);
``pipeline``
    end-to-end run (encode + index + search + evaluate) of ``python -m csplade_pyserini.pipeline`` on a
    collection whose documents ship with ``../shared`` (SciFact, the DL19 pool).

Each topic entry of a condition holds the expected scores: ``null`` where nothing has been measured
yet, and ``published: true`` for numbers copied from a paper or from Pyserini's own regressions, which
this toolkit has not reproduced (they are compared and the difference reported, but never FAIL).
"""

from __future__ import annotations

import importlib.resources
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from csplade_pyserini.textio import read_yaml
from csplade_pyserini.errors import InputError

# --collection values (and aliases) -> matrix file shipped in this package.
COLLECTIONS = {"msmarco-passage": "msmarco-passage.yaml", "beir": "beir.yaml"}
ALIASES = {"msmarco-v1-passage": "msmarco-passage", "v1-passage": "msmarco-passage", "msmarco": "msmarco-passage",
           "beir-v1.0.0": "beir"}

# Placeholders a command template may use ({name} style, as in the brief; no other braces allowed).
PLACEHOLDERS = {
    "topics": "Pyserini topics name of the column",
    "eval_key": "qrels name the run is judged with",
    "corpus": "corpus name of the column (scifact, dl19-pool, msmarco-v1-passage, nfcorpus ...)",
    "corpus_dir": "folder with the corpus documents (for index-command)",
    "index": "index folder, or a Pyserini prebuilt index name",
    "embeddings": "folder of encoded documents (JsonVectorCollection)",
    "output": "TREC run file written by the command",
    "report": "JSON report written by the pipeline",
    "threads": "threads (--threads)",
    "batch_size": "query batch size (--batch-size)",
    "device": "torch device (--device)",
    "shared": "the offline data folder (../shared)",
    "name": "condition name",
}
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_NAME = r"^[a-z0-9][a-z0-9._-]*$"

_SCORES = {"type": "object", "minProperties": 1,
           "additionalProperties": {"type": ["number", "null"], "minimum": 0, "maximum": 1}}
_COMMAND = {"type": "string", "minLength": 1, "pattern": r"^\S"}

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "csplade-pyserini reproduction matrix",
    "type": "object",
    "required": ["collection", "title", "topics", "conditions"],
    "additionalProperties": False,
    "properties": {
        "collection": {"type": "string", "pattern": _NAME},
        "title": {"type": "string", "minLength": 1},
        "description": {"type": "string"},
        "defaults": {
            "type": "object", "additionalProperties": False,
            "properties": {"index": _COMMAND, "embeddings": _COMMAND, "corpus_dir": _COMMAND},
        },
        "average": {  # an aggregate column (BEIR-13 mean) over these topic keys
            "type": "object", "additionalProperties": False, "required": ["key", "display", "over", "metrics"],
            "properties": {"key": {"type": "string", "pattern": _NAME}, "display": {"type": "string"},
                           "over": {"type": "array", "minItems": 2, "items": {"type": "string"}},
                           "metrics": {"type": "array", "minItems": 1, "items": {"type": "string"}}},
        },
        "topics": {
            "type": "array", "minItems": 1,
            "items": {
                "type": "object", "additionalProperties": False,
                "required": ["key", "display", "topic_key", "eval_key", "corpus", "metrics"],
                "properties": {
                    "key": {"type": "string", "pattern": _NAME},
                    "display": {"type": "string", "minLength": 1},
                    "topic_key": {"type": "string", "minLength": 1},
                    "eval_key": {"type": "string", "minLength": 1},
                    "corpus": {"type": "string", "pattern": _NAME},
                    "metrics": {"type": "object", "minProperties": 1,
                                "additionalProperties": {"type": "string", "minLength": 1}},
                    "note": {"type": "string"},
                },
            },
        },
        "conditions": {
            "type": "array", "minItems": 1,
            "items": {
                "type": "object", "additionalProperties": False,
                "required": ["name", "display", "command", "topics"],
                "properties": {
                    "name": {"type": "string", "pattern": _NAME},
                    "display": {"type": "string", "minLength": 1},
                    "display-html": {"type": "string"},
                    "display-row": {"type": "string"},
                    "group": {"type": "string"},
                    "model": {"type": ["string", "null"]},
                    "published": {"type": "boolean"},
                    "source": {"type": "string"},
                    "note": {"type": "string"},
                    "requires": {"type": "array", "items": {"type": "string", "minLength": 1}},
                    "command": _COMMAND,
                    "index": _COMMAND,
                    "index-command": _COMMAND,
                    "pipeline": _COMMAND,
                    "published-index-gb": {"type": ["number", "null"], "minimum": 0},
                    "average": {
                        "type": "object", "additionalProperties": False, "required": ["scores"],
                        "properties": {"scores": _SCORES, "published": {"type": "boolean"},
                                       "source": {"type": "string"}},
                    },
                    "topics": {
                        "type": "array", "minItems": 1,
                        "items": {
                            "type": "object", "additionalProperties": False, "required": ["topic", "scores"],
                            "properties": {
                                "topic": {"type": "string"},
                                "scores": {"type": "array", "minItems": 1, "maxItems": 1, "items": _SCORES},
                                "published": {"type": "boolean"},
                                "source": {"type": "string"},
                                "note": {"type": "string"},
                            },
                        },
                    },
                },
            },
        },
    },
}


class MatrixError(InputError):
    """A matrix file that does not follow the schema; the message names the file and the YAML path."""


@dataclass(frozen=True)
class TopicColumn:
    key: str
    display: str
    topic_key: str
    eval_key: str
    corpus: str
    metrics: dict[str, str]  # display name (Pyserini's: MAP, nDCG@10, R@1K) -> ir-measures name
    note: str = ""


@dataclass(frozen=True)
class Expectation:
    topic: str
    scores: dict[str, float | None]
    published: bool = False
    source: str = ""
    note: str = ""


@dataclass
class Condition:
    name: str
    display: str
    command: str
    topics: list[Expectation]
    display_html: str = ""
    display_row: str = ""
    group: str = ""
    model: str | None = None
    published: bool = False
    source: str = ""
    note: str = ""
    requires: list[str] = field(default_factory=list)
    index: str = ""
    index_command: str = ""
    pipeline: str = ""
    published_index_gb: float | None = None
    average: Expectation | None = None

    def expectation(self, topic: str) -> Expectation | None:
        return next((e for e in self.topics if e.topic == topic), None)


@dataclass
class Matrix:
    collection: str
    title: str
    topics: list[TopicColumn]
    conditions: list[Condition]
    source: str
    description: str = ""
    defaults: dict[str, str] = field(default_factory=dict)
    average: dict | None = None

    def condition(self, name: str) -> Condition:
        for condition in self.conditions:
            if condition.name == name:
                return condition
        raise InputError(f"unknown condition {name!r} in {self.source}; "
                         f"`--list-conditions` shows the {len(self.conditions)} known ones")

    def column(self, key: str) -> TopicColumn:
        return next(t for t in self.topics if t.key == key)


def canonical_collection(name: str) -> str:
    name = ALIASES.get(name, name)
    if name not in COLLECTIONS:
        raise InputError(f"unknown collection {name!r}; choose one of {', '.join(COLLECTIONS)}")
    return name


def matrix_file(collection: str) -> Path:
    return Path(str(importlib.resources.files("csplade_pyserini.repro").joinpath(COLLECTIONS[canonical_collection(collection)])))


def placeholders(template: str) -> list[str]:
    return _PLACEHOLDER.findall(template)


def render(template: str, values: dict[str, Any]) -> str:
    """Fill ``{name}`` placeholders; a placeholder without a value is an error (never left in)."""
    def fill(match: re.Match) -> str:
        key = match.group(1)
        if key not in values or values[key] is None:
            raise InputError(f"no value for placeholder {{{key}}} in {template!r}")
        return str(values[key])
    return _PLACEHOLDER.sub(fill, template)


def _where(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _schema_errors(data: Any) -> list[str]:
    try:
        import jsonschema
    except ImportError:  # pragma: no cover - jsonschema ships with the toolkit's dependencies
        return [] if isinstance(data, dict) else ["the matrix must be a mapping"]
    validator = jsonschema.Draft202012Validator(SCHEMA)
    errors = sorted(validator.iter_errors(data), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    return [f"{_where(e.absolute_path)}: {e.message}" for e in errors]


def _semantic_errors(data: dict) -> list[str]:
    """What a schema cannot say: references between parts, placeholders, measure names."""
    import ir_measures

    problems: list[str] = []
    columns = {}
    for i, topic in enumerate(data["topics"]):
        where = f"topics[{i}] ({topic['key']})"
        if topic["key"] in columns:
            problems.append(f"{where}: duplicate topic key {topic['key']!r}")
        columns[topic["key"]] = topic
        for metric, measure in topic["metrics"].items():
            try:
                ir_measures.parse_measure(measure)
            except Exception as exc:  # noqa: BLE001 - ir_measures raises several kinds
                problems.append(f"{where}.metrics.{metric}: {measure!r} is not an ir-measures measure ({exc})")
    average = data.get("average")
    if average:
        for key in average["over"]:
            if key not in columns:
                problems.append(f"average.over: unknown topic {key!r}")
    names = set()
    for i, cond in enumerate(data["conditions"]):
        where = f"conditions[{i}] ({cond['name']})"
        if cond["name"] in names:
            problems.append(f"{where}: duplicate condition name {cond['name']!r}")
        names.add(cond["name"])
        for key in ("command", "index", "index-command", "pipeline"):
            for name in placeholders(cond.get(key, "")):
                if name not in PLACEHOLDERS:
                    problems.append(f"{where}.{key}: unknown placeholder {{{name}}}; "
                                    f"known: {', '.join('{' + p + '}' for p in PLACEHOLDERS)}")
        if "{output}" not in cond["command"]:
            problems.append(f"{where}.command: must write its run to {{output}}")
        if cond.get("pipeline") and "{report}" not in cond["pipeline"]:
            problems.append(f"{where}.pipeline: must write its JSON report to {{report}}")
        seen = set()
        for j, expect in enumerate(cond["topics"]):
            at = f"{where}.topics[{j}]"
            key = expect["topic"]
            if key not in columns:
                problems.append(f"{at}: unknown topic {key!r}; the matrix defines {', '.join(columns)}")
                continue
            if key in seen:
                problems.append(f"{at}: topic {key!r} listed twice")
            seen.add(key)
            for metric in expect["scores"][0]:
                if metric not in columns[key]["metrics"]:
                    problems.append(f"{at}.scores.{metric}: not a metric of topic {key!r} "
                                    f"({', '.join(columns[key]['metrics'])})")
            published = expect.get("published", cond.get("published", False))
            has_numbers = any(v is not None for v in expect["scores"][0].values())
            if published and has_numbers and not (expect.get("source") or cond.get("source")):
                problems.append(f"{at}: published scores need a 'source' (paper or regression file)")
        if cond.get("average") and not data.get("average"):
            problems.append(f"{where}.average: the matrix defines no average column")
    return problems


def validate(data: Any, source: str = "<matrix>") -> None:
    """Raise :class:`MatrixError` listing every problem (schema first, then cross-references)."""
    problems = _schema_errors(data)
    if not problems:
        problems = _semantic_errors(data)
    if problems:
        shown = "\n  - ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise MatrixError(f"invalid reproduction matrix ({len(problems)} problem(s)):\n  - {shown}{more}", path=source)


def load_matrix(path: str | Path | None = None, collection: str | None = None) -> Matrix:
    """Load and validate the matrix file at ``path``, else the one shipped for ``collection``."""
    if path is None:
        if collection is None:
            raise InputError("give a collection or a matrix file")
        path = matrix_file(collection)
    path = Path(path)
    try:
        data = read_yaml(path, "matrix file")
    except InputError as exc:
        if "YAML" not in exc.message:
            raise
        raise MatrixError(exc.message, path=path, line=exc.line) from None
    validate(data, str(path))
    topics = [TopicColumn(t["key"], t["display"], t["topic_key"], t["eval_key"], t["corpus"], dict(t["metrics"]),
                          t.get("note", "")) for t in data["topics"]]
    conditions = []
    for c in data["conditions"]:
        default_pub = c.get("published", False)
        expectations = [Expectation(e["topic"], dict(e["scores"][0]), e.get("published", default_pub),
                                    e.get("source", c.get("source", "")), e.get("note", "")) for e in c["topics"]]
        average = None
        if c.get("average"):
            a = c["average"]
            average = Expectation("average", dict(a["scores"]), a.get("published", default_pub),
                                  a.get("source", c.get("source", "")))
        conditions.append(Condition(
            name=c["name"], display=c["display"], command=c["command"], topics=expectations,
            display_html=c.get("display-html", c["display"]), display_row=c.get("display-row", ""),
            group=c.get("group", ""), model=c.get("model"), published=default_pub, source=c.get("source", ""),
            note=c.get("note", ""), requires=list(c.get("requires", [])), index=c.get("index", ""),
            index_command=c.get("index-command", ""), pipeline=c.get("pipeline", ""),
            published_index_gb=c.get("published-index-gb"), average=average))
    return Matrix(data["collection"], data["title"], topics, conditions, str(path), data.get("description", ""),
                  dict(data.get("defaults", {})), data.get("average"))
