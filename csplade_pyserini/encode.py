"""Encode a collection into Anserini's JsonVectorCollection with a CSPLADE model.

    python -m csplade_pyserini.encode --corpus ../shared/data/beir/scifact --embeddings encode/scifact.csplade
    python -m csplade_pyserini.encode ... --shard-id 1 --shard-num 4     # one shard (as Pyserini splits)
    python -m csplade_pyserini.encode ... --processes 4                   # all shards, one process each

An interrupted encode resumes: every finished block of ``--block-size`` documents is kept in
``.EMBEDDINGS.partial/`` beside the output, with a fingerprint of the model, the corpus and the options;
a rerun with the same inputs encodes only the blocks that are missing (a rerun with other inputs starts
over), and the output folder appears, complete, only at the end.

A shard writes the sub-folder ``EMBEDDINGS/part-0000I-of-0000N`` (Anserini reads an input folder
recursively, so the parts index as one collection); shards cover the collection with no overlap and no
gap, and together hold exactly the vectors of a single-process run. ``--processes N`` launches the N
shards (``--device cuda:0,cuda:1,...`` gives each its own device; on a CPU the threads are split).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Iterable


from csplade_pyserini.cli import add_model_args, default_threads, run_cli, set_threads
from csplade_pyserini.datasets import Document, read_corpus
from csplade_pyserini.vectors.encoding import BLOCK, encode_documents

logger = logging.getLogger(__name__)

def select(documents: Iterable[Document], docids: set[str] | None = None, limit: int | None = None) -> list[Document]:
    chosen = [d for d in documents if docids is None or d.docid in docids]
    return chosen[:limit] if limit else chosen


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m csplade_pyserini.encode", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", required=True, help="BEIR folder/corpus.jsonl or MS MARCO collection.tsv")
    parser.add_argument("--embeddings", required=True, help="output folder (JsonVectorCollection)")
    add_model_args(parser)
    parser.add_argument("--max-length", type=int, default=None, help="document tokens: overrides the card's max_doc_length (as the spec csplade,max_doc_length=N "
                        "does) and is recorded with the vectors")
    parser.add_argument("--max-tokens", type=int, default=None,
                        help="padded tokens per batch (default: 1024 on CPU, 32768 on GPU)")
    parser.add_argument("--batch-size", type=int, default=256, help="documents per batch at most")
    parser.add_argument("--shard-size", type=int, default=100_000, help="vectors per output file")
    parser.add_argument("--block-size", type=int, default=BLOCK,
                        help="documents sorted by length and encoded together; the unit an interrupted encode "
                             "resumes from")
    parser.add_argument("--no-resume", dest="resume", action="store_false",
                        help="start over even if an interrupted encode of the same inputs left finished blocks")
    parser.add_argument("--limit", type=int, default=None, help="encode only the first N documents")
    parser.add_argument("--allow-empty", action="store_true", help="accept empty documents (no terms)")
    parser.add_argument("--shard-id", type=int, default=None, help="encode only this shard (0-based), as Pyserini")
    parser.add_argument("--shard-num", type=int, default=None, help="number of shards")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing output folder (only one this toolkit wrote)")
    parser.add_argument("--processes", type=int, default=1,
                        help="encode every shard in its own process (one per GPU with --device cuda:0,cuda:1...)")
    return parser


def launch_shards(args) -> int:
    """Run ``args.processes`` shard processes side by side and wait for all of them."""
    import subprocess
    import sys

    n = args.processes
    devices = args.device.split(",")
    threads = max(1, (args.threads or default_threads()) // n)
    base = [sys.executable, "-m", "csplade_pyserini.encode", "--corpus", args.corpus, "--embeddings", args.embeddings,
            "--encoder", args.encoder, "--batch-size", str(args.batch_size), "--shard-size", str(args.shard_size),
            "--shard-num", str(n), "--threads", str(threads), "--block-size", str(args.block_size)]
    for flag, value in (("--max-length", args.max_length), ("--max-tokens", args.max_tokens), ("--limit", args.limit)):
        if value is not None:
            base += [flag, str(value)]
    if args.allow_empty:
        base.append("--allow-empty")
    if args.overwrite:
        base.append("--overwrite")
    if not args.resume:
        base.append("--no-resume")
    children = [subprocess.Popen(base + ["--shard-id", str(i), "--device", devices[i % len(devices)]])
                for i in range(n)]
    codes = [child.wait() for child in children]
    if any(codes):
        logger.error("shard processes exited with %s", codes)
        return max(codes)
    from csplade_pyserini.vectors.jsonvec import info_path, part_info_path

    parts = [json.loads(part_info_path(args.embeddings, i, n).read_text()) for i in range(n)]
    info = {**parts[0], "documents": sum(p["documents"] for p in parts), "postings": sum(p["postings"] for p in parts),
            "empty_vectors": sum(p["empty_vectors"] for p in parts), "shards": n}
    info_path(args.embeddings).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    logger.info("%d shards encoded %d documents into %s", n, info["documents"], args.embeddings)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from csplade_pyserini.atomic import check_output, clear_stale_temporaries, output_lock
    from csplade_pyserini.datasets import corpus_file
    from csplade_pyserini.model.encoder import CspladeModel
    from csplade_pyserini.vectors.jsonvec import is_vector_folder, part_info_path, part_name, shard_range

    sharded = args.shard_num is not None or args.shard_id is not None
    out = Path(args.embeddings)
    if sharded:
        out = out / part_name(args.shard_id or 0, args.shard_num or 1)
    # before anything loads: never replace an input, or an output this toolkit did not write
    check_output(out, [corpus_file(args.corpus)], args.overwrite, is_vector_folder, "vector folder")
    if args.processes > 1:
        if Path(args.embeddings).exists() and not (args.overwrite and is_vector_folder(args.embeddings)):
            check_output(args.embeddings, [corpus_file(args.corpus)], args.overwrite, is_vector_folder,
                         "vector folder")
        return launch_shards(args)
    set_threads(args.threads)
    collection = list(read_corpus(args.corpus, allow_empty=args.allow_empty))
    documents = select(collection, limit=args.limit)
    info_file = None
    if sharded:
        shard_num, shard_id = args.shard_num or 1, args.shard_id or 0
        span = shard_range(len(documents), shard_id, shard_num)
        documents = documents[span.start:span.stop]
        info_file = part_info_path(args.embeddings, shard_id, shard_num)
        logger.info("shard %d of %d: documents %d to %d", shard_id, shard_num, span.start, span.stop - 1)
    # beside the output folder (beside the collection for a shard), never inside a folder Anserini reads
    top = Path(args.embeddings)
    resume_dir = top.with_name(f".{top.name}{'.' + out.name if sharded else ''}.partial") if args.resume else None
    with output_lock(out):
        clear_stale_temporaries(out)
        # collection statistics (the word channel's avgdl) come from the whole corpus, whatever the shard
        model = CspladeModel.from_spec(args.encoder, device=args.device)
        model.require_documents()
        if args.max_length is not None:  # an override of the card: the vector folder's record carries it
            model = model.with_card(max_doc_length=args.max_length)
        model = model.for_collection([d.contents for d in collection], args.encoder)
        stats = encode_documents(model, documents, out, max_tokens=args.max_tokens,
                                 max_batch=args.batch_size, shard_size=args.shard_size, info_file=info_file,
                                 block_size=args.block_size, resume_dir=resume_dir)
    logger.info("encoded %d documents in %.1f s (%.2f docs/s), %.1f terms/doc, into %s", stats.documents,
                stats.seconds, stats.docs_per_second, stats.postings / max(1, stats.documents), args.embeddings)
    return 0


if __name__ == "__main__":
    run_cli(main)
