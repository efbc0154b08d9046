"""Errors that point the user at the exact place in their input that is wrong."""

from __future__ import annotations

from pathlib import Path


class CspladeError(Exception):
    """Base class for every error this toolkit raises on purpose (as opposed to bugs)."""


class InputError(CspladeError, ValueError):
    """Bad user input, located by file, line (1-based) and field so that it can be fixed without guessing."""

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None,
                 field: str | None = None):
        self.path = str(path) if path is not None else None
        self.line = line
        self.field = field
        self.message = message
        where = []
        if self.path is not None:
            where.append(self.path if line is None else f"{self.path}:{line}")
        if field is not None:
            where.append(f"field '{field}'")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class ModelSpecError(CspladeError, ValueError):
    """An encoder spec such as ``csplade:PATH`` that cannot be resolved to a model."""


class VocabularyMismatchError(CspladeError, ValueError):
    """The query encoder's term vocabulary is not the one the index was built with."""


class PyseriniMismatchError(CspladeError, RuntimeError):
    """The installed Pyserini's internals are not those the start-up hook patches (another Pyserini line)."""
