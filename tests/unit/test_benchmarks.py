"""The training benchmark's bookkeeping (no model runs): run summaries, carried-over rows and tables."""

import json

from benchmarks import training


def _log(folder, records):
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "train_log.jsonl", "w") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")


def test_run_summary_reads_the_validation_curve_and_the_best_step(tmp_path):
    _log(tmp_path / "run", [{"event": "eval", "step": 0, "eval_ndcg@10": 0.5},
                            {"event": "train", "step": 10, "loss": 2.0},
                            {"event": "eval", "step": 10, "eval_ndcg@10": 0.7},
                            {"event": "train", "step": 20, "loss": 1.5},
                            {"event": "eval", "step": 20, "eval_ndcg@10": 0.6},
                            {"event": "summary", "step": 20, "train_runtime": 3.0}])
    summary = training.run_summary(tmp_path / "run")
    assert summary["validation"] == [(0, 0.5), (10, 0.7), (20, 0.6)]
    assert summary["best"] == (10, 0.7) and summary["steps"] == 20 and summary["loss"] == [(10, 2.0), (20, 1.5)]
    assert training.run_summary(tmp_path / "missing") == {}


def test_previous_default_rows_are_carried_over_and_marked(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"rows": [{"key": "echo-bias", "system": "old", "collection": "scifact"},
                                         {"key": "bm25", "system": "BM25", "collection": "scifact"}]}))
    rows = training.previous_rows(path)
    assert [r["key"] for r in rows] == [training.PREVIOUS] and "earlier benchmark" in rows[0]["system"]
    assert training.previous_rows(tmp_path / "none.json") == []


def test_table_has_one_row_per_system_and_a_column_pair_per_collection(tmp_path):
    def row(key, collection, ndcg, recall_name, recall):
        return {"key": key, "system": key, "collection": collection, "measured": "2026-11-27 10:00",
                "scores": {"nDCG@10": ndcg, recall_name: recall}, "terms_per_doc": 100.0, "terms_per_query": 10.0,
                "index_mb": 1.5, "docs_per_s": 3.0, "peak_rss_mb": 2000.0}

    rows = [row("bm25", "scifact", 0.6789, "R@100", 0.9253), row("bm25", "dl19-pool", 0.4431, "R(rel=2)@1000", 0.81),
            row("m", "scifact", 0.5, "R@100", 0.8)]
    record = {"invocations": [{"wall_s": 3600.0, "peak_rss_mb": 5000.0, "measured": "2026-11-27 11:00",
                               "pure": False}],
              "recipe": {"threads": 2, "steps": {"train model": {"seconds": 900.0, "peak_rss_mb": 4000}}}}
    runs = {"default": {"validation": [(0, 0.6), (100, 0.7)], "best": (100, 0.7)}}
    text = training.write_tables(rows, ["scifact", "dl19-pool"], record, runs, tmp_path / "t.md")
    lines = [line for line in text.splitlines() if line.startswith("| bm25") or line.startswith("| m ")]
    assert lines[0].startswith("| bm25 | 0.6789 | 0.9253 | 0.4431 | 0.8100 |")
    assert lines[1].startswith("| m | 0.5000 | 0.8000 | - | - |")
    assert "`python -m csplade_pyserini.train recipe`: 3600 s wall, peak RSS 5000 MB" in text and "| train model | 900 | 4000 |" in text
    assert "- default: step 0: 0.6000, step 100: 0.7000; kept: step 100" in text


def test_write_report_writes_json_and_markdown_whole(tmp_path, monkeypatch, capsys):
    from benchmarks import report

    monkeypatch.setattr(report, "RESULTS", tmp_path / "results")
    assert report.write_report("bench-x", {"rows": [1]}, "# table\n") == "# table\n"
    assert json.loads((tmp_path / "results" / "bench-x.json").read_text()) == {"rows": [1]}
    assert (tmp_path / "results" / "bench-x.md").read_text() == "# table\n"
    assert capsys.readouterr().out == "# table\n\n"
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["bench-x.json", "bench-x.md"]  # no temp files


def test_query_pruning_report_compares_each_setting_with_the_unpruned_queries():
    from benchmarks.query_pruning import report

    def setting(scores, terms, ms):
        return {"nDCG@10": sum(scores.values()) / len(scores), "per_query": scores, "terms_per_query": terms,
                "search_ms": ms}

    domain = {"validation": "dev split", "queries": 2, "settings": {
        "unpruned": setting({"q1": 0.5, "q2": 1.0}, 70.0, 12.0),
        "min-idf 1.25": setting({"q1": 0.5, "q2": 0.8}, 58.0, 10.5),
        "bm25": {"search_ms": 8.5}}}
    text = report({"spec": "csplade", "hits": 1000, "measured": "now", "threads": 2, "load": [0.1, 0.2],
                   "domains": {"scifact": domain}})
    rows = {line.split(" | ")[0]: line for line in text.splitlines() if line.startswith("| ")}
    assert "0.6500 (-0.1000" in rows["| min-idf 1.25"]  # mean 0.65, paired change -0.1
    assert "| 58.0 | 10.50 | 0.6500 |" in rows["| min-idf 1.25"]
    assert rows["| BM25 (its own index, the same texts)"].endswith("- | - | 8.50 | - |")
