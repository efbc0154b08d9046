"""What the benchmarks share in their output: Markdown table cells and the result files in ``eval/results``."""

from __future__ import annotations

import json
from typing import Any

from csplade_pyserini.atomic import atomic_file
from csplade_pyserini.paths import EVAL_DIR

RESULTS = EVAL_DIR / "results"


def cell(value, spec: str) -> str:
    """A table cell: ``value`` formatted with ``spec``, or ``-`` when it was not measured."""
    return "-" if value is None else format(value, spec)


def write_report(name: str, data: Any, text: str, echo: bool = True) -> str:
    """``RESULTS/NAME.json`` (``data``) and ``RESULTS/NAME.md`` (``text``, printed unless ``echo`` is false: a
    benchmark that rewrites its report after every step prints it once at the end), each written whole or not
    at all; returns ``text``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    with atomic_file(RESULTS / f"{name}.json") as handle:
        json.dump(data, handle, indent=2)
    with atomic_file(RESULTS / f"{name}.md") as handle:
        handle.write(text)
    if echo:
        print(text)
    return text
