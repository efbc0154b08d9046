"""Encoding a collection into a JsonVectorCollection folder, resumably: the library behind ``python -m
csplade_pyserini.encode`` and the main job.

Documents are encoded in blocks of ``block_size``, sorted by length inside a block; with a resume folder
every finished block is kept there with a fingerprint of the model, the documents and the block size, so a
rerun with the same inputs encodes only the missing blocks, and the output folder appears, complete, only
at the end.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from csplade_pyserini.atomic import atomic_file
from csplade_pyserini.datasets import Document
from csplade_pyserini.vectors.jsonvec import JsonVectorWriter, vector_line

logger = logging.getLogger(__name__)

BLOCK = 4096  # documents sorted and encoded together; bounds memory on large corpora


@dataclass
class EncodeStats:
    documents: int
    seconds: float
    tokens: int
    postings: int
    empty: int
    resumed: int = 0
    """Documents read back from finished blocks of an earlier, interrupted run (not encoded now)."""

    @property
    def docs_per_second(self) -> float:
        """Encoding speed of the documents encoded by this run (0 when every block was resumed)."""
        fresh = self.documents - self.resumed
        return fresh / self.seconds if self.seconds and fresh else 0.0


def _block_fingerprint(info: dict, documents: Sequence[Document], block_size: int) -> str:
    """What a finished block depends on: the model's vectors (its info: the card, lengths included, and the
    weights), the documents (ids and text, in order) and the block size."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"model": info, "block_size": block_size},
                             sort_keys=True, default=str).encode())
    for doc in documents:
        digest.update(doc.docid.encode() + b"\0" + doc.contents.encode() + b"\0")
    return digest.hexdigest()


class BlockStore:
    """Finished blocks of an encode, kept until the output is complete so that a rerun resumes.

    ``blocks.json`` holds the fingerprint and each finished block's counts; ``block-NNNNN.jsonl`` its
    vector lines. Both are written atomically, the block file first, so a block listed is a block on disk.
    """

    def __init__(self, folder: Path, fingerprint: str):
        self.folder = folder
        manifest = folder / "blocks.json"
        state = json.loads(manifest.read_text()) if manifest.exists() else {}
        if state.get("fingerprint") != fingerprint:
            if state:
                logger.warning("%s was left by an encode of other inputs or another model: starting over", folder)
            shutil.rmtree(folder, ignore_errors=True)
            state = {"fingerprint": fingerprint, "blocks": {}}
        elif state["blocks"]:
            logger.info("resuming: %d finished blocks in %s", len(state["blocks"]), folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.state = state

    def done(self, index: int) -> dict | None:
        return self.state["blocks"].get(str(index))

    def path(self, index: int) -> Path:
        return self.folder / f"block-{index:05d}.jsonl"

    def save(self, index: int, rows: list[tuple[str, str, dict]], tokens: int) -> None:
        with atomic_file(self.path(index)) as handle:
            handle.writelines(vector_line(*row) for row in rows)
        self.state["blocks"][str(index)] = {"documents": len(rows), "tokens": tokens}
        with atomic_file(self.folder / "blocks.json") as handle:
            json.dump(self.state, handle)

    def rows(self, index: int):
        with open(self.path(index), encoding="utf-8") as handle:
            for line in handle:
                record = json.loads(line)
                yield record["id"], record["contents"], record["vector"]


def encode_documents(model, documents: Sequence[Document], out_dir: str | Path, max_length: int | None = None,
                     max_tokens: int | None = None, max_batch: int = 256, shard_size: int = 100_000,
                     desc: str = "encode", info_file: str | Path | None = None, block_size: int = BLOCK,
                     resume_dir: str | Path | None = None, keep_blocks: bool = False) -> EncodeStats:
    """Encode ``documents`` (sorted by length inside blocks of ``block_size``) and write them atomically to
    ``out_dir``; with ``resume_dir``, finished blocks are kept there until the end (see the module doc), or
    beyond it with ``keep_blocks``: a caller whose later steps (indexing, search) may still fail removes
    them when it is done, so that its rerun does not encode again. ``max_length`` overrides the card's
    ``max_doc_length`` (and the record written with the vectors says so)."""
    start = time.perf_counter()
    resumed = 0
    if max_length is not None:
        model = model.with_card(max_doc_length=max_length)
    info = model.info()
    store = None
    if resume_dir is not None:
        store = BlockStore(Path(resume_dir), _block_fingerprint(info, documents, block_size))
    tokens = 0
    with JsonVectorWriter(out_dir, shard_size=shard_size, info=info, info_file=info_file) as writer, \
            tqdm(total=len(documents), desc=desc, unit="doc", dynamic_ncols=True) as bar:
        for index, begin in enumerate(range(0, len(documents), block_size)):
            block = documents[begin:begin + block_size]
            finished = store.done(index) if store else None
            if finished is not None and finished["documents"] == len(block):
                tokens += finished["tokens"]
                resumed += len(block)
                for docid, contents, vector in store.rows(index):
                    writer.write(docid, contents, vector)
                bar.update(len(block))
                continue
            vectors, block_tokens = model.encode_documents([d.contents for d in block], None, max_tokens,
                                                           max_batch, progress=bar)
            tokens += block_tokens
            rows = [(doc.docid, doc.contents, vector) for doc, vector in zip(block, vectors)]
            for row in rows:
                writer.write(*row)
            if store:
                store.save(index, rows, block_tokens)
        postings, empty = writer.postings, writer.empty
    if store and not keep_blocks:
        shutil.rmtree(store.folder, ignore_errors=True)
    return EncodeStats(len(documents), time.perf_counter() - start, tokens, postings, empty, resumed)
