"""BM25 hard negatives (Pyserini): :func:`mine_negatives` indexes a BEIR corpus with Lucene BM25
(``baselines.bm25_index``) and searches the queries of a split (``baselines.bm25_search``), writing a
TREC run that ``data.read_beir_train`` reads as hard negatives (it skips the judged positives itself).
Teacher scores for the same candidates: :mod:`.teachers`.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from csplade_pyserini.errors import InputError

logger = logging.getLogger(__name__)


# --- BM25 hard negatives ---------------------------------------------------------------------------
def _beir_parts(folder: Path, split: str):
    from csplade_pyserini.datasets import beir_file, load_qrels, read_queries

    return read_queries(beir_file(folder, "queries")), load_qrels(beir_file(folder, "qrels", split))


def mine_negatives(data: str | Path, output: str | Path, split: str = "train", hits: int = 100,
                   index_dir: str | Path | None = None, threads: int = 1, queries: str | Path | None = None,
                   qrels: str | Path | None = None, corpus: str | Path | None = None) -> dict:
    """BM25 top-``hits`` of every judged query of ``split`` -> a TREC run at ``output``.

    ``data`` is a BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/SPLIT.tsv``); ``queries``,
    ``qrels`` and ``corpus`` override its parts (e.g. MS MARCO ``queries.train.tsv``). The index is
    built in ``index_dir`` (reused when it already holds one) or in a temporary folder.
    """
    from csplade_pyserini.baselines import bm25_index, bm25_search
    from csplade_pyserini.datasets import load_qrels, read_corpus, read_queries

    if hits < 1:
        raise InputError(f"hits must be positive, got {hits}", field="hits")
    folder = Path(data)
    beir_queries = beir_qrels = None
    if queries is None or qrels is None:
        beir_queries, beir_qrels = _beir_parts(folder, split)
    query_texts = read_queries(Path(queries)) if queries is not None else beir_queries
    judged = load_qrels(qrels) if qrels is not None else beir_qrels
    topics = {qid: query_texts[qid] for qid in judged if qid in query_texts}
    missing = [qid for qid in judged if qid not in query_texts]
    if missing:
        logger.warning("%d judged queries have no text and are skipped (first: %s)", len(missing), missing[0])
    if not topics:
        raise InputError("no judged query to search for", path=qrels or folder)
    corpus_path = corpus if corpus is not None else folder
    with tempfile.TemporaryDirectory(prefix="csplade-bm25-") as scratch:
        index = Path(index_dir) if index_dir is not None else Path(scratch) / "index"
        if (index / "lucene").is_dir():
            logger.info("reusing the BM25 index in %s", index)
        else:
            documents = list(read_corpus(corpus_path))
            logger.info("indexing %d documents with BM25", len(documents))
            bm25_index(documents, index, threads=threads)
        results, _ = bm25_search(index, topics, hits=hits, threads=threads, output=output)
    found = sum(len(v) for v in results.values())
    logger.info("wrote %d hits for %d queries to %s", found, len(topics), output)
    return {"queries": len(topics), "hits": found}
