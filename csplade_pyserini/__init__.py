"""csplade-pyserini: learned sparse retrieval with causal language models, as a Pyserini/Anserini plugin.

The package import is kept light on purpose (no torch, no transformers): the Pyserini hook imports it
at interpreter start-up, and the CLIs import heavy libraries only when they need them.
"""

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
