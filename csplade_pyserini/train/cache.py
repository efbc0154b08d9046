"""Frozen-backbone activations on disk: run the frozen bottom of the model once, train the top many times.

On a 2-core CPU, a forward pass of SmolLM2-135M over SciFact's 5,183 documents at 256 tokens takes
about 20 minutes (4.3 documents/s in bf16). A training run that re-ran it for every step could see a
few hundred documents in an hour. When the bottom ``layer`` layers are frozen, their output (the input
of layer ``layer``) is the same at every step, so this module computes it once per text and stores it
(in the model's precision, memory-mapped): training then runs only the layers above and the heads, and the same cache
serves validation and the final encoding of the collection.

What is stored per text:

* ``ids``/``pool``: the collated row exactly as :meth:`SparseEncoder.collate` builds it (the echo
  variant's doubled input, the pool mask that leaves out the causal prefix);
* ``states`` (optional): ``[tokens, hidden]`` hidden states entering layer ``layer`` (``layer`` = the
  number of layers: the final normed states), in the model's precision (bf16 here), so reading them
  back is exact;
* ``pooled`` (optional): ``[vocab]`` LM-head logits max-pooled over the pooled positions (floored at
  0). With the whole backbone frozen, scale and bias commute with the max, so the LM-head channel
  trains from these 98 KB per text without ever multiplying by the LM head again.

A cache is keyed by a fingerprint of everything that changes its contents (backbone files, adapter,
variant, prefixes, lengths, dtype, layer, the texts); a folder whose fingerprint differs is rebuilt,
never silently reused.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from csplade_pyserini.model.pooling import max_pool_lm_head

logger = logging.getLogger(__name__)

META = "cache.json"


# Stored in the model's own precision, so that reading the cache back is exact: bf16 (numpy has no bf16:
# its bits as uint16), fp16 or fp32.
_STORAGE = {torch.bfloat16: np.uint16, torch.float16: np.float16, torch.float32: np.float32}


def _to_numpy(tensor: torch.Tensor, dtype: torch.dtype) -> np.ndarray:
    tensor = tensor.detach().to(dtype).contiguous().cpu()
    if dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(np.uint16)
    return tensor.numpy()


def _from_numpy(array: np.ndarray) -> torch.Tensor:
    array = np.ascontiguousarray(array)
    if array.dtype == np.uint16:
        return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(array)


def texts_fingerprint(texts: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()[:16]


@dataclass
class CacheRows:
    """A padded batch of cached rows, the input of :meth:`SparseEncoder.forward` / ``combine``."""

    input_ids: torch.Tensor  # [B, L]
    attention_mask: torch.Tensor  # [B, L]
    pool_mask: torch.Tensor  # [B, L]
    states: torch.Tensor | None  # [B, L, H], the model's precision
    pooled: torch.Tensor | None  # [B, V], the model's precision

    def as_features(self) -> dict[str, torch.Tensor]:
        features = {"input_ids": self.input_ids, "attention_mask": self.attention_mask, "pool_mask": self.pool_mask}
        if self.states is not None:
            features["states"] = self.states
        if self.pooled is not None:
            features["pooled"] = self.pooled
        return features


class ActivationCache:
    """The cached activations of one list of texts of one kind (``query`` or ``doc``)."""

    def __init__(self, folder: Path, meta: dict, in_memory: bool = True):
        self.folder = folder
        self.meta = meta
        self.layer: int | None = meta["layer"]
        self.offsets = torch.from_numpy(np.load(folder / "offsets.npy"))
        self.ids = torch.from_numpy(np.load(folder / "ids.npy").astype(np.int64))
        self.pool = torch.from_numpy(np.load(folder / "pool.npy"))
        mode = None if in_memory else "r"
        self._states = np.load(folder / "states.npy", mmap_mode=mode) if (folder / "states.npy").exists() else None
        self._pooled = np.load(folder / "pooled.npy", mmap_mode=mode) if (folder / "pooled.npy").exists() else None
        self.states = None if self._states is None else _from_numpy(self._states)
        self.pooled = None if self._pooled is None else _from_numpy(self._pooled)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> torch.Tensor:
        return self.offsets[1:] - self.offsets[:-1]

    def rows(self, indices: Sequence[int], pad_id: int = 0) -> CacheRows:
        """Rows ``indices`` right-padded to their longest (padding has attention 0 and is never pooled)."""
        spans = [(int(self.offsets[i]), int(self.offsets[i + 1])) for i in indices]
        width = max(1, max(e - s for s, e in spans))
        batch = len(spans)
        input_ids = torch.full((batch, width), pad_id, dtype=torch.long)
        attention = torch.zeros((batch, width), dtype=torch.long)
        pool = torch.zeros((batch, width), dtype=torch.long)
        states = None
        if self.states is not None:
            states = torch.zeros((batch, width, self.states.shape[1]), dtype=self.states.dtype)
        for r, (s, e) in enumerate(spans):
            input_ids[r, :e - s] = self.ids[s:e]
            attention[r, :e - s] = 1
            pool[r, :e - s] = self.pool[s:e]
            if states is not None:
                states[r, :e - s] = self.states[s:e]
        pooled = None if self.pooled is None else self.pooled[torch.as_tensor(list(indices), dtype=torch.long)]
        return CacheRows(input_ids, attention, pool, states, pooled)

    # --- building ----------------------------------------------------------------------------------
    @classmethod
    def fingerprint(cls, encoder, texts: Sequence[str], kind: str, layer: int | None, pooled: bool) -> dict:
        card = encoder.card
        return {"version": 1, "kind": kind, "layer": layer, "pooled": pooled, "n_texts": len(texts),
                "texts": texts_fingerprint(texts), "backbone": card.backbone, "adapter": card.adapter,
                "variant": card.variant, "add_bos": card.add_bos, "prefix": card.query_prefix if kind == "query"
                else card.doc_prefix, "max_length": encoder.max_length(kind),
                "dtype": str(next(encoder.model.parameters()).dtype),
                "weights": _weights_fingerprint(encoder.model)}

    @classmethod
    def build(cls, encoder, texts: Sequence[str], kind: str, folder: str | Path, layer: int | None,
              pooled: bool, device: str = "cpu", max_tokens: int = 2048, desc: str | None = None) -> "ActivationCache":
        """Encode ``texts`` once with the frozen ``encoder`` and store what training needs, or reuse the
        folder when it already holds exactly this (same fingerprint)."""
        from csplade_pyserini.atomic import atomic_dir

        folder = Path(folder)
        meta = cls.fingerprint(encoder, texts, kind, layer, pooled)
        if (folder / META).exists():
            try:
                found = json.loads((folder / META).read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                found = {}
            if _serves(found, meta):
                logger.info("reusing the activation cache %s", folder)
                return cls(folder, found)
            logger.info("the activation cache %s was built for other inputs: rebuilding it", folder)
        if layer is None and not pooled:
            raise ValueError("a cache needs states (layer) or pooled logits")
        sequences = encoder.tokenize(list(texts), kind)
        batches = list(encoder.batches(sequences, max_tokens, max_batch=256, pad_multiple=1, kind=kind))
        lengths = [0] * len(sequences)
        for batch in batches:
            for row, index in enumerate(batch.order):
                lengths[index] = int(batch.attention_mask[row].sum())
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        total = int(offsets[-1])
        hidden = encoder.model.config.hidden_size
        dtype = next(encoder.model.parameters()).dtype
        storage = _STORAGE.get(dtype, np.float32)
        dtype = dtype if dtype in _STORAGE else torch.float32
        with atomic_dir(folder) as tmp:
            tmp = Path(tmp)
            ids = np.zeros(total, dtype=np.int32)
            pool = np.zeros(total, dtype=bool)
            states = (np.lib.format.open_memmap(tmp / "states.npy", mode="w+", dtype=storage, shape=(total, hidden))
                      if layer is not None else None)
            pooled_out = (np.lib.format.open_memmap(tmp / "pooled.npy", mode="w+", dtype=storage,
                                                    shape=(len(sequences), encoder.vocab)) if pooled else None)
            _, head = _head(encoder)
            with torch.inference_mode(), tqdm(total=len(sequences), desc=desc or f"cache {kind}s", unit=kind,
                                              dynamic_ncols=True, mininterval=5) as bar:
                for batch in batches:
                    input_ids = batch.input_ids.to(device)
                    attention = batch.attention_mask.to(device)
                    final, layer_states = _forward(encoder, input_ids, attention, layer)
                    maxima = (max_pool_lm_head(final, head, batch.pool_mask.to(device), encoder.chunk_elements)
                              if pooled else None)
                    for row, index in enumerate(batch.order):
                        s, e = int(offsets[index]), int(offsets[index + 1])
                        n = e - s
                        ids[s:e] = batch.input_ids[row, :n].numpy()
                        pool[s:e] = batch.pool_mask[row, :n].bool().numpy()
                        if states is not None:
                            states[s:e] = _to_numpy(layer_states[row, :n], dtype)
                        if pooled_out is not None:
                            pooled_out[index] = _to_numpy(maxima[row], dtype)
                    bar.update(len(batch.order))
            if states is not None:
                states.flush()
                del states
            if pooled_out is not None:
                pooled_out.flush()
                del pooled_out
            np.save(tmp / "ids.npy", ids)
            np.save(tmp / "pool.npy", pool)
            np.save(tmp / "offsets.npy", offsets)
            (tmp / META).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        return cls(folder, meta)


def _serves(found: dict, wanted: dict) -> bool:
    """A cache serves a request when its inputs are the same and it holds what is asked (a cache with
    states and pooled logits serves a run that needs only one of them)."""
    same = {k: v for k, v in found.items() if k not in ("layer", "pooled")} == \
        {k: v for k, v in wanted.items() if k not in ("layer", "pooled")}
    return (same and (wanted["layer"] is None or found.get("layer") == wanted["layer"])
            and (not wanted["pooled"] or found.get("pooled", False)))


def _head(encoder):
    from csplade_pyserini.model.sparse import decoder_and_head

    return decoder_and_head(encoder.model)


def _forward(encoder, input_ids: torch.Tensor, attention: torch.Tensor, layer: int | None):
    """Final normed states and the states entering ``layer`` (None when not asked for)."""
    from csplade_pyserini.model.sparse import num_layers

    decoder, _ = _head(encoder)
    total = num_layers(encoder.model)
    embeds = decoder.get_input_embeddings()(input_ids)
    want = layer is not None and layer < total
    out = decoder(inputs_embeds=embeds, attention_mask=encoder.decoder_mask(decoder, embeds, attention),
                  use_cache=False, output_hidden_states=want)
    final = out.last_hidden_state
    if layer is None:
        return final, None
    return final, (final if layer >= total else out.hidden_states[layer])


def _weights_fingerprint(model) -> str:
    """A cheap fingerprint of the weights: sums of a few parameters (a changed adapter or merge shows)."""
    digest = hashlib.sha256()
    params = list(model.parameters())
    for p in params[:3] + params[-3:]:
        digest.update(f"{tuple(p.shape)}:{float(p.detach().float().sum()):.6e}".encode())
    return digest.hexdigest()[:16]
