"""Reading text inputs line by line, with errors that name the file and line.

Every reader of user files (corpora, topics, qrels, training data, vectors, runs) goes through here,
so "not UTF-8" and "not JSON" are detected and reported the same way everywhere.
"""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path
from typing import Any, Iterator

from csplade_pyserini.errors import InputError


def read_lines(path: str | Path, strict: bool = True) -> Iterator[tuple[int, str | None]]:
    """``(line number, text without the newline)``; ``.gz`` files are decompressed.

    ``strict``: a line that is not UTF-8 raises; otherwise it is yielded as ``None`` so that a
    validator can report it together with every other problem of the file. A UTF-8 byte-order mark at the
    start of the file is dropped: left in, it would become part of the first id (and pyjnius strips it from
    strings coming back from Java, so that id would silently never match).
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    number = 0
    with opener(path, "rb") as handle:
        lines = iter(handle)
        while True:
            try:
                raw = next(lines)
            except StopIteration:
                return
            except (EOFError, gzip.BadGzipFile, zlib.error) as exc:  # truncated or not gzip at all
                raise InputError(f"not a complete gzip file ({exc or type(exc).__name__}) after line {number}",
                                 path=path, line=number + 1) from None
            number += 1
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                yield number, raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                if strict:
                    raise InputError(f"not valid UTF-8 ({exc.reason} at byte {exc.start})", path=path,
                                     line=number) from None
                yield number, None


def json_object(text: str, path: str | Path, number: int) -> dict[str, Any]:
    """One JSONL record, which must be an object."""
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON: {exc.msg}", path=path, line=number) from None
    if not isinstance(record, dict):
        raise InputError("expected a JSON object", path=path, line=number)
    return record


def read_jsonl(path: str | Path, required: tuple[str, ...] = ()) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, record)`` for every non-blank line of a JSONL file; each must be a JSON object holding
    the ``required`` fields (a missing one is named with its file and line)."""
    for number, line in read_lines(path):
        if not line.strip():
            continue
        record = json_object(line, path, number)
        for name in required:
            if name not in record:
                raise InputError("missing field", path=path, line=number, field=name)
        yield number, record


def _strict_yaml_loader():
    """YAML's safe loader, refusing a key repeated in one mapping (PyYAML would keep the last silently)."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen: dict = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} (first on line {seen[key] + 1})", key_node.start_mark)
                seen[key] = key_node.start_mark.line
            return super().construct_mapping(node, deep=deep)

    return StrictLoader


def read_yaml(path: str | Path, what: str = "file"):
    """A YAML document; a missing file, bad YAML or a repeated key is an InputError naming the file and line."""
    import yaml

    path = Path(path)
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_strict_yaml_loader())  # noqa: S506 (safe)
    except FileNotFoundError:
        raise InputError(f"{what} does not exist", path=path) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise InputError(f"not valid YAML: {getattr(exc, 'problem', None) or exc}", path=path,
                         line=mark.line + 1 if mark is not None else None) from None
