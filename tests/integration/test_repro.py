"""The reproduction matrices and their runner (``python -m csplade_pyserini.repro``).

Fast tests use hand-made numbers and injected results (a run file plus the pipeline's JSON report,
which the runner reuses instead of executing); one test runs BM25 on SciFact end to end (~30 s).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml
from conftest import run_python, shared

from csplade_pyserini.repro import matrix as mx
from csplade_pyserini.repro.__main__ import main as repro_main
from csplade_pyserini.repro.report import generate
from csplade_pyserini.repro.runner import (
    ERROR,
    FAIL,
    NO_REFERENCE,
    OK,
    OKISH,
    PUBLISHED,
    QUICK,
    SKIPPED,
    Settings,
    compare,
    load_results,
    plan,
    run_matrix,
)

VARIANTS = ("causal", "echo", "bidirectional")
OBJECTIVES = ("cl", "kd", "clkd")


def raw(collection: str) -> dict:
    return yaml.safe_load(mx.matrix_file(collection).read_text(encoding="utf-8"))


# --- the shipped matrices ----------------------------------------------------------------------
@pytest.mark.parametrize("collection", ["msmarco-passage", "beir"])
def test_shipped_matrices_validate(collection):
    import jsonschema

    data = raw(collection)
    jsonschema.validate(data, mx.SCHEMA)  # the schema alone
    matrix = mx.load_matrix(collection=collection)  # schema + cross-references
    names = [c.name for c in matrix.conditions]
    expected = ["bm25-flat", "splade-tiny", *(f"csplade-smollm2-{v}" for v in VARIANTS),
                "words-default", "words-alone", "csplade-cpu-lexical", "csplade-cpu-pure",
                *(f"csplade-{s}-{v}-{o}" for s in ("1b", "8b") for o in OBJECTIVES for v in VARIANTS)]
    assert set(expected) <= set(names)
    for condition in matrix.conditions:
        assert {"output", "threads", "batch_size", "index"} <= set(mx.placeholders(condition.command))
        if condition.pipeline:
            assert {"corpus", "threads", "report"} <= set(mx.placeholders(condition.pipeline))
        if condition.name.startswith(("csplade-1b", "csplade-8b")):
            assert condition.published and condition.requires
        if condition.name.startswith(("csplade-smollm2", "csplade-cpu", "words-")):
            assert not condition.published
            # measured here or not yet measured (null), never published figures
            assert all(v is None or 0.0 <= v <= 1.0 for e in condition.topics for v in e.scores.values())
    from csplade_pyserini.model.presets import PRESETS

    for name, preset in PRESETS.items():  # one condition per published checkpoint, run when the hub is there
        condition = matrix.condition(f"preset-{name}")
        prefix = "csplade-dense" if preset.card.get("representation") == "dense" else "csplade"  # FAISS path
        assert condition.model == f"{prefix}:{name}" and f"--encoder {prefix}:{name} " in condition.command
        assert (prefix == "csplade-dense") == condition.command.startswith("python -m pyserini.search.faiss")
        assert condition.requires == [f"hub:{preset.card['backbone'] or preset.card['adapter']}"]
        published = [(e.topic, e.scores) for e in condition.topics if e.published]
        assert published == ([("scifact", {"nDCG@10": 0.756, "R@100": None})]
                             if (name, collection) == ("laconic-1b", "beir") else [])
        assert all(v is None for e in condition.topics if not e.published for v in e.scores.values())
    if collection == "msmarco-passage":
        assert [t.key for t in matrix.topics] == ["dl19", "dl20", "dev", "dl19-pool"]
        assert matrix.column("dl19").metrics == {"MAP": "AP(rel=2)", "nDCG@10": "nDCG@10", "R@1K": "R(rel=2)@1000"}
        assert matrix.column("dev").metrics == {"RR@10": "RR@10", "R@1K": "R@1000"}
        assert matrix.column("dl19-pool").corpus == "dl19-pool" and matrix.column("dl19-pool").eval_key == "dl19-passage"
        paper = matrix.condition("csplade-8b-bidirectional-cl")  # METHOD.md: 41.3 / 99.1 / 74.1 / 72.8
        assert paper.expectation("dev").scores == {"RR@10": 0.413, "R@1K": 0.991}
        assert paper.expectation("dl19").scores["nDCG@10"] == 0.741 and paper.expectation("dl20").scores["nDCG@10"] == 0.728
        assert paper.expectation("dev").published and not paper.expectation("dl19-pool").published
        assert paper.published_index_gb == 6.7
        kd = matrix.condition("csplade-1b-echo-kd")  # METHOD.md has no KD figures: nothing invented
        assert all(v is None for e in kd.topics for v in e.scores.values())
    else:
        assert len(matrix.topics) == 13 and all(set(t.metrics) == {"nDCG@10", "R@100"} for t in matrix.topics)
        assert matrix.condition("csplade-8b-echo-cl").expectation("scifact").scores["nDCG@10"] == 0.732
        assert matrix.condition("csplade-1b-causal-cl").average.scores == {"nDCG@10": 0.488}


def test_broken_matrix_fails_with_a_clear_message(tmp_path):
    data = raw("beir")
    bad = copy.deepcopy(data)
    bad["conditions"][0]["topics"][0]["scores"][0]["nDCG@10"] = "high"
    with pytest.raises(mx.MatrixError) as info:
        mx.validate(bad, "bad.yaml")
    assert "bad.yaml" in str(info.value)
    assert "conditions[0].topics[0].scores[0].nDCG@10: 'high' is not of type 'number', 'null'" in str(info.value)

    bad = copy.deepcopy(data)
    bad["conditions"][0]["command"] = bad["conditions"][0]["command"].replace("{topics}", "{topic}")
    bad["conditions"][1]["topics"][0]["topic"] = "msmarco"
    del bad["conditions"][2]["command"]
    with pytest.raises(mx.MatrixError) as info:
        mx.validate(bad, "bad.yaml")
    assert "conditions[2]: 'command' is a required property" in str(info.value)
    del bad["conditions"][2]
    with pytest.raises(mx.MatrixError) as info:
        mx.validate(bad, "bad.yaml")
    message = str(info.value)
    assert "conditions[0] (bm25-flat).command: unknown placeholder {topic}" in message
    assert "conditions[1] (splade-pp-ed).topics[0]: unknown topic 'msmarco'" in message

    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(bad), encoding="utf-8")
    result = run_python("-m", "csplade_pyserini.repro", "--matrix", str(path), "--list-conditions", check=False)
    assert result.returncode == 2 and "invalid reproduction matrix" in result.stderr and "broken.yaml" in result.stderr


# --- the OK / OKish / FAIL rule ----------------------------------------------------------------
def test_ok_okish_fail_rule():
    assert compare(0.65434, 0.6543) == OK
    assert compare(0.6543, 0.6543) == OK
    assert compare(0.65426, 0.6543) == OK  # rounds to 0.6543
    assert compare(0.6542, 0.6543) == OKISH  # lower by 0.0001
    assert compare(0.6541, 0.6543) == OKISH  # lower by 0.0002
    assert compare(0.6540, 0.6543) == FAIL  # lower by 0.0003
    assert compare(0.7, 0.6543) == OKISH  # higher
    assert compare(0.5, 0.6543) == FAIL
    assert compare(0.5, None) == NO_REFERENCE
    assert compare(0.5, 0.732, published=True) == PUBLISHED  # reported with its difference, never FAIL
    assert compare(0.6543, 0.6543, quick=True) == QUICK  # QUICK is never OK


# --- dry run, listing, skipping ----------------------------------------------------------------
def test_list_conditions_and_dry_run_print_exact_commands(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert repro_main(["--collection", "msmarco-passage", "--list-conditions"]) == 0
    listed = capsys.readouterr().out.split()
    assert listed[0] == "bm25-flat" and "csplade-8b-bidirectional-clkd" in listed

    code = repro_main(["--collection", "beir", "--condition", "csplade-smollm2-echo", "--dry-run", "--threads", "3",
                       "--batch-size", "16", "--output", "out"])
    assert code == 0
    printed = capsys.readouterr().out.replace(" \\\n  ", " ")
    assert ("python -m csplade_pyserini.pipeline --collection scifact --no-bm25 --encoder csplade:smollm2,variant=echo "
            "--threads 3 --device cpu --hits 1000 --report out/reports/beir.csplade-smollm2-echo.scifact.json") in printed
    assert ("python -m csplade_pyserini.search --index index/beir-v1.0.0-nfcorpus.csplade-smollm2-echo "
            "--topics beir-v1.0.0-nfcorpus-test --encoder csplade:smollm2,variant=echo "
            "--output out/runs/run.beir.csplade-smollm2-echo.nfcorpus.txt --hits 1000 --threads 3 --batch-size 16 "
            "--device cpu") in printed
    assert printed.count("# SKIPPED: corpus") == 12
    assert not (tmp_path / "out").exists()  # nothing ran, nothing written

    assert repro_main(["--collection", "beir", "--condition", "bm25-flat", "--dry-run", "--quick"]) == 0
    printed = capsys.readouterr().out.replace(" \\\n  ", " ")
    assert "--no-csplade --threads" in printed and "beir.bm25-flat.scifact.quick.json --quick" in printed


def test_unavailable_corpora_are_skipped_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    matrix = mx.load_matrix(collection="msmarco-passage")
    jobs = {(j.condition.name, j.column.key): j for j in plan(matrix, ["bm25-flat", "csplade-cpu-pure"],
                                                              Settings(output=tmp_path / "out"))}
    for key in ("dl19", "dl20", "dev"):
        job = jobs[("bm25-flat", key)]
        assert job.mode == "skip" and "'msmarco-v1-passage' is not available on this machine" in job.reason
    assert jobs[("bm25-flat", "dl19-pool")].mode == "pipeline"
    assert jobs[("csplade-cpu-pure", "dl19-pool")].mode == "skip"
    assert "requires runs/train/cpu-recipe/pure/best" in jobs[("csplade-cpu-pure", "dl19-pool")].reason
    # with --allow-download a Pyserini prebuilt index counts as available; a self-built one must exist
    online = {(j.condition.name, j.column.key): j.mode for j in plan(matrix, ["bm25-flat", "splade-tiny"],
                                                                   Settings(allow_download=True))}
    assert online[("bm25-flat", "dl19")] == "search" and online[("splade-tiny", "dl19")] == "skip"
    (tmp_path / "index" / "msmarco-v1-passage.splade-tiny").mkdir(parents=True)
    assert {j.column.key: j.mode for j in plan(matrix, ["splade-tiny"], Settings())}["dl20"] == "search"
    # a preset needs its hub repository: skipped offline (empty cache), run when downloads are allowed
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    preset = {j.column.key: j for j in plan(matrix, ["preset-laconic-1b"], Settings())}
    assert preset["dl19-pool"].mode == "skip" and "requires hub:utahnlp/laconic-1b" in preset["dl19-pool"].reason
    assert {j.column.key: j.mode for j in plan(matrix, ["preset-laconic-1b"],
                                               Settings(allow_download=True))}["dl19-pool"] == "pipeline"

    lines = []
    outcome = run_matrix(matrix, plan(matrix, ["splade-pp-ed"], Settings(output=tmp_path / "out")), Settings(
        output=tmp_path / "out"), out=lines.append)
    text = "\n".join(lines)
    assert not outcome.failed and outcome.counts == {SKIPPED: 3}
    assert text.count("[SKIPPED] corpus 'msmarco-v1-passage' is not available") == 3 and "[OK]" not in text
    stored = load_results(tmp_path / "out", "msmarco-passage")["results"]["splade-pp-ed"]
    assert {k: v["state"] for k, v in stored.items()} == {"dl19": SKIPPED, "dl20": SKIPPED, "dev": SKIPPED}


# --- injected results: FAIL exit status, published, QUICK, averages, report ---------------------------
def _scifact_qrels() -> dict[str, dict[str, int]]:
    from csplade_pyserini.datasets import load_qrels

    return load_qrels(shared() / "data" / "beir" / "scifact" / "qrels" / "test.tsv")


def _fake_run(path: Path, depth: int) -> None:
    """Two non-relevant documents, then the relevant ones, for every query (every ``depth``-th query
    gets no relevant document at all)."""
    qrels = _scifact_qrels()
    everything = sorted({d for q in qrels.values() for d in q})
    lines = []
    for n, (qid, judged) in enumerate(sorted(qrels.items())):
        others = [d for d in everything if d not in judged][n % 50:n % 50 + 2]
        ranked = others + ([] if n % depth == 0 else sorted(judged))
        lines += [f"{qid} Q0 {d} {r} {100 - r} fake" for r, d in enumerate(ranked, start=1)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _inject(out: Path, collection: str, condition: str, topic: str, depth: int, quick: bool = False,
            stats: dict | None = None) -> Path:
    suffix = ".quick" if quick else ""
    run = out / "runs" / f"run.{collection}.{condition}.{topic}{suffix}.txt"
    _fake_run(run, depth)
    report = out / "reports" / f"{collection}.{condition}.{topic}{suffix}.json"
    report.parent.mkdir(parents=True, exist_ok=True)
    row = {"system": condition, "run": str(run), "scores": {}, **(stats or {"index_mb": 1.5, "search_ms": 2.0})}
    report.write_text(json.dumps({"label": "fake", "quick": quick, "rows": [row]}), encoding="utf-8")
    return run


def _test_matrix(tmp_path: Path, expected_ndcg: float, published_ndcg: float) -> Path:
    data = raw("beir")
    data["topics"] = [t for t in data["topics"] if t["key"] in ("scifact", "nfcorpus")]
    second = dict(data["topics"][-1], key="scifact-b", display="scifact (again)")
    data["topics"].append(second)
    data["average"] = {"key": "avg", "display": "mean", "over": ["scifact", "scifact-b"], "metrics": ["nDCG@10"]}
    bm25 = next(c for c in data["conditions"] if c["name"] == "bm25-flat")
    bm25.pop("average")
    bm25["topics"] = [{"topic": "scifact", "scores": [{"nDCG@10": expected_ndcg, "R@100": None}]},
                      {"topic": "scifact-b", "scores": [{"nDCG@10": published_ndcg, "R@100": None}],
                       "published": True, "source": "a paper"},
                      {"topic": "nfcorpus", "scores": [{"nDCG@10": 0.3218, "R@100": 0.2457}], "published": True}]
    bm25["average"] = {"scores": {"nDCG@10": 0.5}, "published": True, "source": "a paper"}
    data["conditions"] = [bm25]
    path = tmp_path / "matrix.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def test_wrong_expected_score_fails_with_non_zero_exit(tmp_path):
    from ir_measures import nDCG

    from csplade_pyserini.evaluate.measures import evaluate_run

    out = tmp_path / "out"
    run = _inject(out, "beir", "bm25-flat", "scifact", depth=4)
    _inject(out, "beir", "bm25-flat", "scifact-b", depth=4)
    got = evaluate_run(run, _scifact_qrels(), [nDCG @ 10])["nDCG@10"]
    assert 0.2 < got < 0.9
    path = _test_matrix(tmp_path, expected_ndcg=0.9, published_ndcg=0.75)
    result = run_python("-m", "csplade_pyserini.repro", "--matrix", str(path), "--condition", "bm25-flat",
                        "--output", str(out), "--threads", "1", cwd=tmp_path, check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    text = result.stdout
    assert f"nDCG@10: {got:.4f} [FAIL] expected 0.9000" in text
    assert f"nDCG@10: {got:.4f} [published] expected 0.7500, difference {got - 0.75:+.4f} (a paper)" in text
    assert "R@100  :" in text and "[no reference]" in text
    assert "[SKIPPED] corpus 'nfcorpus' is not available on this machine" in text
    assert f"nDCG@10: {got:.4f} [published] expected 0.5000" in text  # the mean over both scifact columns
    assert "FAIL: 1" in text and "SKIPPED: 1" in text

    # the same numbers, now expected: OK, exit 0 (nothing re-executed: the outputs exist)
    path = _test_matrix(tmp_path, expected_ndcg=round(got, 4), published_ndcg=0.75)
    result = run_python("-m", "csplade_pyserini.repro", "--matrix", str(path), "--condition", "bm25-flat",
                        "--output", str(out), cwd=tmp_path, check=False)
    assert result.returncode == 0 and f"nDCG@10: {got:.4f} [OK]" in result.stdout and "reusing existing" in result.stdout


def test_quick_results_are_labelled_and_never_ok(tmp_path):
    out = tmp_path / "out"
    run = _inject(out, "beir", "bm25-flat", "scifact", depth=4, quick=True)
    from ir_measures import nDCG

    from csplade_pyserini.evaluate.measures import evaluate_run

    got = round(evaluate_run(run, _scifact_qrels(), [nDCG @ 10])["nDCG@10"], 4)
    matrix = mx.load_matrix(_test_matrix(tmp_path, expected_ndcg=got, published_ndcg=0.75))
    settings = Settings(output=out, quick=True)
    lines = []
    outcome = run_matrix(matrix, [j for j in plan(matrix, None, settings) if j.column.key == "scifact"], settings,
                         out=lines.append)
    text = "\n".join(lines)
    assert "[QUICK] QUICK subset, not compared" in text and "[OK]" not in text and not outcome.failed
    assert outcome.counts.get(QUICK) == 1 and OK not in outcome.counts
    stored = load_results(out, "beir")
    assert "scifact" in stored["quick"]["bm25-flat"] and "bm25-flat" not in stored["results"]


def test_pipeline_error_is_reported_and_fails(tmp_path):
    out = tmp_path / "out"
    report = out / "reports" / "beir.bm25-flat.scifact.json"
    report.parent.mkdir(parents=True)
    report.write_text(json.dumps({"rows": []}), encoding="utf-8")
    (out / "runs").mkdir()
    (out / "runs" / "run.beir.bm25-flat.scifact.txt").write_text("", encoding="utf-8")
    matrix = mx.load_matrix(_test_matrix(tmp_path, 0.5, 0.5))
    settings = Settings(output=out)
    lines = []
    outcome = run_matrix(matrix, [j for j in plan(matrix, None, settings) if j.column.key == "scifact"], settings,
                         out=lines.append)
    assert outcome.failed and outcome.counts == {ERROR: 1}
    assert "has 0 rows; a condition must produce one" in "\n".join(lines)


def test_report_writes_markdown_html_and_plots(tmp_path):
    out = tmp_path / "out"
    _inject(out, "beir", "bm25-flat", "scifact", depth=4,
            stats={"index_mb": 1.1, "search_ms": 3.0, "query_encode_ms": 5.0, "terms_per_doc": 80.0,
                   "terms_per_query": 9.0, "postings_per_query": 1234.0})
    matrix = mx.load_matrix(_test_matrix(tmp_path, expected_ndcg=0.9, published_ndcg=0.75))
    settings = Settings(output=out)
    run_matrix(matrix, [j for j in plan(matrix, None, settings) if j.column.key == "scifact"], settings,
               out=lambda _: None)
    paths = generate(matrix, plan(matrix, None, settings), load_results(out, "beir"), out)
    names = sorted(p.name for p in paths)
    assert names == ["beir.effectiveness-vs-index-size.png", "beir.effectiveness-vs-latency.png", "beir.html", "beir.md"]
    md = (out / "beir.md").read_text(encoding="utf-8")
    assert "| [BM25 flat](#bm25-flat) |" in md and " FAIL |" in md and "0.7500† |" in md  # measured, expected
    assert "skipped" in md and "<details><summary>Commands</summary>" in md
    assert "python -m csplade_pyserini.pipeline \\\n  --collection scifact" in md
    assert "| bm25-flat | scifact | 1.1 | 80.0 | 9.0 | 1234 | 5.0 | 3.0 | 8.0 |" in md  # index statistics
    page = (out / "beir.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "<details><summary>" in page and 'class="FAIL"' in page
    assert "python -m csplade_pyserini.evaluate --run" in page
    for png in ("beir.effectiveness-vs-index-size.png", "beir.effectiveness-vs-latency.png"):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000

    # the CLI: --generate-report alone reads the stored results
    result = run_python("-m", "csplade_pyserini.repro", "--matrix", str(tmp_path / "matrix.yaml"), "--generate-report",
                        "--output", str(out), cwd=tmp_path)
    assert "beir.md" in result.stdout and "beir.html" in result.stdout


# --- one real condition, end to end ------------------------------------------------------------
def test_bm25_flat_on_scifact_end_to_end(tmp_path):
    """The shipped BEIR matrix, bm25-flat: SciFact runs through the pipeline (BM25 only), the 12 other
    test sets are skipped, and the measured scores match the matrix (OK), exit status 0."""
    result = run_python("-m", "csplade_pyserini.repro", "--collection", "beir", "--condition", "bm25-flat",
                        "--threads", "1", "--output", "repro", "--generate-report", cwd=tmp_path, check=False)
    text = result.stdout
    assert result.returncode == 0, text[-3000:] + result.stderr[-3000:]
    expected = mx.load_matrix(collection="beir").condition("bm25-flat").expectation("scifact").scores
    assert f"nDCG@10: {expected['nDCG@10']:.4f} [OK]" in text and f"R@100  : {expected['R@100']:.4f} [OK]" in text
    assert text.count("[SKIPPED]") == 12 and "FAIL: 0" in text
    stored = load_results(tmp_path / "repro", "beir")["results"]["bm25-flat"]["scifact"]
    assert stored["state"] == "evaluated" and stored["stats"]["index_mb"] > 0
    assert (tmp_path / "repro" / "runs" / "run.beir.bm25-flat.scifact.txt").stat().st_size > 0
    assert (tmp_path / "repro" / "beir.md").exists() and (tmp_path / "repro" / "beir.effectiveness-vs-latency.png").exists()


def test_dense_conditions_build_their_faiss_index_from_the_local_corpus(tmp_path, monkeypatch):
    """A condition with an index command but no pipeline (the dense FAISS path) builds its index from a corpus
    that is on this machine, then searches; a trained twin that is not there is skipped with the reason."""
    monkeypatch.chdir(tmp_path)
    matrix = mx.load_matrix(collection="beir")
    jobs = {j.condition.name: j for j in plan(matrix, ["csplade-dense-smollm2", "csplade-lion-twin-dense"],
                                              Settings(output=tmp_path / "out"))}
    dense = jobs["csplade-dense-smollm2"]
    assert dense.mode == "build" and "--to-faiss" in dense.index_command and "--encoder csplade-dense " in dense.index_command
    assert f"--corpus {shared() / 'data' / 'beir' / 'scifact'} " in dense.index_command
    assert dense.command.startswith("python -m pyserini.search.faiss --index index/beir-v1.0.0-scifact.csplade-dense-smollm2")
    twin = jobs["csplade-lion-twin-dense"]
    assert twin.mode == "skip" and "requires runs/train/lion/dense/best" in twin.reason

    # build mode runs each part of the index command, then the search, then evaluates the run
    data = raw("beir")
    data["topics"] = [t for t in data["topics"] if t["key"] == "scifact"]
    data.pop("average")
    fake = tmp_path / "fake-run.txt"
    _fake_run(fake, depth=4)
    condition = next(c for c in data["conditions"] if c["name"] == "csplade-dense-smollm2")
    condition["index-command"] = ('python -c "import os, sys; os.makedirs(sys.argv[1])" {index}/a && '
                                  'python -c "import os, sys; os.makedirs(sys.argv[1])" {index}/b')
    condition["command"] = f'python -c "import shutil, sys; shutil.copy(sys.argv[1], sys.argv[2])" {fake} {{output}}'
    data["conditions"] = [condition]
    path = tmp_path / "matrix.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    matrix = mx.load_matrix(path)
    settings = Settings(output=tmp_path / "out")
    lines = []
    outcome = run_matrix(matrix, plan(matrix, None, settings), settings, out=lines.append)
    assert not outcome.failed, "\n".join(lines)
    assert (tmp_path / "index" / "beir-v1.0.0-scifact.csplade-dense-smollm2" / "b").is_dir()
    stored = load_results(tmp_path / "out", "beir")["results"]["csplade-dense-smollm2"]["scifact"]
    assert stored["state"] == "evaluated" and stored["scores"]["nDCG@10"] > 0
