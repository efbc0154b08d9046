"""Formatting shared by the benchmarks' Markdown tables."""

from __future__ import annotations


def cell(value, spec: str) -> str:
    """A table cell: ``value`` formatted with ``spec``, or ``-`` when it was not measured."""
    return "-" if value is None else format(value, spec)
