"""TREC run tools against a real Lucene index and through the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO, RUN_FIXTURES

GOOD = RUN_FIXTURES / "good.txt"


def test_check_and_pack_against_a_lucene_index(tmp_path, topics):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "docs.jsonl").write_text("".join(json.dumps({"id": f"d{i}", "contents": f"text number {i}"}) + "\n"
                                       for i in range(1, 5)))
    index = tmp_path / "index"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-m", "pyserini.index.lucene", "--collection", "JsonCollection",
                    "--input", str(docs), "--index", str(index), "--threads", "1"],
                   check=True, capture_output=True, env=env)
    (index / "csplade-index.info").write_text(json.dumps({"card": {"model": "from-index"}}))
    out = tmp_path / "packed"
    script = (
        "import sys; from csplade_pyserini.runs.__main__ import main; "
        f"print('RC', main(['check', {str(RUN_FIXTURES / 'unknown_docid.txt')!r}, '--topics', {str(topics)!r}, "
        f"'--index', {str(index)!r}])); "
        f"print('RC', main(['pack', {str(GOOD)!r}, '--output', {str(out)!r}, '--index', {str(index)!r}]))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert [line for line in done.stdout.splitlines() if line.startswith("RC")] == ["RC 1", "RC 0"]
    assert f"{RUN_FIXTURES / 'unknown_docid.txt'}:2: docid 'd9' is not in the index {index}" in done.stdout
    meta = json.loads((out / "good.txt.meta.json").read_text())
    assert meta["index"] == {"path": str(index), "documents": 4, "unique_terms": 6}
    assert meta["model_card"] == {"model": "from-index"}


def test_fuse_onto_a_device_node_leaves_it_a_device(tmp_path):
    import os
    import stat

    from conftest import run_python

    run = tmp_path / "run.txt"
    run.write_text("1 Q0 a 1 2.0 t\n1 Q0 b 2 1.0 t\n")
    null = tmp_path / "null"
    try:
        os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("creating a device node needs root")
    run_python("-m", "csplade_pyserini.runs", "fuse", str(run), str(run), "--output", str(null))
    assert stat.S_ISCHR(null.stat().st_mode)
