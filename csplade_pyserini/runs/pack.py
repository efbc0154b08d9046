"""Package a run for sharing: the gzipped run plus a ``.meta.json`` that says how it was made.

A run file alone cannot be reproduced or trusted: the metadata records the toolkit version and git
commit, the command line, the model card, the index statistics and the validator's verdict. A run
that fails the check is refused, so a packed run is always a valid one.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import subprocess
import sys
import tarfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import csplade_pyserini
from csplade_pyserini.atomic import atomic_file
from csplade_pyserini.errors import InputError
from csplade_pyserini.runs.check import check_run, open_index
from csplade_pyserini.runs.format import RunFileError

logger = logging.getLogger(__name__)

INDEX_INFO = "csplade-index.info"
PACKAGE_DIR = Path(csplade_pyserini.__file__).resolve().parent


def git_state() -> dict[str, Any]:
    """Commit and dirtiness of the toolkit's checkout; None when it is not a git checkout (a wheel)."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=PACKAGE_DIR, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain") if commit else None
    return {"git_commit": commit, "git_dirty": bool(status) if status is not None else None}


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{what} does not exist", path=path) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{what} is not valid JSON ({exc})", path=path) from None


def model_card(card_file: str | Path | None, index_dir: str | Path | None) -> Any:
    """The card given, else the ``card`` of the index's ``csplade-index.info``, else None."""
    if card_file is not None:
        return _read_json(Path(card_file), "model card")
    if index_dir is not None and (Path(index_dir) / INDEX_INFO).is_file():
        info = _read_json(Path(index_dir) / INDEX_INFO, "index info")
        return info.get("card") if isinstance(info, dict) else None
    return None


def index_stats(index_dir: str | Path) -> dict[str, Any]:
    stats = open_index(str(index_dir)).stats() or {}
    return {"path": str(index_dir), "documents": stats.get("documents"), "unique_terms": stats.get("unique_terms")}


def pack_run(run: str | Path, output: str | Path, index: str | Path | None = None,
             card_file: str | Path | None = None, topics: dict[str, str] | None = None,
             topics_name: str | None = None, depth: int | None = 1000) -> list[Path]:
    """Write ``NAME.gz`` and ``NAME.meta.json`` into the folder ``output``, or into a ``.tar.gz``/``.tgz``
    archive when ``output`` is named so. Nothing is written when the run fails the check (which covers
    topics only when they are given). Returns the paths written."""
    run, output = Path(run), Path(output)
    card = model_card(card_file, index)
    result = check_run(run, topics=topics, depth=depth, index=index)
    if not result.ok:
        raise RunFileError(result.problems)
    name = run.name[: -len(".gz")] if run.name.endswith(".gz") else run.name
    opener = gzip.open if run.suffix == ".gz" else open
    with opener(run, "rb") as handle:
        data = handle.read()
    meta = {
        "run": name,
        "file": f"{name}.gz",
        "sha256": hashlib.sha256(data).hexdigest(),
        "toolkit": {"name": "csplade-pyserini", "version": csplade_pyserini.__version__, **git_state()},
        "command": list(sys.argv),
        "topics": topics_name,
        "model_card": card,
        "index": index_stats(index) if index is not None else None,
        "check": result.to_dict(),
    }
    blobs = {f"{name}.gz": gzip.compress(data, mtime=0),  # mtime 0: the same run packs to the same bytes
             f"{name}.meta.json": (json.dumps(meta, indent=2, ensure_ascii=False) + "\n").encode("utf-8")}
    if output.name.endswith((".tar.gz", ".tgz")):
        with atomic_file(output, "wb") as handle, tarfile.open(fileobj=handle, mode="w:gz") as archive:
            for member, blob in blobs.items():
                info = tarfile.TarInfo(member)
                info.size, info.mode = len(blob), 0o644
                archive.addfile(info, io.BytesIO(blob))
        written = [output]
    else:
        written = [output / member for member in blobs]
        with ExitStack() as stack:  # both files appear together, or neither does
            for target, blob in zip(written, blobs.values()):
                stack.enter_context(atomic_file(target, "wb")).write(blob)
    logger.info("packed %s into %s", run, output)
    return written
