"""Run the reproduction matrix of a collection, Pyserini 2CR style.

    python -m csplade_pyserini.repro --collection msmarco-passage --list-conditions
    python -m csplade_pyserini.repro --collection beir --condition bm25-flat --dry-run
    python -m csplade_pyserini.repro --collection beir --condition bm25-flat --condition splade-tiny --threads 2
    python -m csplade_pyserini.repro --collection msmarco-passage --all --quick --generate-report

Conditions whose corpus has no documents here (all but SciFact and the DL19 pool) are reported as
SKIPPED unless their index exists. The exit status is 1 when any score FAILs or a command errors.
Outputs go to --output (default eval/repro): runs/, reports/, logs/, results.<collection>.json and,
with --generate-report, <collection>.md, <collection>.html and two PNG plots.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from csplade_pyserini.cli import default_threads, run_cli
from csplade_pyserini.errors import InputError
from csplade_pyserini.repro.matrix import COLLECTIONS, canonical_collection, load_matrix
from csplade_pyserini.repro.report import generate
from csplade_pyserini.repro.runner import Settings, load_results, plan, run_matrix


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m csplade_pyserini.repro", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--collection", default=None, help=f"{' | '.join(COLLECTIONS)}")
    parser.add_argument("--matrix", default=None, help="a matrix YAML file instead of the shipped one")
    parser.add_argument("--list-conditions", action="store_true", help="list the conditions and exit")
    parser.add_argument("--condition", action="append", default=None, metavar="NAME",
                        help="condition to run (repeatable)")
    parser.add_argument("--all", action="store_true", help="run all conditions")
    parser.add_argument("--dry-run", action="store_true", help="print the exact commands, run nothing")
    parser.add_argument("--display-commands", action="store_true", help="print each command before it runs")
    parser.add_argument("--skip-eval", action="store_true", help="run the commands but do not evaluate")
    parser.add_argument("--generate-report", action="store_true",
                        help="write <collection>.md/.html and PNG plots (after running, if conditions are given)")
    parser.add_argument("--output", default="eval/repro", help="output folder (default: eval/repro)")
    parser.add_argument("--threads", type=int, default=None, help="threads for every command (default: all cores)")
    parser.add_argument("--batch-size", type=int, default=64, help="query batch size for search commands")
    parser.add_argument("--device", default="cpu", help="torch device for model commands")
    parser.add_argument("--quick", action="store_true",
                        help="pass --quick to the pipeline (judged docs + a sample); results labelled QUICK, never OK")
    parser.add_argument("--allow-download", action="store_true",
                        help="treat Pyserini prebuilt index names and hub: requirements as available (downloaded on use)")
    parser.add_argument("--rerun", action="store_true", help="run commands even when their outputs exist")
    parser.add_argument("--color", choices=("auto", "always", "never"), default="auto")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.collection is None and args.matrix is None:
        raise InputError("give --collection (" + " | ".join(COLLECTIONS) + ") or --matrix FILE")
    matrix = load_matrix(args.matrix, canonical_collection(args.collection) if args.collection and not args.matrix
                         else args.collection)
    if args.collection and args.matrix and canonical_collection(args.collection) != matrix.collection:
        raise InputError(f"--collection {args.collection} does not match the matrix's collection {matrix.collection!r}",
                         path=args.matrix)
    if args.list_conditions:
        for condition in matrix.conditions:
            print(condition.name)
        return 0
    settings = Settings(output=Path(args.output), threads=args.threads or default_threads(),
                        batch_size=args.batch_size, device=args.device, quick=args.quick,
                        allow_download=args.allow_download, rerun=args.rerun, dry_run=args.dry_run,
                        skip_eval=args.skip_eval, display_commands=args.display_commands,
                        colour=args.color == "always" or (args.color == "auto" and sys.stdout.isatty()))
    selected = bool(args.all or args.condition)
    if not selected and not args.generate_report:
        print("Must specify a specific condition using --condition or use --all to run all conditions.")
        return 2
    if args.all and args.condition:
        raise InputError("give either --all or --condition, not both")
    failed = False
    if selected:
        names = None if args.all else list(dict.fromkeys(args.condition))
        jobs = plan(matrix, names, settings)
        outcome = run_matrix(matrix, jobs, settings)
        failed = outcome.failed
    if args.generate_report and not args.dry_run:
        everything = plan(matrix, None, settings)
        paths = generate(matrix, everything, load_results(settings.output, matrix.collection), settings.output)
        print("report: " + ", ".join(str(p) for p in paths))
    return 1 if failed else 0


if __name__ == "__main__":
    run_cli(main)
