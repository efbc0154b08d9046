"""Effectiveness and cost on a collection, every system measured in the same run of this command.

    python -m benchmarks.retrieval --collection scifact

BM25 (Pyserini), splade-tiny (``../shared/models/splade-tiny``) through the same impact-index path,
and CSPLADE models (default: the untrained SmolLM2-135M in each variant). Each system runs the main
job's pipeline in its own process, so its peak RSS and wall time are its own.

``--resume`` keeps the rows of systems already measured by an earlier invocation with the same
``--name`` (the table's "measured" column gives each row's time) and runs only the missing ones, so a
long run that was stopped can be completed without re-encoding hours of corpus.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging

from benchmarks.measured import run_measured
from benchmarks.report import RESULTS, cell, write_report
from csplade_pyserini.cli import run_cli
from csplade_pyserini.paths import shared_path

logger = logging.getLogger(__name__)
DEFAULT_MODELS = "csplade:smollm2,variant=causal;csplade:smollm2,variant=bidirectional;csplade:smollm2,variant=echo"


def write_table(rows: list[dict], collection: str, threads: int) -> str:
    """The Markdown table of every system measured so far (the report is rewritten after each step)."""
    lines = [f"# {collection}: all systems measured in one run ({threads} threads)", "",
             f"{rows[0].get('label', '') if rows else ''}", "",
             "| system | nDCG@10 | R@100 | terms/doc | terms/query | index MB | docs/s | encode s | "
             "query enc ms | search ms/q | peak RSS MB | wall s | measured |", "|---" * 13 + "|"]
    for r in rows:
        s = r.get("scores", {})
        lines.append(f"| {r['system']} | {cell(s.get('nDCG@10'), '.4f')} | {cell(s.get('R@100'), '.4f')} | "
                     f"{cell(r.get('terms_per_doc'), '.1f')} | {cell(r.get('terms_per_query'), '.1f')} | "
                     f"{cell(r.get('index_mb'), '.1f')} | {cell(r.get('docs_per_s'), '.2f')} | "
                     f"{cell(r.get('encode_s'), '.0f')} | {cell(r.get('query_encode_ms'), '.1f')} | "
                     f"{cell(r.get('search_ms'), '.1f')} | {cell(r.get('peak_rss_mb'), '.0f')} | "
                     f"{cell(r.get('wall_s'), '.0f')} | {r.get('measured_at', '-')} |")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.retrieval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--collection", default="scifact")
    parser.add_argument("--models", default=DEFAULT_MODELS, help="';'-separated csplade specs")
    parser.add_argument("--splade", default=str(shared_path("models", "splade-tiny")))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--name", default=None, help="results file stem (default bench-<collection>)")
    parser.add_argument("--resume", action="store_true",
                        help="keep systems already measured in the results file; run only the others")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    name = args.name or f"bench-{args.collection}{'-quick' if args.quick else ''}"
    work = RESULTS / name
    work.mkdir(parents=True, exist_ok=True)
    steps = [("bm25", ["--no-csplade"]), ("splade-tiny", ["--no-bm25", "--no-csplade", "--splade", args.splade])]
    steps += [(spec, ["--no-bm25", "--encoder", spec]) for spec in filter(None, args.models.split(";"))]
    previous = _previous_rows(RESULTS / f"{name}.json") if args.resume else {}
    rows, text = [], ""
    for label, extra in steps:
        if label in previous:
            logger.info("keeping %s (measured %s)", label, previous[label][0].get("measured_at", "earlier"))
            rows.extend(previous[label])
            continue
        report = work / f"{label.replace(':', '_').replace(',', '_').replace('=', '-')}.json"
        command = ["-m", "csplade_pyserini.pipeline", "--collection", args.collection, "--threads", str(args.threads),
                   "--report", str(report), *(["--quick"] if args.quick else []), *extra]
        logger.info("running %s", label)
        proc = run_measured(command)
        if proc["returncode"] != 0:
            logger.error("%s failed (exit %d)", label, proc["returncode"])
            rows.append({"system": label, "step": label, "failed": True, **proc})
            continue
        data = json.loads(report.read_text())
        measured_at = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
        for row in data["rows"]:
            rows.append({**row, **proc, "label": data["label"], "step": label, "measured_at": measured_at})
        # rewritten after every step: partial results survive a later failure
        text = write_report(name, rows, write_table(rows, args.collection, args.threads), echo=False)
    print(text or write_table(rows, args.collection, args.threads))
    return 0


def _previous_rows(path) -> dict[str, list[dict]]:
    """Successful rows of an earlier invocation, by benchmark step (bm25, splade-tiny, or a spec)."""
    if not path.exists():
        return {}
    by_step: dict[str, list[dict]] = {}
    for row in json.loads(path.read_text()):
        if not row.get("failed") and row.get("step"):
            by_step.setdefault(row["step"], []).append(row)
    return by_step


if __name__ == "__main__":
    run_cli(main)
