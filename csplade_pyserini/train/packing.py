"""Sequence packing for CSPLADE phase 1 (adaptation on corpus text, 2048-token sequences with packing).

Documents are concatenated, each FOLLOWED by one EOS token, and the stream is cut into blocks of
exactly ``seq_len`` tokens:

    doc0 EOS doc1 EOS doc2 EOS ...  ->  [block 0 | block 1 | ...]   (the incomplete tail is dropped)

Choices, and why:

* The remainder (fewer than ``seq_len`` tokens at the end) is DROPPED, as in Hugging Face's
  ``run_clm`` ``group_texts``: every block is full, so no padding, no attention mask and no ignored
  labels are needed, and every token costs the same. At most ``seq_len - 1`` tokens of the whole
  corpus are lost.
* A document longer than a block continues in the next block; a block may hold the end of one
  document and the start of others. Tokens attend across document boundaries inside a block (standard
  for causal-LM packing; the EOS tells the model a new text begins). ``document_ids`` is returned on
  request so that a caller can build block-diagonal masks or restart position ids instead.
* Empty documents are skipped (they would only add a lone EOS).
* No BOS is inserted: tokenise with ``add_special_tokens=False`` (see METHOD.md: a BOS acts as an
  attention sink in decoder SPLADE models).
* Labels equal the inputs (the Hugging Face convention, the model shifts internally); for this
  package's losses shift them with ``losses.shift_labels``.

Packing is deterministic: input order is kept, nothing is shuffled; shuffle blocks in the data loader.
"""

from __future__ import annotations

import logging
import operator
from dataclasses import dataclass
from typing import Generator, Iterable, Sequence

import torch

logger = logging.getLogger(__name__)


@dataclass
class PackedBlocks:
    """``input_ids`` and ``labels`` of shape ``[N, seq_len]`` (labels are a copy of the inputs);
    ``document_ids`` (same shape, only when asked for) gives for every token the index in the input
    list of the document it belongs to, the EOS counting as part of the document it ends."""

    input_ids: torch.Tensor
    labels: torch.Tensor
    document_ids: torch.Tensor | None = None
    dropped_tokens: int = 0

    def __len__(self) -> int:
        return self.input_ids.shape[0]


def _validate(seq_len: int, eos_id: int) -> tuple[int, int]:
    """Integers (numpy and 0-d tensor ids included, bools refused) with ``seq_len >= 2``, ``eos_id >= 0``."""
    try:
        if isinstance(seq_len, bool) or isinstance(eos_id, bool):
            raise TypeError
        seq_len, eos_id = operator.index(seq_len), operator.index(eos_id)
    except TypeError:
        raise ValueError(f"seq_len and eos_id must be integers, got {seq_len!r} and {eos_id!r}") from None
    if seq_len < 2:
        raise ValueError(f"seq_len must be >= 2 (a next-token loss needs two tokens), got {seq_len}")
    if eos_id < 0:
        raise ValueError(f"eos_id must be a non-negative token id, got {eos_id}")
    return seq_len, eos_id


def _blocks(token_lists: Iterable[Sequence[int]], seq_len: int, eos_id: int,
            with_owners: bool) -> Generator[tuple[list[int], list[int] | None], None, int]:
    """Yield full blocks; the generator's return value is the number of tail tokens dropped."""
    tokens: list[int] = []
    owners: list[int] = []
    for index, document in enumerate(token_lists):
        if isinstance(document, (str, bytes)):
            raise TypeError(f"document {index} is a string: pass token ids, not text")
        if len(document) == 0:
            continue
        tokens.extend(int(t) for t in document)
        tokens.append(eos_id)
        if with_owners:
            owners.extend([index] * (len(document) + 1))
        if len(tokens) >= seq_len:
            # Slice all full blocks at once: deleting from the front once per block would be
            # quadratic for a single very long document.
            full = len(tokens) // seq_len * seq_len
            for start in range(0, full, seq_len):
                yield tokens[start:start + seq_len], owners[start:start + seq_len] if with_owners else None
            del tokens[:full]
            if with_owners:
                del owners[:full]
    return len(tokens)


def pack_sequences(token_lists: Iterable[Sequence[int]], seq_len: int, eos_id: int,
                   return_document_ids: bool = False) -> PackedBlocks:
    """Pack token lists into ``[N, seq_len]`` blocks (EOS after every document, tail dropped).

    Returns :class:`PackedBlocks`; ``labels`` equal ``input_ids``; ``dropped_tokens`` counts the
    tail. With fewer than ``seq_len`` tokens in total the result has zero blocks (and a warning is
    logged): pick a smaller ``seq_len``.
    """
    seq_len, eos_id = _validate(seq_len, eos_id)
    blocks: list[list[int]] = []
    owners: list[list[int]] = []
    stream = _blocks(token_lists, seq_len, eos_id, with_owners=return_document_ids)
    while True:
        try:
            block, owner = next(stream)
        except StopIteration as stop:
            dropped = stop.value
            break
        blocks.append(block)
        if owner is not None:
            owners.append(owner)
    if not blocks:
        logger.warning("only %d tokens to pack: no full block of %d tokens", dropped, seq_len)
    elif dropped:
        logger.debug("packing dropped the last %d tokens (incomplete block)", dropped)
    input_ids = torch.tensor(blocks, dtype=torch.long).reshape(len(blocks), seq_len)
    document_ids = None
    if return_document_ids:
        document_ids = torch.tensor(owners, dtype=torch.long).reshape(len(blocks), seq_len)
    return PackedBlocks(input_ids, input_ids.clone(), document_ids, dropped)
