"""Scoring runs: measures through ir-measures, paired significance, and, in ``__main__``, the command face
``python -m csplade_pyserini.evaluate``."""
