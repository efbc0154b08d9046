"""Everything that touches Pyserini or Anserini: JVM set-up, topics, encoders and the CLI patches."""
