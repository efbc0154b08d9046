"""Quantised inference (card ``quantization``), for the CSPLADE efficiency study and a fast query side.

Every mode quantises the ``nn.Linear`` projections of the decoder layers, which are most of the compute of a
short text, and leaves the LM head alone: the sparse pooling reads its weight tensor directly (chunked
``hidden @ head.T`` with a running max), and a vocabulary-sized head has no quantised path there (a dense
model does not use it at all). Embeddings and norms stay in float too. Modes:

* ``int8-dynamic``: ``torch.ao`` dynamic quantization (int8 weights per tensor, activations quantised per
  batch at run time, int32 accumulation; fbgemm/onednn kernels). CPU only. Weights + activations.
* ``int8-weight-only``: torchao ``Int8WeightOnlyConfig`` (int8 weights per channel, float activations).
* ``int4-weight-only``: torchao ``IntxWeightOnlyConfig`` with 4-bit weights in groups of 32 (the CPU path;
  on CPUs torchao keeps the 4-bit values unpacked in int8 storage, so it saves no memory over int8 there).
* ``bnb-int8`` / ``bnb-nf4``: bitsandbytes ``Linear8bitLt`` (LLM.int8()) and ``Linear4bit`` (NF4, groups of
  64), CUDA's usual quantised inference; bitsandbytes >= 0.46 also runs them on the CPU.

torchao and bitsandbytes are optional (``pip install .[quant]``); a mode whose library is missing says so.
"""

from __future__ import annotations

import logging

import torch

from csplade_pyserini.errors import ModelSpecError
from csplade_pyserini.model.card import QUANTIZATIONS

logger = logging.getLogger(__name__)

MODES = tuple(q for q in QUANTIZATIONS if q is not None)
INT4_GROUP_SIZE = 32
NF4_BLOCK_SIZE = 64


def _require(module: str, mode: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        package = "torchao" if module.startswith("torchao") else "bitsandbytes"
        raise ModelSpecError(f"quantization={mode} needs {package} (pip install csplade-pyserini[quant])") from None


def quantize_decoder(model, mode: str, device: str = "cpu") -> int:
    """Quantise the decoder layers of a ``*ForCausalLM`` in place; returns how many linear layers changed."""
    from csplade_pyserini.model.sparse import decoder_and_head

    if mode not in MODES:
        raise ModelSpecError(f"unknown quantization {mode!r}; choose one of {', '.join(MODES)}")
    decoder, _ = decoder_and_head(model)
    count = sum(isinstance(m, torch.nn.Linear) for m in decoder.layers.modules())
    if mode == "int8-dynamic":
        if not str(device).startswith("cpu"):
            raise ModelSpecError("quantization=int8-dynamic runs on the CPU only (torch.ao dynamic quantization)")
        import warnings

        from torch.ao.quantization import quantize_dynamic

        with warnings.catch_warnings():  # torch marks its quantized tensor constructors as deprecated
            warnings.simplefilter("ignore", UserWarning)
            quantize_dynamic(decoder.layers, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
    elif mode in ("int8-weight-only", "int4-weight-only"):
        quantization = _require("torchao.quantization", mode)
        if mode == "int8-weight-only":
            config = quantization.Int8WeightOnlyConfig()
        else:
            from torchao.quantization.granularity import PerGroup

            config = quantization.IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(INT4_GROUP_SIZE))
        quantization.quantize_(decoder.layers, config)
    else:
        _replace_with_bnb(decoder.layers, mode, device)
    logger.info("%s quantization of %d linear layers (LM head kept in float)", mode, count)
    return count


def _replace_with_bnb(layers: torch.nn.Module, mode: str, device: str) -> None:
    """Swap every ``nn.Linear`` under ``layers`` for its bitsandbytes counterpart, quantised from its weights
    when moved to ``device`` (bitsandbytes quantises on the ``.to`` call)."""
    bnb = _require("bitsandbytes", mode)
    import warnings

    # LLM.int8() warns on every call that float32 inputs are cast to float16 (its kernels' precision): once is
    # enough, and the module docstring says it.
    warnings.filterwarnings("ignore", message="MatMul8bitLt: inputs will be cast")
    for parent in list(layers.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, torch.nn.Linear):
                continue
            weight = child.weight.data.float()
            if mode == "bnb-int8":
                new = bnb.nn.Linear8bitLt(child.in_features, child.out_features, bias=child.bias is not None,
                                          has_fp16_weights=False, threshold=6.0)
                new.weight = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False)
            else:
                new = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                        compute_dtype=torch.float32, quant_type="nf4")
                # NF4 blocks of 64 weights along the input; a narrower layer (tiny test models) takes one block
                new.weight = bnb.nn.Params4bit(weight, requires_grad=False, quant_type="nf4",
                                               blocksize=min(NF4_BLOCK_SIZE, child.in_features))
            if child.bias is not None:
                new.bias = torch.nn.Parameter(child.bias.data.float(), requires_grad=False)
            setattr(parent, name, new.to(device))


def model_bytes(model) -> int:
    """Bytes of the model's weights as stored (quantised tensors, packed parameters and all): the size of
    its serialised state dict."""
    import io

    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell()
