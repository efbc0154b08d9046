"""``python -m csplade_pyserini.runs {check,fix,fuse,pack}``: exit 0 when all is well, 1 on a problem
(every problem printed as ``RUN:LINE: message``), 2 on a usage error."""

from __future__ import annotations

import argparse
import functools
import logging
import sys

from csplade_pyserini.errors import CspladeError
from csplade_pyserini.runs.check import check_run, format_problem
from csplade_pyserini.runs.fix import fix_run
from csplade_pyserini.runs.format import RunFileError
from csplade_pyserini.runs.fuse import METHODS, fuse_runs
from csplade_pyserini.runs.pack import pack_run


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--verbose", "-v", action="store_true", help="log what the tools do")
    parser = argparse.ArgumentParser(prog="python -m csplade_pyserini.runs",
                                     description="Validate, repair, fuse and package TREC run files "
                                                 "(qid Q0 docid rank score tag).")
    commands = parser.add_subparsers(dest="command", required=True)
    add = functools.partial(commands.add_parser, parents=[common])

    check = add("check", help="report every problem of a run with its line number")
    check.add_argument("run")
    check.add_argument("--topics", required=True, help="Pyserini topics name or a topics file")
    check.add_argument("--index", help="Lucene index: every docid must exist in it")
    check.add_argument("--depth", type=positive_int, default=1000, help="most lines per topic (default 1000)")
    check.add_argument("--qrels", help="qrels name or file: report judged@10 and judged topics without results")

    fix = add("fix", help="sort, de-duplicate, re-rank, truncate and re-tag a run")
    fix.add_argument("run")
    fix.add_argument("--output", required=True)
    fix.add_argument("--depth", type=positive_int, help="keep at most this many lines per topic")
    fix.add_argument("--tag", help="tag for every line (default: the first line's)")

    fuse = add("fuse", help="reciprocal-rank fusion of two or more runs")
    fuse.add_argument("runs", nargs="+", metavar="RUN")
    fuse.add_argument("--output", required=True)
    fuse.add_argument("--method", choices=METHODS, default="rrf")
    fuse.add_argument("--k", type=float, default=60, help="RRF constant (default 60)")
    fuse.add_argument("--depth", type=positive_int, default=1000, help="lines per topic in the output")
    fuse.add_argument("--tag", default="rrf")

    pack = add("pack", help="write RUN.gz and RUN.meta.json into a folder or .tar.gz")
    pack.add_argument("run")
    pack.add_argument("--output", required=True, help="a folder, or an archive named *.tar.gz / *.tgz")
    pack.add_argument("--index", help="index the run was made from (statistics, model card, docid check)")
    pack.add_argument("--model-card", help="model card JSON (default: the card in the index's csplade-index.info)")
    pack.add_argument("--topics", help="check topic coverage against these topics before packing")
    pack.add_argument("--depth", type=positive_int, default=1000)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "fuse" and len(args.runs) < 2:
        parser.error("fuse needs at least two runs")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    from csplade_pyserini.datasets import load_qrels, load_topics

    try:
        if args.command == "check":
            result = check_run(args.run, topics=load_topics(args.topics), depth=args.depth, index=args.index,
                               qrels=load_qrels(args.qrels) if args.qrels else None)
            for message in result.messages():
                print(message)
            print(result.summary(), file=sys.stdout if result.ok else sys.stderr)
            return 0 if result.ok else 1
        if args.command == "fix":
            lines = fix_run(args.run, args.output, depth=args.depth, tag=args.tag)
            print(f"{args.output}: {lines} lines")
        elif args.command == "fuse":
            lines = fuse_runs(args.runs, args.output, method=args.method, k=args.k, depth=args.depth, tag=args.tag)
            print(f"{args.output}: {lines} lines")
        elif args.command == "pack":
            topics = load_topics(args.topics) if args.topics else None
            for path in pack_run(args.run, args.output, index=args.index, card_file=args.model_card,
                                 topics=topics, topics_name=args.topics, depth=args.depth):
                print(path)
    except RunFileError as exc:
        for problem in exc.problems:
            print(format_problem(problem), file=sys.stderr)
        print(f"{exc.path}: {len(exc.problems)} problem(s); nothing written", file=sys.stderr)
        return 1
    except (CspladeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
