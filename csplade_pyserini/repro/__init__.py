"""Reproduction matrices in the style of Pyserini's 2CR (two-click reproductions).

    python -m csplade_pyserini.repro --collection beir --list-conditions
    python -m csplade_pyserini.repro --collection beir --condition bm25-flat --display-commands
    python -m csplade_pyserini.repro --collection msmarco-passage --all --dry-run
    python -m csplade_pyserini.repro --collection beir --generate-report

``msmarco-passage.yaml`` and ``beir.yaml`` (shipped beside this file) list the conditions, their exact
command templates and expected scores; :mod:`.matrix` loads and validates them, :mod:`.runner` runs
and compares, :mod:`.report` writes the Markdown/HTML pages and plots.
"""

from csplade_pyserini.repro.matrix import SCHEMA, Matrix, MatrixError, load_matrix, validate
from csplade_pyserini.repro.runner import FAIL, OK, OKISH, compare

__all__ = ["SCHEMA", "Matrix", "MatrixError", "load_matrix", "validate", "compare", "OK", "OKISH", "FAIL"]
