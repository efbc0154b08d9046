"""Cold start: from the command to the first result, for one query, in a fresh process.

    python -m benchmarks.cold_start            # part of make bench-latency

Two measurements per system, each in a new Python process (disk caches warm, the model caches filled: the
GGUF conversion and the ONNX export are made once before timing, as after a user's first search):

* **whole command**: the wall time of the literal command a user types for one query (``python -m
  pyserini.search.lucene ... --hits 10``; BM25 with ``--bm25``; our ``python -m csplade_pyserini.search``), the
  median of ``--repeats`` runs;
* **split**: the same steps in an instrumented process (``--child``), timed from the moment the parent
  started it: interpreter start (with the start-up hook), JVM start (Pyserini's ``pyserini.pyclass``), the
  rest of the imports a literal search makes (``pyserini.search.lucene``, ``pyserini.encode``), the query
  encoder's load, the index open and the first query.

Writes ``eval/results/bench-cold-start.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.report import write_report
from csplade_pyserini.cli import run_cli

logger = logging.getLogger(__name__)
QUERY = ("1", "0-dimensional biomaterials show inductive properties.")  # SciFact test's first query
PHASES = ("python", "jvm", "imports", "model", "index", "first query")


def child(spec: str | None, index: str, started: float) -> None:
    """The instrumented search: prints one JSON line of ``phase -> seconds since the parent started us``."""
    stamps = {"python": time.time() - started}
    from pyserini.pyclass import autoclass  # noqa: F401  (starts the JVM)

    stamps["jvm"] = time.time() - started
    import pyserini.encode  # noqa: F401  (the literal search command imports it)
    from pyserini.search.lucene import LuceneImpactSearcher, LuceneSearcher

    stamps["imports"] = time.time() - started
    encoder = None
    if spec is not None:
        from csplade_pyserini.integration.encoders import CspladeQueryEncoder

        encoder = CspladeQueryEncoder(spec)
    stamps["model"] = time.time() - started
    if encoder is None:
        searcher = LuceneSearcher(index)
        searcher.set_bm25(0.9, 0.4)
    else:
        searcher = LuceneImpactSearcher(index, encoder)
    stamps["index"] = time.time() - started
    hits = searcher.search(QUERY[1], k=10)
    stamps["first query"] = time.time() - started
    print(json.dumps({"stamps": stamps, "hits": len(hits)}))


def timed(command: list[str], env: dict | None = None) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    return time.perf_counter() - start, result


def measure(name: str, spec: str | None, index: str, topics: Path, output: Path, repeats: int) -> dict:
    """The literal command's median wall time and one instrumented split for ``spec`` (None = BM25)."""
    literal = [sys.executable, "-m", "pyserini.search.lucene", "--index", index, "--topics", str(topics),
               "--output", str(output), "--hits", "10"]
    literal += ["--bm25"] if spec is None else ["--encoder", spec, "--impact"]
    commands = {"literal": literal}
    if spec is not None:
        commands["ours"] = [sys.executable, "-m", "csplade_pyserini.search", "--index", index, "--topics", str(topics),
                            "--encoder", spec, "--output", str(output), "--hits", "10"]
    row: dict = {"system": name, "spec": spec, "index": index}
    for kind, command in commands.items():
        timed(command)  # fills any model cache (ONNX export, GGUF conversion) and the disk cache
        row[f"{kind}_s"] = statistics.median(timed(command)[0] for _ in range(repeats))
    splits = []
    for _ in range(repeats):
        started = time.time()
        command = [sys.executable, "-m", "benchmarks.cold_start", "--child", "--index", index,
                   "--started", repr(started)] + ([] if spec is None else ["--encoder", spec])
        _, result = timed(command)
        splits.append(json.loads(result.stdout.strip().splitlines()[-1])["stamps"])
    stamps = {phase: statistics.median(s[phase] for s in splits) for phase in PHASES}
    row["split_s"] = {phase: stamps[phase] - (stamps[PHASES[i - 1]] if i else 0.0) for i, phase in enumerate(PHASES)}
    row["split_total_s"] = stamps[PHASES[-1]]
    logger.info("%s: %s", name, {k: v for k, v in row.items() if k.endswith("_s")})
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cold_start", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", default="index/scifact.csplade", help="the default model's impact index")
    parser.add_argument("--bm25-index", default="index/scifact.bm25/lucene")
    parser.add_argument("--encoder", action="append", default=None,
                        help="query encoder specs measured on --index (default: csplade and csplade,runtime=onnx)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--name", default="bench-cold-start")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--started", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.encoder[0] if args.encoder else None, args.index, args.started)
        return 0
    specs = args.encoder or ["csplade", "csplade,runtime=onnx"]
    from csplade_pyserini.cli import default_threads

    threads = f"{default_threads()} (each command's default)"
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        topics = Path(tmp) / "one-query.tsv"
        topics.write_text("\t".join(QUERY) + "\n", encoding="utf-8")
        rows = [measure("BM25 (Pyserini, flat)", None, args.bm25_index, topics, Path(tmp) / "run.txt", args.repeats)]
        rows += [measure(spec, spec, args.index, topics, Path(tmp) / "run.txt", args.repeats) for spec in specs]
    bm25 = rows[0]["literal_s"]
    result = {"measured": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "repeats": args.repeats,
              "threads": threads, "query": QUERY, "rows": rows}
    lines = [f"# Cold start: one query, command to first result (measured {result['measured']}, median of "
             f"{args.repeats} fresh processes each, threads: {threads}, nothing else running; 1-minute load average "
             f"{load_start:.2f} at the start, {os.getloadavg()[0]:.2f} at the end)", "",
             "| system | literal `pyserini.search.lucene` s | vs BM25 | our `csplade_pyserini.search` s | "
             + " | ".join(f"{p} s" for p in PHASES) + " | split total s |",
             "|---|---|---|---|" + "---|" * len(PHASES) + "---|"]
    for row in rows:
        lines.append("| " + " | ".join([
            row["system"], f"{row['literal_s']:.2f}", f"{row['literal_s'] / bm25:.2f}x",
            f"{row['ours_s']:.2f}" if "ours_s" in row else "-",
            *(f"{row['split_s'][p]:.2f}" for p in PHASES), f"{row['split_total_s']:.2f}"]) + " |")
    lines += ["", "Whole command: the wall time of the literal command for a one-query topics file (`--hits 10`), "
              "after one untimed run that fills the model caches (GGUF conversion, ONNX export). Split: the same "
              "steps in an instrumented fresh process, each phase's seconds: `python` = interpreter start with the "
              "start-up hook, `jvm` = Pyserini's JVM start, `imports` = `pyserini.search.lucene` and "
              "`pyserini.encode` (torch, transformers and what transformers imports with them), `model` = the "
              "query encoder's load, `index` = opening the index (and, for ours, checking the model against it), "
              "`first query` = encoding and searching one query."]
    write_report(args.name, result, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    run_cli(main)
