"""The Pyserini 2.x offline shim, with fake fetchers (no Pyserini needed, so it runs on both lines): the
network's answer wins when there is one; offline, Pyserini's tables come from the offline topics/qrels."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import types
import urllib.error
import urllib.request

import pytest
from conftest import shared

from csplade_pyserini.integration import pyserini2

EVAL = f"{pyserini2.FETCH_PREFIX}eval/0b4acbd929edd11edfd16250457fb70ff69e9b4f/"
INDEXES = f"{pyserini2.FETCH_PREFIX}prebuilt-indexes/367560b4de7d9c3486f666dcc2df7783ca7758f2/"


@pytest.fixture(autouse=True)
def fresh_state(monkeypatch):
    monkeypatch.setattr(pyserini2, "_network_failed", None)
    monkeypatch.delenv(pyserini2.OFFLINE_ENV, raising=False)
    monkeypatch.setenv("CSPLADE_TOPICS_DIR", str(shared() / "data" / "topics-and-qrels"))


def unreachable(url, *args, **kwargs):
    raise urllib.error.URLError("[Errno -2] Name or service not known")


def test_offline_tables_list_the_offline_files_under_both_spellings():
    folder = shared() / "data" / "topics-and-qrels"
    topics, qrels = pyserini2.offline_topics_table(folder), pyserini2.offline_qrels_table(folder)
    for name in ("beir-v1.0.0-scifact-test", "beir-v1.0.0-scifact.test"):
        assert topics[name]["path"] == "topics.beir-v1.0.0-scifact.test.tsv.gz"
        assert topics[name]["reader_class"].endswith("TsvStringTopicReader")
        assert qrels[name] == "qrels.beir-v1.0.0-scifact.test.txt"
    assert topics["dl19-passage"]["path"] == "topics.dl19-passage.txt"
    assert qrels["msmarco-passage-dev-subset"] == "qrels.msmarco-passage.dev-subset.txt"
    assert all((folder / entry["path"]).is_file() for entry in topics.values())
    assert pyserini2.offline_topics_table(None) == {} == pyserini2.offline_qrels_table(folder / "missing")


def test_unreachable_network_gives_offline_tables_and_remembers_it(caplog):
    calls = []

    def original(url, *args, **kwargs):
        calls.append(url)
        return unreachable(url)

    urlopen = pyserini2.tolerant_urlopen(original)
    with urlopen(EVAL + "topics.json") as response:
        topics = json.loads(response.read().decode("utf-8"))
    assert topics["beir-v1.0.0-scifact-test"]["path"] == "topics.beir-v1.0.0-scifact.test.tsv.gz"
    assert "answered offline (URLError" in caplog.text
    assert json.load(urlopen(EVAL + "qrels-aliases.json")) == {}
    assert json.load(urlopen(INDEXES + "faiss/beir-faiss.json")) == {}
    assert calls == [EVAL + "topics.json"]  # one failure, then no more waiting on the network
    with pytest.raises(urllib.error.URLError):  # no offline answer for other files: the failure stays
        urlopen(EVAL + "something-else.json")


def test_prebuilt_tables_keep_the_names_pyserini_looks_up_at_import(tmp_path, monkeypatch):
    source = tmp_path / "prebuilt_index_info.py"
    source.write_text('X = {"a": 1}\nALIASES = {"old": X["msmarco-v1-passage.unicoil"]}\n'
                      'def later():\n    return X["not-at-import"]\n')
    fake = types.ModuleType(pyserini2.INDEX_INFO_MODULE)
    fake.__file__ = str(source)
    monkeypatch.setitem(sys.modules, pyserini2.INDEX_INFO_MODULE, fake)
    records = json.load(pyserini2.tolerant_urlopen(unreachable)(INDEXES + "lucene/msmarco-v1-passage-impact.json"))
    assert [r["name"] for r in records] == ["msmarco-v1-passage.unicoil"]
    assert records[0]["urls"] == [] and {"description", "filename", "md5", "size"} <= set(records[0])


def test_with_a_network_pyserini_gets_its_own_answers():
    answer = io.BytesIO(b'{"online": 1}')
    urlopen = pyserini2.tolerant_urlopen(lambda url, *a, **k: answer)
    assert urlopen(EVAL + "topics.json") is answer
    assert pyserini2._network_failed is None

    def not_found(url, *args, **kwargs):
        raise urllib.error.HTTPError(url, 404, "Not Found", {}, None)

    with pytest.raises(urllib.error.HTTPError):  # the server answered: not an offline machine
        pyserini2.tolerant_urlopen(not_found)(EVAL + "topics.json")
    with pytest.raises(urllib.error.URLError):  # other hosts are never answered offline
        pyserini2.tolerant_urlopen(unreachable)("https://example.org/topics.json")


def test_forced_offline_skips_the_network_and_copies_topic_files(tmp_path, monkeypatch):
    monkeypatch.setenv(pyserini2.OFFLINE_ENV, "1")
    urlretrieve = pyserini2.tolerant_urlretrieve(lambda *a, **k: pytest.fail("the network was tried"))
    target = tmp_path / "qrels.beir-v1.0.0-scifact.test.txt"
    assert urlretrieve(EVAL + "qrels/qrels.beir-v1.0.0-scifact.test.txt", target) == (str(target), None)
    assert target.read_bytes() == (shared() / "data" / "topics-and-qrels" / target.name).read_bytes()
    with pytest.raises(urllib.error.URLError, match="offline"):
        urlretrieve(EVAL + "topics/topics.not-here.tsv", tmp_path / "x")


def test_wrappers_are_swapped_in_only_until_undone():
    before = urllib.request.urlopen, urllib.request.urlretrieve
    undo = pyserini2.tolerant_fetches()
    assert urllib.request.urlopen._csplade_original is before[0]
    assert urllib.request.urlretrieve._csplade_original is before[1]
    undo()
    assert (urllib.request.urlopen, urllib.request.urlretrieve) == before


def test_lazy_tables_get_aliases_when_handed_out():
    base = types.ModuleType("pyserini.search._base")
    tables = {"topics": {"beir-v1.0.0-scifact-test": {"path": "t"}}, "qrels": {"beir-v1.0.0-scifact-test": "q"}}
    base._get_topics_mapping = lambda: tables["topics"]
    base._get_qrels_mapping = lambda: tables["qrels"]
    from csplade_pyserini.integration.patches import _add_beir_aliases

    pyserini2.add_topic_aliases(base, _add_beir_aliases)
    pyserini2.add_topic_aliases(base, _add_beir_aliases)  # idempotent
    assert base._get_topics_mapping()["beir-v1.0.0-scifact.test"] == {"path": "t"}
    assert base._get_qrels_mapping()["beir-v1.0.0-scifact.test"] == "q"
    assert base._get_topics_mapping.__wrapped__.__name__ == "<lambda>"


PROBE_2X = """
import os
from pyserini.prebuilt_index_info import IMPACT_INDEX_INFO
from pyserini.search import get_qrels_file, get_topics
print("inert", IMPACT_INDEX_INFO["msmarco-passage-unicoil-d2q"]["urls"])
print("topics", len(get_topics("beir-v1.0.0-scifact.test")), len(get_topics("dl19-passage")))
qrels = get_qrels_file("beir-v1.0.0-scifact-test")
print("qrels", os.path.dirname(qrels) == os.path.join(os.environ["PYSERINI_CACHE"], "qrels"), os.path.getsize(qrels))
"""


def test_pyserini2_imports_and_resolves_topics_offline(tmp_path):
    """Through the real Pyserini 2.x modules, with the network not even tried: the import-time table lookups
    get inert entries, topics and qrels come from the offline files into Pyserini's own cache."""
    from csplade_pyserini.integration.patches import pyserini_line, pyserini_version

    if pyserini_line() != "2.x":
        pytest.skip(f"Pyserini {pyserini_version()} fetches no tables over HTTP (the shim is for the 2.x line)")
    from conftest import run_python

    out = run_python("-c", PROBE_2X, cwd=tmp_path, env={pyserini2.OFFLINE_ENV: "1",
                                                         "PYSERINI_CACHE": str(tmp_path / "cache")}).stdout
    size = (shared() / "data" / "topics-and-qrels" / "qrels.beir-v1.0.0-scifact.test.txt").stat().st_size
    assert "inert []" in out and "topics 300 43" in out and f"qrels True {size}" in out


def test_only_an_unreachable_network_counts_as_offline():
    import errno
    import socket
    import ssl

    assert pyserini2.is_unreachable(urllib.error.URLError(socket.gaierror(-2, "Name or service not known")))
    assert pyserini2.is_unreachable(urllib.error.URLError(ConnectionRefusedError(errno.ECONNREFUSED, "refused")))
    assert pyserini2.is_unreachable(TimeoutError("timed out"))
    assert pyserini2.is_unreachable(urllib.error.URLError("[Errno -2] Name or service not known"))
    certificate = ssl.SSLCertVerificationError(1, "certificate verify failed")
    assert not pyserini2.is_unreachable(urllib.error.URLError(certificate))
    assert not pyserini2.is_unreachable(OSError(errno.ENOSPC, "No space left on device"))

    def bad_certificate(url, *args, **kwargs):
        raise urllib.error.URLError(certificate)

    with pytest.raises(urllib.error.URLError, match="certificate"):
        pyserini2.tolerant_urlopen(bad_certificate)(EVAL + "topics.json")


def test_the_offline_fallback_is_printed_once_when_no_logging_is_configured():
    code = ("import urllib.error\nfrom csplade_pyserini.integration import pyserini2\n"
            "def down(url, *a, **k):\n    raise urllib.error.URLError('[Errno -2] Name or service not known')\n"
            f"u = pyserini2.tolerant_urlopen(down)\nu({EVAL + 'topics.json'!r}).read()\nu({EVAL + 'topics.json'!r})\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("answered offline") == 1
