"""The patches the start-up hook applies to Pyserini; each is small and leaves other encoders alone."""

from __future__ import annotations

import functools
import logging

from csplade_pyserini.integration import java

logger = logging.getLogger(__name__)

_JAVA_HOME = None
# The Pyserini lines whose private names the patches below are written against, and what installs each.
SUPPORTED = {"1.6": 'pyserini==1.6.0 (Python < 3.12)', "2.x": 'pyserini==2.4.0 (Python >= 3.12)'}
# The private names each line's patches touch, where the lines differ (the rest are the same in both).
TOPIC_TABLES = {"1.6": ("topics_mapping", "qrels_mapping"), "2.x": ("_get_topics_mapping", "_get_qrels_mapping")}


@functools.lru_cache(maxsize=1)
def pyserini_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pyserini")
    except PackageNotFoundError:
        return "unknown"


def pyserini_line(version: str | None = None) -> str:
    """``"2.x"`` for Pyserini 2 and later, else ``"1.6"``: the patches for that line are tried, and
    :func:`require` refuses a release whose internals differ from the line's."""
    major = (version or pyserini_version()).split(".")[0]
    return "2.x" if major.isdigit() and int(major) >= 2 else "1.6"


def require(module, *names: str) -> None:
    """Refuse, before anything is changed, a Pyserini whose internals the patches do not know: the hook
    patches private names, and patching a moved one would fail silently or half-way."""
    from csplade_pyserini.errors import PyseriniMismatchError

    for dotted in names:
        target = module
        for part in dotted.split("."):
            if not hasattr(target, part):
                version = pyserini_version()
                raise PyseriniMismatchError(
                    f"csplade-pyserini cannot plug into Pyserini {version}: {module.__name__} has no {dotted} "
                    f"(the hook patches the internals of Pyserini 1.6.x and 2.4.x; {version} was taken for the "
                    f"{pyserini_line(version)} line). Install {' or '.join(SUPPORTED.values())} (make install "
                    "picks by Python), or set CSPLADE_PYSERINI_HOOK=0 to run this Pyserini without the CSPLADE "
                    "encoders")
            target = getattr(target, part)


def prepare_environment() -> None:
    """Before ``pyserini`` executes: Java 21+, and offline topics/qrels where Anserini looks for them."""
    global _JAVA_HOME
    from csplade_pyserini.paths import topics_dir

    _JAVA_HOME = java.configure_java()
    java.link_offline_topics(topics_dir())


def prepare_jvm_options() -> None:
    """Before ``jnius`` starts the JVM: drop JVM options the selected runtime cannot honour."""
    import jnius_config

    home = _JAVA_HOME or java.select_java_home()[0]
    kept = java.drop_missing_jvm_modules(list(jnius_config.get_options()), home)
    if kept != list(jnius_config.get_options()):
        jnius_config.options = kept


def offline_fetches():
    """Before ``pyserini.prebuilt_index_info`` / ``pyserini.search._base`` execute on the 2.x line: their
    import-time and lazy HTTP fetches of Pyserini's tables fall back to offline data when the network is
    unreachable (:mod:`.pyserini2`). Returns the undo the hook runs once the module has executed."""
    if pyserini_line() != "2.x":
        return None
    from csplade_pyserini.integration import pyserini2

    return pyserini2.tolerant_fetches()


def add_topic_aliases(module) -> None:
    """Accept BEIR names as Anserini spells its files (``beir-v1.0.0-scifact.test``) besides Pyserini's
    ``beir-v1.0.0-scifact-test``; both resolve to the same topics and qrels. Pyserini 1.6 has the tables
    as module dicts, 2.x loads them on first use."""
    line = pyserini_line()
    require(module, *TOPIC_TABLES[line])
    if line == "2.x":
        from csplade_pyserini.integration import pyserini2

        pyserini2.add_topic_aliases(module, _add_beir_aliases)
        return
    for mapping in (module.topics_mapping, module.qrels_mapping):
        _add_beir_aliases(mapping)


def _add_beir_aliases(mapping: dict) -> None:
    for name, value in list(mapping.items()):
        if name.startswith("beir-v1.0.0-") and name.endswith("-test"):
            mapping.setdefault(name[: -len("-test")] + ".test", value)


class _CspladeDocumentEncoder:
    """Stands for ``encoders.CspladeDocumentEncoder`` until Pyserini instantiates it: that module imports
    ``pyserini.encode``, so it cannot be imported while ``pyserini.encode`` itself is being patched."""

    def __new__(cls, *args, **kwargs):
        from csplade_pyserini.integration.encoders import CspladeDocumentEncoder

        return CspladeDocumentEncoder(*args, **kwargs)


PARTIAL_MARKER = "csplade-encoding.partial"  # in a literal pyserini.encode output while it is written


def patch_document_encoders(module) -> None:
    """Put ``csplade`` first in ``document_encoder_class_map`` (the first substring match wins); read only
    ``corpus.jsonl`` from a BEIR folder; mark Pyserini's JSONL output as partial until it is complete."""
    require(module, "document_encoder_class_map", "JsonlCollectionIterator._load",
            "JsonlRepresentationWriter.__enter__", "JsonlRepresentationWriter.__exit__")
    mapping = module.document_encoder_class_map
    others = {k: v for k, v in mapping.items() if k != "csplade"}
    mapping.clear()
    mapping["csplade"] = _CspladeDocumentEncoder
    mapping.update(others)
    _patch_beir_folder(module.JsonlCollectionIterator)
    _patch_jsonl_writer(module.JsonlRepresentationWriter)


def _patch_beir_folder(iterator_cls) -> None:
    """``--corpus DIR`` on a BEIR folder: Pyserini reads every file of DIR, ``queries.jsonl`` included, as
    documents (and then crashes on the qrels folder). A BEIR folder's documents are ``corpus.jsonl``."""
    if getattr(iterator_cls, "_csplade_patched", False):
        return
    original = iterator_cls._load

    def load(self, collection_path):
        import os

        if os.path.isdir(collection_path):
            for name in ("corpus.jsonl", "corpus.jsonl.gz"):
                if os.path.isfile(os.path.join(collection_path, name)) and os.path.exists(
                        os.path.join(collection_path, "queries.jsonl")):
                    return original(self, os.path.join(collection_path, name))
        return original(self, collection_path)

    iterator_cls._load = load
    iterator_cls._csplade_patched = True


def _patch_jsonl_writer(writer_cls) -> None:
    """A marker file beside ``embeddings.jsonl`` while it is written, removed when the encode succeeds:
    ``csplade_pyserini.index`` refuses a folder that still has it (a killed or a running encode)."""
    if getattr(writer_cls, "_csplade_patched", False):
        return
    enter, leave = writer_cls.__enter__, writer_cls.__exit__

    def __enter__(self):
        import os

        marker = os.path.join(self.dir_path, PARTIAL_MARKER)
        if os.path.exists(marker):
            try:
                pid = int(open(marker).read().strip() or 0)
                os.kill(pid, 0)
            except (OSError, ValueError):
                pass  # a killed encode's marker: this run replaces its output
            else:
                raise RuntimeError(f"{self.dir_path}: another pyserini.encode (pid {pid}) is writing here right now")
        os.makedirs(self.dir_path, exist_ok=True)
        with open(marker, "w") as handle:
            handle.write(f"{os.getpid()}\n")
        return enter(self)

    def __exit__(self, exc_type, exc, tb):
        import os

        result = leave(self, exc_type, exc, tb)
        if exc_type is None:
            os.unlink(os.path.join(self.dir_path, PARTIAL_MARKER))
        return result

    writer_cls.__enter__, writer_cls.__exit__ = __enter__, __exit__
    writer_cls._csplade_patched = True


def patch_impact_searcher(module) -> None:
    """Resolve ``csplade[:MODEL]`` query encoders (and our pre-encoded query files) and check their
    vocabulary and model against the index."""
    require(module, "LuceneImpactSearcher._init_query_encoder_from_str", "LuceneImpactSearcher.__init__")
    searcher_cls = module.LuceneImpactSearcher
    if getattr(searcher_cls, "_csplade_patched", False):
        return
    original_from_str = searcher_cls._init_query_encoder_from_str
    original_init = searcher_cls.__init__

    def init_query_encoder_from_str(query_encoder):
        from csplade_pyserini.model.spec import is_csplade_spec

        if is_csplade_spec(query_encoder):
            from csplade_pyserini.integration.encoders import CspladeQueryEncoder

            return CspladeQueryEncoder(query_encoder)
        from csplade_pyserini.integration.encoders import PreEncodedQueryEncoder, is_preencoded_queries

        if is_preencoded_queries(query_encoder):  # ours: Pyserini's format plus the model's info, checked
            return PreEncodedQueryEncoder(query_encoder)
        return original_from_str(query_encoder)

    @functools.wraps(original_init)
    def init(self, index_dir, query_encoder, *args, **kwargs):
        original_init(self, index_dir, query_encoder, *args, **kwargs)
        attach = getattr(self.query_encoder, "attach_index", None)
        if attach is not None:  # checks the index's model, keeps its idf (for the inference-free query side)
            attach(index_dir, self.idf)

    searcher_cls._init_query_encoder_from_str = staticmethod(init_query_encoder_from_str)
    searcher_cls.__init__ = init
    searcher_cls._csplade_patched = True
