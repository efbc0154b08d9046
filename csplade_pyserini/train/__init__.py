"""Training CSPLADE / Lion-SP models: the library (options, data, model building, losses, trainer, the
recipes' steps) and, in ``__main__``, its command face ``python -m csplade_pyserini.train``, as Pyserini's
packages pair ``__main__`` with their library modules."""
