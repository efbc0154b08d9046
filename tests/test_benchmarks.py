"""The benchmark drivers' bookkeeping (no model runs): training summaries, stability and tables."""

import json

import pytest

from csplade_pyserini.benchmarks import training


def _log(folder, records):
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "train_log.jsonl", "w") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")


def test_train_summary_adds_the_adaptation_phase(tmp_path):
    _log(tmp_path / "adapt", [{"event": "train", "step": 1, "elapsed": 2.0, "peak_rss_mb": 900.0},
                              {"event": "train", "step": 2, "elapsed": 5.0, "peak_rss_mb": 1000.0}])
    _log(tmp_path / "cl", [{"event": "train", "step": 1, "elapsed": 10.0, "peak_rss_mb": 3000.0},
                           {"event": "eval", "step": 1, "nDCG@10": 0.1},
                           {"event": "train", "step": 2, "elapsed": 30.0, "peak_rss_mb": 2500.0}])
    summary = training.train_summary(tmp_path / "cl" / "final", tmp_path / "adapt" / "final")
    assert summary == {"train_s": 35.0, "train_peak_rss_mb": 3000.0, "steps": "2+2"}
    assert training.train_summary(tmp_path / "cl" / "final", None)["train_s"] == 30.0


def test_stability_reads_the_first_steps_only(tmp_path):
    records = [{"event": "train", "step": i, "loss": float(10 - i), "zero_share": 0.5 if i == 2 else 0.0,
                "grad_norm": float(i), "nnz_q": 7, "nnz_d": 9} for i in range(1, 6)]
    _log(tmp_path, records[:2] + [{"event": "eval", "step": 2}] + records[2:])
    s = training.stability(tmp_path / "train_log.jsonl", first=4)
    assert (s["steps"], s["loss_first"], s["loss_last"], s["loss_max"]) == (4, 9.0, 6.0, 9.0)
    assert s["loss_mean"] == pytest.approx(7.5) and s["zero_share_mean"] == pytest.approx(0.125)
    assert s["zero_share_max"] == 0.5 and s["grad_norm_max"] == 4.0 and s["curve"] == [9.0, 8.0, 7.0, 6.0]


def test_table_has_one_row_per_system_and_a_column_pair_per_collection(tmp_path):
    def row(key, collection, ndcg, recall_name, recall, train=None):
        return {"key": key, "system": key, "collection": collection, "train": train, "measured": "2026-11-22 10:00",
                "scores": {"nDCG@10": ndcg, recall_name: recall}, "terms_per_doc": 100.0, "terms_per_query": 10.0,
                "index_mb": 1.5, "docs_per_s": 3.0, "peak_rss_mb": 2000.0}

    rows = [row("bm25", "scifact", 0.6789, "R@100", 0.9253), row("bm25", "dl19-pool", 0.4431, "R(rel=2)@1000", 0.81),
            row("m", "scifact", 0.5, "R@100", 0.8, {"train_s": 600.0, "train_peak_rss_mb": 7000.0, "steps": "60+80"})]
    text = training.write_tables(rows, ["scifact", "dl19-pool"], {}, tmp_path / "t.md")
    lines = [line for line in text.splitlines() if line.startswith("| bm25") or line.startswith("| m ")]
    assert lines[0].startswith("| bm25 | 0.6789 | 0.9253 | 0.4431 | 0.8100 |")
    assert lines[1].startswith("| m | 0.5000 | 0.8000 | - | - |") and "| 600 (60+80) | 7000 |" in lines[1]
    assert (tmp_path / "t.md").read_text() == text


def test_unknown_run_names_are_refused():
    with pytest.raises(SystemExit, match="unknown runs"):
        training.main(["--runs", "causal-cl,nonsense"])
