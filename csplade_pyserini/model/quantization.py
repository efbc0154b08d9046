"""Quantised inference for the query side (issue: batch-1 query latency on CPU).

``int8-dynamic`` replaces every ``nn.Linear`` of the decoder layers with ``torch.ao``'s dynamically
quantised linear (int8 weights per tensor, activations quantised per batch at run time, int32
accumulation): on x86 CPUs the fbgemm/onednn int8 kernels do the projections, which are most of a short
query's compute. The LM head is left alone: the pooling reads its weight tensor directly (chunked
``hidden @ head.T`` with a running max), and a vocabulary-sized head has no int8 path there.
"""

from __future__ import annotations

import logging

import torch

from csplade_pyserini.errors import ModelSpecError

logger = logging.getLogger(__name__)


def quantize_decoder(model, mode: str, device: str = "cpu") -> int:
    """Quantise the decoder layers of a ``*ForCausalLM`` in place; returns how many linear layers changed."""
    if mode != "int8-dynamic":
        raise ModelSpecError(f"unknown quantization {mode!r}")
    if not str(device).startswith("cpu"):
        raise ModelSpecError("quantization=int8-dynamic runs on the CPU only (torch.ao dynamic quantization)")
    import warnings

    from torch.ao.quantization import quantize_dynamic

    from csplade_pyserini.model.sparse import decoder_and_head

    decoder, _ = decoder_and_head(model)
    before = sum(isinstance(m, torch.nn.Linear) for m in decoder.layers.modules())
    with warnings.catch_warnings():  # torch marks its quantized tensor constructors as deprecated
        warnings.simplefilter("ignore", UserWarning)
        quantize_dynamic(decoder.layers, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
    logger.info("int8 dynamic quantization of %d linear layers (LM head kept in float32)", before)
    return before
