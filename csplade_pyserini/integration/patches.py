"""The patches the start-up hook applies to Pyserini; each is small and leaves other encoders alone."""

from __future__ import annotations

import functools
import logging
import sys

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
    """Before ``pyserini`` executes: Java 21+, offline topics/qrels where Anserini looks for them, and
    OpenMP's passive wait policy for the torch Pyserini is about to load (:func:`~csplade_pyserini.cli.
    prefer_passive_openmp`)."""
    global _JAVA_HOME
    from csplade_pyserini.cli import prefer_passive_openmp
    from csplade_pyserini.paths import topics_dir

    prefer_passive_openmp()
    logging.getLogger("torchao").addFilter(UnloadableKernels())
    _JAVA_HOME = java.configure_java()
    java.link_offline_topics(topics_dir())


class UnloadableKernels(logging.Filter):
    """Drops torchao's "Failed to load ..." warnings about its optional compiled kernels (CUDA, MX formats,
    built for other Python versions), which transformers' import of torchao printed on every Pyserini command.
    They concern kernels this process never calls; torchao's other messages pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.getMessage().startswith("Failed to load ") and ".so" in record.getMessage())


# Java leaves SIGTERM and SIGINT to Python: without it the JVM's own handler can hang in vm_exit while the
# main thread waits in JNI (class loading), so timeout, schedulers and Ctrl-C would need SIGKILL.
REDUCE_SIGNALS = "-Xrs"


def prepare_jvm_options() -> None:
    """Before ``jnius`` starts the JVM for Pyserini: let Python handle signals (``-Xrs``), and drop the
    options the selected runtime cannot honour. The user's own options are kept; a ``jnius`` imported
    without Pyserini is left alone."""
    import jnius_config

    if "pyserini" not in sys.modules:
        return
    options = list(jnius_config.get_options())
    home = _JAVA_HOME or java.select_java_home()[0]
    kept = java.drop_missing_jvm_modules(options, home)
    if REDUCE_SIGNALS not in kept:
        kept.append(REDUCE_SIGNALS)
    if kept != options:
        jnius_config.set_options(*kept)


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


def _deferred(name: str) -> type:
    """A stand-in for ``encoders.NAME`` until Pyserini instantiates it: that module imports
    ``pyserini.encode``, so it cannot be imported while ``pyserini.encode`` itself is being patched."""

    def __new__(cls, *args, **kwargs):
        from csplade_pyserini.integration import encoders

        return getattr(encoders, name)(*args, **kwargs)

    return type(name, (), {"__new__": __new__, "__doc__": f"Deferred csplade_pyserini.integration.encoders.{name}"})


_CspladeDocumentEncoder = _deferred("CspladeDocumentEncoder")
_CspladeDenseDocumentEncoder = _deferred("CspladeDenseDocumentEncoder")
_CspladeDenseQueryEncoder = _deferred("CspladeDenseQueryEncoder")


class _SparseInFaiss:
    """``pyserini.search.faiss --encoder csplade...``: a sparse model has no FAISS index to search; say where
    it goes instead of letting Pyserini try to load ``csplade`` as a Hugging Face dense encoder."""

    def __new__(cls, encoder_dir: str = "csplade", *args, **kwargs):
        from csplade_pyserini.errors import ModelSpecError

        raise ModelSpecError(f"--encoder {encoder_dir} is a sparse (impact) model: search its Lucene impact index "
                             "with pyserini.search.lucene --impact; pyserini.search.faiss takes csplade-dense[:MODEL]")


PARTIAL_MARKER = "csplade-encoding.partial"  # in a literal pyserini.encode output while it is written


def _put_first(mapping: dict, entries: dict) -> None:
    """``entries`` at the front of ``mapping``, in order (Pyserini takes the first key that is a substring of
    ``--encoder``: ``csplade-dense`` must come before ``csplade``, and both before ``splade``)."""
    others = {k: v for k, v in mapping.items() if k not in entries}
    mapping.clear()
    mapping.update(entries)
    mapping.update(others)


def patch_document_encoders(module) -> None:
    """Put ``csplade-dense`` and ``csplade`` first in ``document_encoder_class_map`` and ``csplade-dense`` in
    ``query_encoder_class_map`` (the FAISS search's); read only ``corpus.jsonl`` from a BEIR folder; mark
    Pyserini's JSONL output as partial until it is complete."""
    require(module, "document_encoder_class_map", "query_encoder_class_map", "JsonlCollectionIterator._load",
            "JsonlRepresentationWriter.__enter__", "JsonlRepresentationWriter.__exit__")
    _put_first(module.document_encoder_class_map, {"csplade-dense": _CspladeDenseDocumentEncoder,
                                                   "csplade": _CspladeDocumentEncoder})
    _put_first(module.query_encoder_class_map, {"csplade-dense": _CspladeDenseQueryEncoder, "csplade": _SparseInFaiss})
    _patch_beir_folder(module.JsonlCollectionIterator)
    _patch_partial_marker(module.JsonlRepresentationWriter)


def patch_faiss_writer(module) -> None:
    """``pyserini.encode ... --to-faiss`` with a ``csplade-dense`` encoder: the index takes the model's
    dimension (Pyserini builds it from ``--dimension``, default 768, before the encoder has spoken; a
    different value is reported and not used), the folder gets the model's record (the query encoder checks
    it), and the output is marked partial until complete. Other encoders are left as they are."""
    require(module, "FaissRepresentationWriter.write", "FaissRepresentationWriter.__exit__")
    writer_cls = module.FaissRepresentationWriter
    if getattr(writer_cls, "_csplade_dense_patched", False):
        return
    write, leave = writer_cls.write, writer_cls.__exit__

    def ours():
        from csplade_pyserini.integration.encoders import ACTIVE_DENSE_MODELS

        return ACTIVE_DENSE_MODELS[-1] if ACTIVE_DENSE_MODELS else None

    def write_vectors(self, batch_info, fields=None):
        model = ours()
        if model is not None and self.index.ntotal == 0 and self.index.d != model.encoder.dimension:
            import faiss

            logger.warning("ignoring --dimension %d: the model's vectors have %d dimensions", self.index.d,
                           model.encoder.dimension)
            self.dimension = model.encoder.dimension
            self.index = faiss.IndexFlatIP(self.dimension)
        return write(self, batch_info, fields)

    def __exit__(self, exc_type, exc, tb):
        import json
        import os

        model = ours()
        if model is not None and exc_type is None:
            from csplade_pyserini.atomic import atomic_file
            from csplade_pyserini.vectors.jsonvec import INDEX_INFO_NAME

            with atomic_file(os.path.join(self.dir_path, INDEX_INFO_NAME)) as handle:
                json.dump({**model.info(), "dimension": int(self.index.d), "documents": int(self.index.ntotal)},
                          handle, indent=2)
        return leave(self, exc_type, exc, tb)

    writer_cls.write, writer_cls.__exit__ = write_vectors, __exit__
    writer_cls._csplade_dense_patched = True
    _patch_partial_marker(writer_cls)


def patch_faiss_searcher(module) -> None:
    """``pyserini.search.faiss --encoder csplade-dense[:MODEL]``: check the index's model record against
    the query encoder (another model's index would be searched without error and without sense)."""
    require(module, "FaissSearcher.__init__")
    _check_index_on_init(module.FaissSearcher, idf=lambda searcher: None)


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


def _patch_partial_marker(writer_cls) -> None:
    """A marker file beside the output (``embeddings.jsonl``, a FAISS ``index``) while it is written, removed
    when the encode succeeds: ``csplade_pyserini.index`` refuses a folder that still has it (a killed or a
    running encode)."""
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

    def init_query_encoder_from_str(query_encoder):
        from csplade_pyserini.integration.encoders import is_preencoded_queries, query_encoder as ours
        from csplade_pyserini.model.spec import is_csplade_spec

        # a csplade spec, or our pre-encoded file (Pyserini's format plus the model's info, checked); any other
        # value, Pyserini's own pre-encoded files included, is Pyserini's
        if is_csplade_spec(query_encoder) or is_preencoded_queries(query_encoder):
            return ours(query_encoder)
        return original_from_str(query_encoder)

    searcher_cls._init_query_encoder_from_str = staticmethod(init_query_encoder_from_str)
    _check_index_on_init(searcher_cls, idf=lambda searcher: searcher.idf)


def _check_index_on_init(searcher_cls, idf) -> None:
    """After ``searcher_cls(index_dir, query_encoder, ...)``, let a CSPLADE query encoder check the index's
    model and keep what it needs of the index (``idf(searcher)``: the inference-free query side's weights)."""
    if getattr(searcher_cls, "_csplade_patched", False):
        return
    original_init = searcher_cls.__init__

    @functools.wraps(original_init)
    def init(self, index_dir, query_encoder=None, *args, **kwargs):
        original_init(self, index_dir, query_encoder, *args, **kwargs)
        attach = getattr(getattr(self, "query_encoder", None), "attach_index", None)
        if attach is not None:
            attach(index_dir, idf(self))

    searcher_cls.__init__ = init
    searcher_cls._csplade_patched = True
