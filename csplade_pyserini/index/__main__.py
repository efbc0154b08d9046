"""Build a Lucene impact index from JsonVectorCollection vectors with Anserini.

    python -m csplade_pyserini.index --input encode/scifact.csplade --index index/scifact.csplade

Vectors are validated first; the index replaces ``--index`` only if indexing succeeded.
"""

from __future__ import annotations

import argparse
import json

from csplade_pyserini.cli import default_threads, run_cli
from csplade_pyserini.index import build_index, is_index_folder

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m csplade_pyserini.index", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="JsonVectorCollection folder")
    parser.add_argument("--index", required=True, help="output index folder")
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--no-validate", action="store_true", help="skip the vector check (large collections)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing index (only one this toolkit built)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from csplade_pyserini.atomic import check_output, clear_stale_temporaries, output_lock

    check_output(args.index, [args.input], args.overwrite, is_index_folder, "index")
    with output_lock(args.index):
        clear_stale_temporaries(args.index)
        stats = build_index(args.input, args.index, args.threads, validate=not args.no_validate)
    print(json.dumps({k: v for k, v in stats.items() if k != "anserini"}, indent=2))
    return 0


if __name__ == "__main__":
    run_cli(main)
