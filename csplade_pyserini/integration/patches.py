"""The patches the start-up hook applies to Pyserini; each is small and leaves other encoders alone."""

from __future__ import annotations

import functools
import logging

from csplade_pyserini.integration import java

logger = logging.getLogger(__name__)

_JAVA_HOME = None


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


def add_topic_aliases(module) -> None:
    """Accept BEIR names as Anserini spells its files (``beir-v1.0.0-scifact.test``) besides Pyserini's
    ``beir-v1.0.0-scifact-test``; both resolve to the same Anserini topics and qrels."""
    for mapping in (module.topics_mapping, module.qrels_mapping):
        for name, value in list(mapping.items()):
            if name.startswith("beir-v1.0.0-") and name.endswith("-test"):
                mapping.setdefault(name[: -len("-test")] + ".test", value)


def is_csplade_spec(name) -> bool:
    return isinstance(name, str) and (name == "csplade" or name.startswith(("csplade:", "csplade,")))


def patch_document_encoders(module) -> None:
    """Put ``csplade`` first in ``document_encoder_class_map`` (the first substring match wins)."""
    from csplade_pyserini.integration.encoders import CspladeDocumentEncoder

    mapping = module.document_encoder_class_map
    others = {k: v for k, v in mapping.items() if k != "csplade"}
    mapping.clear()
    mapping["csplade"] = CspladeDocumentEncoder
    mapping.update(others)


def patch_impact_searcher(module) -> None:
    """Resolve ``csplade[:MODEL]`` query encoders and check their vocabulary against the index."""
    searcher_cls = module.LuceneImpactSearcher
    if getattr(searcher_cls, "_csplade_patched", False):
        return
    original_from_str = searcher_cls._init_query_encoder_from_str
    original_init = searcher_cls.__init__

    def init_query_encoder_from_str(query_encoder):
        if is_csplade_spec(query_encoder):
            from csplade_pyserini.integration.encoders import CspladeQueryEncoder

            return CspladeQueryEncoder(query_encoder)
        return original_from_str(query_encoder)

    @functools.wraps(original_init)
    def init(self, index_dir, query_encoder, *args, **kwargs):
        original_init(self, index_dir, query_encoder, *args, **kwargs)
        check = getattr(self.query_encoder, "check_index_vocabulary", None)
        if check is not None:
            check(index_dir, self.idf.keys())

    searcher_cls._init_query_encoder_from_str = staticmethod(init_query_encoder_from_str)
    searcher_cls.__init__ = init
    searcher_cls._csplade_patched = True
