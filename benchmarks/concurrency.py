"""Two jobs at once: each encode's docs/s alone and beside a second encode started with it, under each
OpenMP wait policy.

    python -m benchmarks.concurrency                      # make bench-concurrency
    python -m benchmarks.concurrency --encoders csplade,csplade:smollm2-lexical --limit 64

On a machine with few cores, OpenMP threads that spin-wait at every parallel step (libgomp's default, the
``active`` policy) burn the cores a second process needs; ``passive`` threads sleep instead. Each
configuration runs ``python -m csplade_pyserini.encode --limit N`` on the first SciFact documents, alone,
then two copies started together, with ``OMP_WAIT_POLICY`` unset (libgomp's default) or ``PASSIVE``. The
figure that matters is each concurrent encode's docs/s as a share of its solo docs/s.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.report import write_report
from csplade_pyserini.cli import run_cli
from csplade_pyserini.paths import shared_path

RATE = re.compile(r"encoded (\d+) documents in ([\d.]+) s \(([\d.]+) docs/s\)")
POLICIES = {"default": None, "passive": "PASSIVE"}


def start_encode(encoder: str, corpus: Path, out: Path, limit: int, threads: int, policy: str | None):
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env.update({"CSPLADE_LOG": "INFO", **({"OMP_WAIT_POLICY": policy} if policy else {})})
    return subprocess.Popen([sys.executable, "-m", "csplade_pyserini.encode", "--corpus", str(corpus),
                             "--embeddings", str(out), "--encoder", encoder, "--limit", str(limit),
                             "--threads", str(threads), "--no-resume"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)


def docs_per_s(process) -> float:
    _, err = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"encode failed ({process.returncode}):\n{err[-2000:]}")
    found = RATE.search(err)
    if not found:
        raise SystemExit(f"no encoding rate in the encode's log:\n{err[-2000:]}")
    return float(found.group(3))


def measure(encoder: str, corpus: Path, work: Path, limit: int, threads: int, policy: str | None) -> dict:
    solo = docs_per_s(start_encode(encoder, corpus, work / "solo", limit, threads, policy))
    pair = [start_encode(encoder, corpus, work / f"pair{i}", limit, threads, policy) for i in (0, 1)]
    together = [docs_per_s(p) for p in pair]
    return {"solo_docs_per_s": solo, "together_docs_per_s": together,
            "share_of_solo": [round(t / solo, 3) for t in together]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.concurrency", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoders", default="csplade,csplade:smollm2-lexical", help="comma-separated specs")
    parser.add_argument("--limit", type=int, default=96, help="first N SciFact documents per encode")
    parser.add_argument("--threads", type=int, default=2, help="threads of each encode")
    parser.add_argument("--data", default=None, help="BEIR folder (default: ../shared/data/beir/scifact)")
    parser.add_argument("--name", default="bench-concurrency")
    args = parser.parse_args(argv)
    corpus = Path(args.data) if args.data else shared_path("data", "beir", "scifact")
    if corpus is None or not corpus.exists():
        raise SystemExit("SciFact not found: pass --data")
    rows = []
    work = Path(tempfile.mkdtemp(prefix="bench-concurrency."))
    try:
        for encoder in [e.strip() for e in args.encoders.split(",") if e.strip()]:
            for name, policy in POLICIES.items():
                folder = work / f"{len(rows)}"
                folder.mkdir()
                row = {"encoder": encoder, "wait_policy": name, **measure(encoder, corpus, folder, args.limit,
                                                                        args.threads, policy)}
                rows.append(row)
                shutil.rmtree(folder, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load = os.getloadavg()
    lines = [f"# Two encodes at once ({args.limit} SciFact documents each, {args.threads} threads each, "
             f"{os.cpu_count()} cores, measured {time.strftime('%Y-%m-%d %H:%M')})", "",
             "Each encode alone, then two started together; OpenMP wait policy `default` (libgomp's, unset) or "
             "`passive` (`OMP_WAIT_POLICY=PASSIVE`).", "",
             "| encoder | wait policy | alone docs/s | together docs/s (each) | share of alone |", "|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| `{row['encoder']}` | {row['wait_policy']} | {row['solo_docs_per_s']:.2f} | "
                     f"{' / '.join(f'{t:.2f}' for t in row['together_docs_per_s'])} | "
                     f"{' / '.join(f'{s:.0%}' for s in row['share_of_solo'])} |")
    lines += ["", f"Load average when it ended: {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}."]
    write_report(args.name, {"limit": args.limit, "threads": args.threads, "cores": os.cpu_count(), "rows": rows,
                             "measured": time.strftime("%Y-%m-%d %H:%M")}, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    run_cli(main)
