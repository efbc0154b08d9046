"""What the Pyserini 2.x line needs beyond the 1.6 patches: import without the network, and BEIR aliases
on its lazily fetched topic tables.

Pyserini 2.x fetches JSON tables from ``raw.githubusercontent.com/castorini/`` with ``urllib.request``:
``pyserini.prebuilt_index_info`` its prebuilt index tables, two of them while the module executes (so an
offline ``import pyserini.encode`` crashes), and ``pyserini.search._base`` its topics/qrels tables and
files on first use. The start-up hook swaps in :func:`tolerant_urlopen` / :func:`tolerant_urlretrieve`
while those two modules execute (their ``from urllib.request import ...`` binds them) and restores
``urllib.request`` right after. The wrappers call the real functions; only when the network is
unreachable (an ``OSError`` other than an HTTP error status), or when ``CSPLADE_PYSERINI_OFFLINE=1`` says
not to try, do they answer from offline data: empty prebuilt index tables (plus inert entries for the
names Pyserini looks up at import) and topics/qrels tables listing the offline files that the 1.6 path
links (``paths.topics_dir()``, ``../shared/data/topics-and-qrels``). With internet nothing changes.

Standard library only: it runs from the start-up hook.
"""

from __future__ import annotations

import ast
import contextlib
import errno
import functools
import io
import json
import logging
import os
import shutil
import socket
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)

OFFLINE_ENV = "CSPLADE_PYSERINI_OFFLINE"  # "1": answer Pyserini's table fetches offline without trying
FETCH_PREFIX = "https://raw.githubusercontent.com/castorini/"
INDEX_TABLES = "castorini/prebuilt-indexes/"
EVAL_TABLES = "castorini/eval/"
INDEX_INFO_MODULE = "pyserini.prebuilt_index_info"

_network_failed: str | None = None  # the first failure: later fetches in this process skip the network


def _offline_wanted() -> bool:
    return os.environ.get(OFFLINE_ENV, "") == "1" or _network_failed is not None


def _url_of(url) -> str:
    return getattr(url, "full_url", url) if not isinstance(url, str) else url


_UNREACHABLE_ERRNOS = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ECONNREFUSED, errno.ETIMEDOUT,
                       errno.ECONNRESET, errno.ENETDOWN}
_UNREACHABLE_TEXT = ("name or service not known", "temporary failure in name resolution", "nodename nor servname",
                     "network is unreachable", "no route to host", "connection refused", "timed out")


def is_unreachable(exc: BaseException) -> bool:
    """Whether a failed fetch means "no network here" (name resolution, refused or timed-out connections),
    as opposed to a certificate, a full disk or any other error that must not pass for an offline machine."""
    reason = getattr(exc, "reason", exc) if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, ssl.SSLError):
        return False
    if isinstance(reason, (socket.gaierror, ConnectionError, TimeoutError)):
        return True
    if isinstance(reason, OSError) and reason.errno in _UNREACHABLE_ERRNOS:
        return True
    return isinstance(reason, str) and any(text in reason.lower() for text in _UNREACHABLE_TEXT)


def _note_failure(url: str, exc: BaseException | None) -> None:
    global _network_failed
    if _network_failed is None:
        _network_failed = f"{type(exc).__name__}: {exc}" if exc is not None else f"{OFFLINE_ENV}=1"
        message = (f"Pyserini's tables at {FETCH_PREFIX} are answered offline ({_network_failed}): prebuilt index "
                   f"tables are empty and topics/qrels come from {_topics_dir()} ({OFFLINE_ENV}=1 skips trying the "
                   "network)")
        logger.warning("%s", message)
        if not _logging_configured():  # a Pyserini CLI configures no logging: say it once on stderr
            print(f"warning: {message}", file=sys.stderr)


def _logging_configured() -> bool:
    """Whether a handler other than the package's NullHandler would show this module's warnings."""
    current = logger
    while current is not None:
        if any(not isinstance(h, logging.NullHandler) for h in current.handlers):
            return True
        current = current.parent if current.propagate else None
    return False


def _fetch_or_fallback(fetch: Callable, url, fallback: Callable[[str], object | None]):
    """``fetch()`` unless offline; on a network failure ``fallback(url)``, or the failure when it has none."""
    text = _url_of(url)
    if not text.startswith(FETCH_PREFIX):
        return fetch()
    if not _offline_wanted():
        try:
            return fetch()
        except urllib.error.HTTPError:
            raise  # the server answered: a real error, not an offline machine
        except OSError as exc:  # URLError, timeouts, refused connections
            if not is_unreachable(exc):
                raise  # a certificate, a full disk...: not an offline machine
            answer = fallback(text)
            if answer is None:
                raise
            _note_failure(text, exc)
            return answer
    _note_failure(text, None)
    answer = fallback(text)
    if answer is None:
        raise urllib.error.URLError(f"{text}: offline ({_network_failed}) and no offline copy in {_topics_dir()}")
    return answer


def tolerant_urlopen(original: Callable) -> Callable:
    @functools.wraps(original)
    def urlopen(url, *args, **kwargs):
        return _fetch_or_fallback(lambda: original(url, *args, **kwargs), url, _offline_table)
    urlopen._csplade_original = original
    return urlopen


def tolerant_urlretrieve(original: Callable) -> Callable:
    @functools.wraps(original)
    def urlretrieve(url, filename=None, *args, **kwargs):
        return _fetch_or_fallback(lambda: original(url, filename, *args, **kwargs), url,
                                  lambda text: _copy_offline_file(text, filename))
    urlretrieve._csplade_original = original
    return urlretrieve


def tolerant_fetches() -> Callable[[], None]:
    """Swap the tolerant wrappers into ``urllib.request`` (for the module about to execute); returns the undo."""
    saved = urllib.request.urlopen, urllib.request.urlretrieve
    if not hasattr(saved[0], "_csplade_original"):
        urllib.request.urlopen = tolerant_urlopen(saved[0])
    if not hasattr(saved[1], "_csplade_original"):
        urllib.request.urlretrieve = tolerant_urlretrieve(saved[1])

    def undo() -> None:
        urllib.request.urlopen, urllib.request.urlretrieve = saved
    return undo


def _topics_dir() -> Path | None:
    from csplade_pyserini.paths import topics_dir

    return topics_dir()


def _offline_table(url: str) -> io.BytesIO | None:
    """The JSON Pyserini expects from ``url``, built offline (a file-like answer, as ``urlopen`` gives)."""
    name = url.rsplit("/", 1)[-1]
    if INDEX_TABLES in url:
        # Lucene tables are lists of records, Faiss tables are dicts; lookups made at import get inert
        # entries (no download URL), everything else is simply absent.
        body = [_inert_index(n) for n in _names_indexed_at_import()] if "/lucene/" in url else {}
    elif EVAL_TABLES in url and name.endswith("-aliases.json"):
        body = {}
    elif EVAL_TABLES in url and name in ("topics.json", "qrels.json"):
        body = offline_topics_table(_topics_dir()) if name == "topics.json" else offline_qrels_table(_topics_dir())
    else:
        return None
    return io.BytesIO(json.dumps(body).encode("utf-8"))


def _inert_index(name: str) -> dict:
    return {"name": name, "description": "offline: Pyserini's prebuilt index table was not reachable",
            "filename": f"{name}.unavailable-offline", "urls": [], "md5": "", "size": 0}


def _names_indexed_at_import(module_name: str = INDEX_INFO_MODULE) -> list[str]:
    """Keys that ``pyserini.prebuilt_index_info`` subscripts at module level (``X["name"]``), read from its
    source: without them its import raises KeyError on an empty table."""
    path = getattr(sys.modules.get(module_name), "__file__", None)
    if path is None:
        return []
    names: set[str] = set()
    for statement in ast.parse(Path(path).read_text(encoding="utf-8")).body:
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        for node in ast.walk(statement):
            if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) \
                    and isinstance(node.slice.value, str):
                names.add(node.slice.value)
    return sorted(names)


def _names_for(stem: str) -> list[str]:
    """Anserini's file stem and Pyserini's spelling (last ``.`` as ``-``): ``beir-v1.0.0-scifact.test`` and
    ``beir-v1.0.0-scifact-test``, ``msmarco-passage.dev-subset`` and ``msmarco-passage-dev-subset``."""
    head, dot, tail = stem.rpartition(".")
    return [stem, f"{head}-{tail}"] if dot and not tail[:1].isdigit() else [stem]


def _stem(filename: str, kind: str) -> str | None:
    if not filename.startswith(kind + "."):
        return None
    stem = filename[len(kind) + 1:]
    for ext in (".gz", ".tsv", ".txt", ".jsonl", ".xml", ".trec"):
        stem = stem[: -len(ext)] if stem.endswith(ext) else stem
    return stem


def offline_topics_table(folder: Path | None) -> dict[str, dict[str, str]]:
    """Pyserini 2.x's ``topics.json`` shape for the offline files: name -> {path, reader_class}. Every file
    is read as TSV with string ids (Pyserini turns numeric ids back into ints)."""
    table: dict[str, dict[str, str]] = {}
    for path in sorted(folder.iterdir()) if folder is not None and folder.is_dir() else []:
        stem = _stem(path.name, "topics")
        if stem is not None:
            for name in _names_for(stem):
                table.setdefault(name, {"path": path.name,
                                        "reader_class": "io.anserini.search.topicreader.TsvStringTopicReader"})
    return table


def offline_qrels_table(folder: Path | None) -> dict[str, str]:
    """Pyserini 2.x's ``qrels.json`` shape for the offline files: name -> file."""
    table: dict[str, str] = {}
    for path in sorted(folder.iterdir()) if folder is not None and folder.is_dir() else []:
        stem = _stem(path.name, "qrels")
        if stem is not None:
            for name in _names_for(stem):
                table.setdefault(name, path.name)
    return table


def _copy_offline_file(url: str, filename) -> tuple[str, None] | None:
    """``urlretrieve``'s offline answer for a topics or qrels file: the offline copy of the same name."""
    folder = _topics_dir()
    source = folder / url.rsplit("/", 1)[-1] if folder is not None else None
    if EVAL_TABLES not in url or source is None or not source.is_file() or filename is None:
        return None
    shutil.copyfile(source, filename)
    return str(filename), None


def add_topic_aliases(module, add_aliases: Callable[[dict], None]) -> None:
    """Pyserini 2.x loads its topics and qrels tables on first use (``_get_topics_mapping``): apply
    ``add_aliases`` to each table as it is handed out."""
    for getter_name in ("_get_topics_mapping", "_get_qrels_mapping"):
        getter = getattr(module, getter_name)
        if getattr(getter, "_csplade_patched", False):
            continue

        def get(getter=getter):
            mapping = getter()
            add_aliases(mapping)
            return mapping

        functools.update_wrapper(get, getter)
        get._csplade_patched = True
        setattr(module, getter_name, get)


@contextlib.contextmanager
def safetensors_splade_loading():
    """While open, Pyserini's SPLADE encoders can load a folder that holds only ``model.safetensors``.

    Pyserini 2.x loads them with ``use_safetensors=False`` (for checkpoints that publish only PyTorch
    weights, such as naver/splade-v3), which fails on such a folder (``../shared/models/splade-tiny``,
    our SPLADE baseline). Here a folder without PyTorch weights is loaded the default way instead. Pyserini
    1.6 has no such loader and is left as it is; the hook does not change Pyserini's encoders for others.
    """
    splade = sys.modules.get("pyserini.encode._splade")
    if splade is None:
        import importlib

        splade = importlib.import_module("pyserini.encode._splade")
    name = "_from_pretrained_without_safetensors_conversion"
    original = getattr(splade, name, None)
    if original is None:
        yield
        return

    def load(model_name_or_path):
        folder = Path(str(model_name_or_path))
        if (folder / "model.safetensors").is_file() and not any(folder.glob("pytorch_model*.bin")):
            from transformers import AutoModelForMaskedLM

            return AutoModelForMaskedLM.from_pretrained(str(folder))
        return original(model_name_or_path)

    setattr(splade, name, load)
    try:
        yield
    finally:
        setattr(splade, name, original)
