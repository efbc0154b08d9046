"""TREC run-file tools: validate (``check``), repair (``fix``), fuse (``fuse``) and package (``pack``).

Run ``python -m csplade_pyserini.runs --help``. Every file these tools write has ranks 1..n in order of
score descending, ties broken by docid descending (trec_eval's order), and is written atomically.
"""

from csplade_pyserini.runs.check import CheckResult, check_run, format_problem
from csplade_pyserini.runs.fix import fix_hits, fix_run
from csplade_pyserini.runs.format import Hit, RunFileError, rank_hits, read_run, write_run
from csplade_pyserini.runs.fuse import fuse_runs, rrf
from csplade_pyserini.runs.pack import pack_run

__all__ = ["CheckResult", "Hit", "RunFileError", "check_run", "fix_hits", "fix_run", "format_problem",
           "fuse_runs", "pack_run", "rank_hits", "read_run", "rrf", "write_run"]
