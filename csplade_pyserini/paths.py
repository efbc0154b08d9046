"""Where things live: the shared offline data, the toolkit's cache and the workflow's stage folders.

Every location can be overridden by an environment variable so that the toolkit works the same on a
laptop with internet (``ir_datasets``, the hub) and on an offline machine with ``../shared`` beside the
checkout.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent

# Stage folders of the workflow, relative to the working directory (as Pyserini users expect).
ENCODE_DIR = Path("encode")
INDEX_DIR = Path("index")
RUNS_DIR = Path("runs")
EVAL_DIR = Path("eval")


def cache_dir() -> Path:
    """The toolkit's cache (converted backbones); ``CSPLADE_CACHE`` overrides ``~/.cache/csplade-pyserini``."""
    custom = os.environ.get("CSPLADE_CACHE")
    return Path(custom) if custom else Path.home() / ".cache" / "csplade-pyserini"


def _candidate_roots() -> list[Path]:
    roots = []
    for start in (Path.cwd(), PACKAGE_DIR):
        roots.extend([start, *start.parents])
    return roots


def shared_dir() -> Path | None:
    """The offline data folder: ``CSPLADE_SHARED``, else the first ``shared/`` found beside a parent
    of the working directory or of the package (the checkout's ``../shared``)."""
    custom = os.environ.get("CSPLADE_SHARED")
    if custom:
        return Path(custom)
    for root in _candidate_roots():
        candidate = root / "shared"
        if (candidate / "data").is_dir():
            return candidate
        candidate = root.parent / "shared"
        if (candidate / "data").is_dir():
            return candidate
    return None


def shared_path(*parts: str) -> Path | None:
    base = shared_dir()
    return base.joinpath(*parts) if base is not None else None


def topics_dir() -> Path | None:
    """Offline topics and qrels under Pyserini's cache names; ``CSPLADE_TOPICS_DIR`` overrides."""
    custom = os.environ.get("CSPLADE_TOPICS_DIR")
    if custom:
        return Path(custom)
    return shared_path("data", "topics-and-qrels")
