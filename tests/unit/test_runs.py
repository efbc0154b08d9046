"""TREC run tools: the validator names each problem and its line, fix/fuse give exactly known files,
pack writes the run and its metadata, and the CLI exit codes say what happened."""

from __future__ import annotations

import gzip
import json
import os
import tarfile
from pathlib import Path

import pytest
from conftest import RUN_FIXTURES

import csplade_pyserini
from csplade_pyserini.errors import InputError
from csplade_pyserini.runs import check_run, fix_run, fuse_runs, pack_run, read_run
from csplade_pyserini.runs.__main__ import main
from csplade_pyserini.runs.format import RunFileError

GOOD = RUN_FIXTURES / "good.txt"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- check ----------------------------------------------------------------------------------------
MALFORMED = [
    ("columns.txt", {}, [(2, "expected 6 columns 'qid Q0 docid rank score tag', found 5")]),
    ("q0.txt", {}, [(3, "second column is 'q0', expected 'Q0'")]),
    ("score_text.txt", {}, [(4, "score 'high' is not a number")]),
    ("score_nonfinite.txt", {}, [(1, "score 'inf' is not finite"), (5, "score 'nan' is not finite")]),
    ("rank_text.txt", {}, [(2, "rank '2.0' is not an integer")]),
    ("tags.txt", {}, [(4, "tag 'splade' differs from 'bm25' (line 1); a run has one tag")]),
    ("duplicate.txt", {}, [(3, "docid 'd3' appears again in topic '1' (first on line 1)")]),
    ("rank_order.txt", {}, [(4, "rank 1 of docid 'd4' in topic '2' should be 2"),
                            (5, "rank 2 of docid 'd1' in topic '2' should be 1")]),
    ("tie_order.txt", {}, [(2, "rank 2 of docid 'd1' in topic '1' should be 3"),
                           (3, "rank 3 of docid 'd2' in topic '1' should be 2")]),
    ("deep.txt", {"depth": 3}, [(4, "topic '1' has 4 lines, more than the depth 3")]),
    ("missing_topic.txt", {}, [(None, "topic '2' of the topics has no lines in the run")]),
    ("extra_topic.txt", {}, [(6, "topic '3' is not in the topics")]),
]


@pytest.mark.parametrize("name, options, expected", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_check_reports_each_problem_with_its_line(name, options, expected, topics):
    from csplade_pyserini.datasets import load_topics

    path = RUN_FIXTURES / name
    result = check_run(path, topics=load_topics(topics), **options)
    assert not result.ok
    messages = result.messages()
    assert len(messages) == len(expected), messages
    for message, (line, text) in zip(messages, expected):
        prefix = f"{path}:{line}: " if line is not None else f"{path}: "
        assert message.startswith(prefix + text), message


def test_check_accepts_the_good_run(topics):
    from csplade_pyserini.datasets import load_topics

    result = check_run(GOOD, topics=load_topics(topics))
    assert result.ok, result.messages()
    assert (result.topics, result.lines, result.tags) == (2, 5, ["bm25"])


def test_check_with_qrels_reports_judged_and_unanswered_topics(tmp_path):
    qrels = {"1": {"d3": 1, "d2": 0}, "2": {"d9": 1}, "7": {"d1": 1}}
    result = check_run(GOOD, qrels=qrels)
    assert result.messages() == [f"{GOOD}: topic '7' has relevance judgements but no lines in the run"]
    assert result.judged_at_10 == pytest.approx((2 / 3 + 0 / 2) / 2)


def test_cli_check_exit_codes(topics, capsys):
    assert main(["check", str(GOOD), "--topics", str(topics)]) == 0
    assert capsys.readouterr().out.strip() == f"{GOOD}: OK, 2 topics, 5 lines, tag 'bm25'"

    bad = RUN_FIXTURES / "rank_order.txt"
    assert main(["check", str(bad), "--topics", str(topics)]) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0].startswith(f"{bad}:4: rank 1 of docid 'd4'")
    assert f"{bad}: 2 problem(s)" in captured.err

    assert main(["check", str(GOOD), "--topics", str(topics.with_name("nope.tsv"))]) == 1
    assert "unknown topics" in capsys.readouterr().err


# --- fix ------------------------------------------------------------------------------------------
def test_fix_gives_an_exactly_known_run(tmp_path, topics):
    run = write(tmp_path / "messy.txt", "\n".join([
        "2 Q0 b 9 1.5 old",
        "1 Q0 c 1 0.5 new",
        "1 Q0 a 1 2.0 new",
        "1 Q0 b 5 2.0 new",
        "1 Q0 a 2 3.25 new",  # duplicate of a, higher: this one stays
        "1 Q0 d 7 -1 new",
        "2 Q0 a 3 1.5 old",
        "",
    ]))
    out = tmp_path / "fixed.txt"
    assert fix_run(run, out, depth=3, tag="fixed") == 5
    assert out.read_text() == (
        "1 Q0 a 1 3.25 fixed\n"
        "1 Q0 b 2 2.0 fixed\n"
        "1 Q0 c 3 0.5 fixed\n"
        "2 Q0 b 1 1.5 fixed\n"  # a tie: docid descending, as trec_eval ranks
        "2 Q0 a 2 1.5 fixed\n"
    )
    assert main(["check", str(out), "--topics", str(topics)]) == 0
    # Without --tag the first line's tag wins.
    fix_run(run, out)
    assert {line.split()[5] for line in out.read_text().splitlines()} == {"old"}


def test_fix_refuses_malformed_lines_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out.txt"
    with pytest.raises(RunFileError) as info:
        fix_run(RUN_FIXTURES / "score_nonfinite.txt", out)
    assert [(p.line, p.field) for p in info.value.problems] == [(1, "score"), (5, "score")]
    assert main(["fix", str(RUN_FIXTURES / "columns.txt"), "--output", str(out)]) == 1
    assert f"{RUN_FIXTURES / 'columns.txt'}:2: expected 6 columns" in capsys.readouterr().err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_fix_rejects_a_tag_with_whitespace(tmp_path):
    with pytest.raises(InputError, match="tag"):
        fix_run(GOOD, tmp_path / "out.txt", tag="two words")
    assert not (tmp_path / "out.txt").exists()


# --- fuse -----------------------------------------------------------------------------------------
def test_rrf_scores_and_order_by_hand(tmp_path, topics):
    first = write(tmp_path / "a.txt", "1 Q0 a 1 3.0 x\n1 Q0 b 2 2.0 x\n1 Q0 c 3 1.0 x\n"
                                      "2 Q0 x 1 2.0 x\n2 Q0 y 2 1.0 x\n")
    # Rank column deliberately wrong: ranks come from the scores (c, a, d), not from what is written.
    second = write(tmp_path / "b.txt", "1 Q0 d 1 0.1 y\n1 Q0 a 1 0.5 y\n1 Q0 c 1 0.9 y\n"
                                       "2 Q0 x 7 1.0 y\n2 Q0 y 3 2.0 y\n")
    out = tmp_path / "fused.txt"
    assert main(["fuse", str(first), str(second), "--output", str(out)]) == 0

    expected = [("1", "a", 1 / 61 + 1 / 62), ("1", "c", 1 / 63 + 1 / 61), ("1", "b", 1 / 62), ("1", "d", 1 / 63),
                ("2", "y", 1 / 61 + 1 / 62), ("2", "x", 1 / 61 + 1 / 62)]  # x and y tie: docid descending
    rows = [line.split() for line in out.read_text().splitlines()]
    assert [(r[0], r[2], float(r[4])) for r in rows] == expected
    assert [float(r[4]) for r in rows[:4]] == pytest.approx([0.0325224749, 0.0322664585, 0.0161290323, 0.0158730159])
    assert [int(r[3]) for r in rows] == [1, 2, 3, 4, 1, 2]
    assert {r[5] for r in rows} == {"rrf"}
    assert check_run(out, depth=1000).ok

    fuse_runs([first, second], out, k=0, depth=2, tag="rrf0")
    hits = read_run(out)
    assert [(h.qid, h.docid, h.score) for h in hits] == [
        ("1", "a", 1 + 1 / 2), ("1", "c", 1 / 3 + 1), ("2", "y", 1 / 2 + 1), ("2", "x", 1 + 1 / 2)]


def test_fuse_needs_two_runs(tmp_path):
    with pytest.raises(SystemExit) as info:
        main(["fuse", str(GOOD), "--output", str(tmp_path / "out.txt")])
    assert info.value.code == 2
    assert not (tmp_path / "out.txt").exists()


# --- pack -----------------------------------------------------------------------------------------
META_KEYS = {"run", "file", "sha256", "toolkit", "command", "topics", "model_card", "index", "check"}


def test_pack_writes_run_and_metadata(tmp_path, topics):
    card = write(tmp_path / "card.json", json.dumps({"model": "csplade-test", "vocab": 32000}))
    out = tmp_path / "packed"
    assert main(["pack", str(GOOD), "--output", str(out), "--topics", str(topics),
                 "--model-card", str(card)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["good.txt.gz", "good.txt.meta.json"]
    assert gzip.decompress((out / "good.txt.gz").read_bytes()) == GOOD.read_bytes()
    meta = json.loads((out / "good.txt.meta.json").read_text())
    assert set(meta) == META_KEYS
    assert meta["toolkit"]["version"] == csplade_pyserini.__version__
    assert {"git_commit", "git_dirty"} <= set(meta["toolkit"])
    assert meta["model_card"] == {"model": "csplade-test", "vocab": 32000}
    assert meta["index"] is None and meta["topics"] == str(topics)
    assert meta["check"]["ok"] and "topics" in meta["check"]["checked"]
    assert isinstance(meta["command"], list)


def test_pack_into_an_archive(tmp_path):
    out = tmp_path / "good.tar.gz"
    assert pack_run(GOOD, out) == [out]
    with tarfile.open(out) as archive:
        assert archive.getnames() == ["good.txt.gz", "good.txt.meta.json"]
        meta = json.load(archive.extractfile("good.txt.meta.json"))
    assert set(meta) == META_KEYS and meta["model_card"] is None and meta["topics"] is None
    assert "topics" not in meta["check"]["checked"]


def test_pack_refuses_a_run_that_fails_check(tmp_path, topics, capsys):
    out = tmp_path / "packed"
    assert main(["pack", str(RUN_FIXTURES / "missing_topic.txt"), "--output", str(out), "--topics", str(topics)]) == 1
    assert "topic '2' of the topics has no lines in the run" in capsys.readouterr().err
    assert not out.exists()


# --- the index check (one test, with Java) -----------------------------------------------------------


def test_outputs_through_symlinks_and_into_non_regular_files_are_written_not_replaced(tmp_path):
    """A symlinked output keeps its link and gets the new content at its target; a FIFO (as /dev/null or a
    terminal would) is written into, never replaced by a regular file."""
    import threading

    from csplade_pyserini.atomic import atomic_file

    target = tmp_path / "real.txt"
    target.write_text("old\n")
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    with atomic_file(link) as handle:
        handle.write("new\n")
    assert link.is_symlink() and target.read_text() == "new\n"

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()))
    reader.start()
    with atomic_file(fifo) as handle:
        handle.write("through the pipe\n")
    reader.join(timeout=10)
    assert received == ["through the pipe\n"]
    assert not fifo.is_file() and fifo.exists()  # still a FIFO
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left


