"""From vocabulary weights to Anserini impact vectors: term strings, integer quantisation, JSON I/O."""
