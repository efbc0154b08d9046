"""Score a TREC run with ir-measures against official qrels (Pyserini names or files).

    python -m csplade_pyserini.evaluate --run runs/run.scifact.csplade.txt --qrels beir-v1.0.0-scifact.test
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from csplade_pyserini.atomic import atomic_file
from csplade_pyserini.cli import run_cli
from csplade_pyserini.evaluate.measures import evaluate_run, measures_for


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m csplade_pyserini.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True)
    parser.add_argument("--qrels", required=True, help="Pyserini name (dl19-passage, beir-v1.0.0-scifact.test) or file")
    parser.add_argument("--measures", nargs="+", default=None,
                        help="ir-measures names (default: the standard set for the topics)")
    parser.add_argument("--output", default=None, help="write the scores as JSON here")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    measures = measures_for(args.qrels, args.measures)
    scores = evaluate_run(args.run, args.qrels, measures)
    for name, value in scores.items():
        print(f"{name:<20}{value:.4f}")
    if args.output:
        with atomic_file(Path(args.output)) as handle:
            json.dump({"run": args.run, "qrels": args.qrels, "scores": scores}, handle, indent=2)
    return 0


if __name__ == "__main__":
    run_cli(main)
