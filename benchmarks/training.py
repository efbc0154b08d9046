"""The CPU training recipe end to end, then every system on SciFact test and, zero-shot, the DL19 pool.

    python -m benchmarks.training          # make bench-training

1. ``python -m csplade_pyserini.train recipe --pure`` as a measured process (wall time, peak RSS): the
   default model (LM-head channel + lexical head) and the pure CSPLADE model from one activation cache;
2. the main job's pipeline (real encoder, Anserini impact index, Lucene search, ir-measures) for BM25,
   splade-tiny, the untrained backbone, the pure CSPLADE model and the new default, each in its own
   process, on each collection;
3. ``eval/results/bench-training.{md,json}`` and a loss / validation curve plot per run
   (``bench-training-curves.png``).

Each step is skipped when its output exists (an interrupted benchmark resumes); a row whose report
already existed says when it was measured. The previous default model's rows (echo + trained bias,
measured 2026-11-23 by the earlier version of this benchmark) are carried over from the earlier
results file when it holds them, marked as such.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
from pathlib import Path

from csplade_pyserini.atomic import atomic_file
from benchmarks.measured import run_measured
from benchmarks.report import RESULTS, cell, write_report
from csplade_pyserini.cli import run_cli
from csplade_pyserini.paths import RUNS_DIR, shared_path

logger = logging.getLogger(__name__)
PREVIOUS = "previous-default"


def _python(label: str, args: list[str]) -> dict:
    logger.info("%s: python %s", label, " ".join(args))
    proc = run_measured(args)
    if proc["returncode"] != 0:
        raise SystemExit(f"{label} failed with exit code {proc['returncode']}")
    return proc


def train(args, pure: bool) -> dict:
    """Run the recipe where its models are missing and return its record.

    Each invocation is measured as a whole process (wall time, peak RSS); ``recipe.json`` keeps every
    step's own time, so a recipe finished in two invocations (default first, ``--pure`` later) still
    reports each step and the sum.
    """
    work = Path(args.work)
    record_path = work / "benchmark-recipe.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {"invocations": []}
    wanted = [work / "model" / "final"] + ([work / "pure" / "final"] if pure else [])
    if not all(target.exists() for target in wanted):
        proc = _python("recipe", ["-m", "csplade_pyserini.train", "recipe", "--data", args.data, "--output-dir",
                                  str(work), "--threads", str(args.threads), *(["--pure"] if pure else [])])
        proc["measured"] = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
        proc["pure"] = pure
        record["invocations"].append(proc)
    record["recipe"] = json.loads((work / "recipe.json").read_text())
    record["wall_s"] = sum(p["wall_s"] for p in record["invocations"])
    record["peak_rss_mb"] = max(p["peak_rss_mb"] for p in record["invocations"])
    record["measured"] = ", ".join(p["measured"] for p in record["invocations"])
    with atomic_file(record_path) as handle:
        json.dump(record, handle, indent=2)
    return record


def evaluate(args, collection: str, label: str, extra: list[str]) -> list[dict]:
    report = RESULTS / args.name / collection / f"{label}.json"
    measured_process = report.with_suffix(".proc.json")
    if report.exists():
        proc = json.loads(measured_process.read_text()) if measured_process.exists() else {}
    elif args.measured_only:
        logger.info("%s %s: not measured yet (--measured-only), left out of the tables", collection, label)
        return []
    else:
        report.parent.mkdir(parents=True, exist_ok=True)
        proc = _python(f"{collection} {label}", ["-m", "csplade_pyserini.pipeline", "--collection", collection,
                                                 "--threads", str(args.threads), "--report", str(report), *extra])
        with atomic_file(measured_process) as handle:
            json.dump(proc, handle)
    data = json.loads(report.read_text())
    measured = dt.datetime.fromtimestamp(report.stat().st_mtime, dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
    return [{**row, **proc, "label": data["label"], "measured": measured, "key": label} for row in data["rows"]]


def previous_rows(path: Path) -> list[dict]:
    """The previous default's rows from the earlier results file (echo-bias), if it holds them."""
    if not path.exists():
        return []
    rows = [r for r in json.loads(path.read_text()).get("rows", []) if r.get("key") in ("echo-bias", PREVIOUS)]
    return [{**r, "key": PREVIOUS, "system": "previous default: SmolLM2 echo, frozen + trained logit bias "
             "(measured by the earlier benchmark)"} for r in rows]


def run_summary(run: Path) -> dict:
    """Validation curve and training steps of one trained run, from its train_log.jsonl."""
    from csplade_pyserini.train.trainer import read_log

    if not (run / "train_log.jsonl").exists():
        return {}
    train_rows = read_log(run, "train")
    evals = [(r["step"], r["eval_ndcg@10"]) for r in read_log(run, "eval") if "eval_ndcg@10" in r]
    best = max(evals, key=lambda e: e[1]) if evals else None
    return {"steps": max((r["step"] for r in train_rows), default=0), "validation": evals, "best": best,
            "loss": [(r["step"], r["loss"]) for r in train_rows if "loss" in r]}


def plot_curves(runs: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, summary in runs.items():
        if summary.get("loss"):
            axes[0].plot(*zip(*summary["loss"]), label=name)
        if summary.get("validation"):
            axes[1].plot(*zip(*summary["validation"]), marker="o", label=name)
    axes[0].set(title="training loss", xlabel="step")
    axes[1].set(title="validation nDCG@10 (100 held-out train queries, whole corpus)", xlabel="step")
    for axis in axes:
        axis.legend(fontsize=8)
        axis.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_tables(rows: list[dict], collections: list[str], record: dict, runs: dict[str, dict], path: Path) -> str:
    systems: dict[str, dict] = {}
    for row in rows:
        entry = systems.setdefault(row["key"], {"system": row["system"]})
        entry[row["collection"]] = row
    header = ["system"]
    for c in collections:
        header += [f"{c} nDCG@10", f"{c} R@100" if c == "scifact" else f"{c} R(rel=2)@1K"]
    header += ["terms/doc", "terms/query", "index MB", "encode docs/s", "eval peak RSS MB", "measured"]
    lines = [f"# CPU training recipe: every system on {', '.join(collections)}", "",
             "| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for entry in systems.values():
        cells = [entry["system"]]
        for c in collections:
            scores = entry.get(c, {}).get("scores", {})
            recall = scores.get("R@100") if c == "scifact" else scores.get("R(rel=2)@1000", scores.get("R@1000"))
            cells += [cell(scores.get("nDCG@10"), ".4f"), cell(recall, ".4f")]
        first = entry.get(collections[0]) or next(v for k, v in entry.items() if isinstance(v, dict))
        cells += [cell(first.get("terms_per_doc"), ".1f"), cell(first.get("terms_per_query"), ".1f"),
                  cell(first.get("index_mb"), ".1f"), cell(first.get("docs_per_s"), ".2f"),
                  cell(max((entry[c].get("peak_rss_mb", 0) for c in collections if c in entry), default=None), ".0f"),
                  first.get("measured", "-")]
        lines.append("| " + " | ".join(cells) + " |")
    recipe = record.get("recipe", {})
    lines += ["", f"Size and speed columns are from the {collections[0]} run. Each evaluation ran alone, "
              f"with {record.get('recipe', {}).get('threads', '?')} torch threads."]
    for row in rows:
        if row.get("resumed_docs"):
            lines.append(f"{row['system']} on {row['collection']}: {row['resumed_docs']} documents were read back from "
                         "an earlier, interrupted run's finished blocks, so this row does not measure encoding speed.")
    start = path.parent / "bench-training-start.json"
    if start.exists():
        found = json.loads(start.read_text())
        lines += ["", f"## Starting points, from the activation cache ({found['split']} queries, "
                  f"`python -m benchmarks.start_point`, measured {found['measured']})", "",
                  "Document vectors from the recipe's cached max-pooled logits, queries encoded live, exact ranking "
                  "over the whole corpus, ir-measures; the trained row checks this evaluator against the pipeline's.",
                  "", "| model | nDCG@10 | R@100 | terms/doc | terms/query |", "|---|---|---|---|---|"]
        for row in found["rows"]:
            lines.append(f"| {row['model']} | {row['scores']['nDCG@10']:.4f} | {row['scores']['R@100']:.4f} | "
                         f"{row['terms_per_doc']} | {row['terms_per_query']} |")
    lines += ["",
              "## The training recipe (one command, measured as a whole process)", "",
              "; ".join(f"`python -m csplade_pyserini.train recipe{' --pure' if p.get('pure') else ''}`: "
                        f"{cell(p.get('wall_s'), '.0f')} s wall, peak RSS {cell(p.get('peak_rss_mb'), '.0f')} MB "
                        f"(measured {p.get('measured', '-')})" for p in record.get("invocations", [])) +
              f". Sum of the steps' own times: {cell(recipe.get('seconds_all_steps'), '.0f')} s (a step done by an "
              "earlier, interrupted invocation shows -).", "",
              "| step | seconds | process peak RSS MB so far |", "|---|---|---|"]
    for name, step in recipe.get("steps", {}).items():
        lines.append(f"| {name} | {cell(step.get('seconds'), '.0f')} | {cell(step.get('peak_rss_mb'), '.0f')} |")
    lines += ["", "## Validation during training (nDCG@10, 100 held-out SciFact train queries, whole corpus)", ""]
    for name, summary in runs.items():
        curve = ", ".join(f"step {s}: {v:.4f}" for s, v in summary.get("validation", []))
        lines.append(f"- {name}: {curve or 'none'}; kept: step {summary['best'][0] if summary.get('best') else '-'}")
    lines += ["", "![loss and validation curves](bench-training-curves.png)", ""]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.training", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--collections", default="scifact,dl19-pool")
    parser.add_argument("--systems", default="bm25,splade-tiny,untrained,pure,default",
                        help="which systems to evaluate")
    parser.add_argument("--data", default=str(shared_path("data", "beir", "scifact")), help="BEIR training folder")
    parser.add_argument("--splade", default=str(shared_path("models", "splade-tiny")), help="baseline and teacher")
    parser.add_argument("--work", default=str(RUNS_DIR / "train" / "cpu-recipe"), help="the recipe's output folder")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--name", default="bench-training", help="results file stem")
    parser.add_argument("--measured-only", action="store_true",
                        help="tabulate the evaluations already measured; run nothing (an interrupted benchmark)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    collections = [c for c in args.collections.split(",") if c]
    wanted = set(args.systems.split(","))
    record = train(args, pure="pure" in wanted)
    work = Path(args.work)
    models = {"pure": work / "pure" / "best", "default": work / "model" / "best"}
    systems = [("bm25", ["--no-csplade"]),
               ("splade-tiny", ["--no-bm25", "--no-csplade", "--splade", args.splade]),
               ("untrained", ["--no-bm25", "--encoder", "csplade:smollm2,variant=causal"]),
               ("pure", ["--no-bm25", "--encoder", f"csplade:{models['pure']}"]),
               ("default", ["--no-bm25", "--encoder", f"csplade:{models['default']}"])]
    rows = previous_rows(RESULTS / f"{args.name}.json")
    runs = {name: run_summary(folder.parent) for name, folder in models.items()}
    plot_curves(runs, RESULTS / f"{args.name}-curves.png")
    text = ""
    for collection in collections:
        for key, extra in systems:
            if key not in wanted:
                continue
            for row in evaluate(args, collection, key, extra):
                rows.append({**row, "collection": collection})
            text = write_report(args.name, {"rows": rows, "recipe": record, "runs": runs},
                                write_tables(rows, collections, record, runs, RESULTS / f"{args.name}.md"), echo=False)
    print(text)
    return 0


if __name__ == "__main__":
    run_cli(main)
