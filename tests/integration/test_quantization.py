"""Quantised encoders (card quantization): a card field the encoders honour, close to float32 on the vectors."""

from __future__ import annotations

import pytest
import torch
from conftest import scifact_slice


def test_int8_dynamic_queries_agree_with_float32(tiny_checkpoint, tmp_path, one_thread):
    """Stated tolerance: on 12 SciFact queries, each query's 10 heaviest float32 terms are (nearly all) in its
    int8 vector, and shared terms' impacts differ by at most 10% of the query's largest impact. (On the
    packaged default model the int8 query side changed SciFact nDCG@10 by -0.0018: bench-latency.md.)"""
    import torch

    from csplade_pyserini.model.encoder import CspladeModel

    _, topics, _ = scifact_slice(tmp_path)
    texts = [line.split("\t", 1)[1] for line in topics.read_text().splitlines()]
    full = CspladeModel.from_spec(f"csplade:{tiny_checkpoint}", cache=False)
    int8 = CspladeModel.from_spec(f"csplade:{tiny_checkpoint},quantization=int8-dynamic", cache=False)
    from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

    assert not any(isinstance(m, DynamicInt8Linear) for m in full.encoder.model.modules())
    assert sum(isinstance(m, DynamicInt8Linear) for m in int8.encoder.model.model.layers.modules()) == 14  # 2 x 7
    assert isinstance(int8.encoder.model.get_output_embeddings(), torch.nn.Linear)  # the LM head stays float
    covered = []
    for a, b in zip(full.encode(texts, kind="query"), int8.encode(texts, kind="query")):
        top = sorted(a, key=a.get, reverse=True)[:10]
        covered.append(sum(t in b for t in top) / len(top))
        shared = a.keys() & b.keys()
        assert max(abs(a[t] - b[t]) for t in shared) <= 0.1 * max(a.values())
    assert sum(covered) / len(covered) >= 0.9


def test_quantization_is_a_checked_card_field():
    from csplade_pyserini.errors import ModelSpecError
    from csplade_pyserini.model.spec import card_from_spec

    assert card_from_spec("csplade,quantization=int8-dynamic")[0].quantization == "int8-dynamic"
    with pytest.raises(ModelSpecError, match="quantization"):
        card_from_spec("csplade,quantization=int3")


# Stated tolerances per mode, on a tiny random model's 12 SciFact queries: the share of each query's 10
# heaviest float32 terms found in the quantised vector (mean over queries), and the largest impact change of
# a shared term as a share of the query's largest impact. 4-bit weights are coarser than 8-bit ones.
TOLERANCES = {"int8-weight-only": (0.9, 0.10), "bnb-int8": (0.9, 0.10), "int4-weight-only": (0.7, 0.30),
              "bnb-nf4": (0.7, 0.30)}


@pytest.fixture(scope="module")
def packable_checkpoint(tmp_path_factory, tokenizer_dir):
    """A tiny model whose every projection has a multiple of 32 outputs and 64 inputs, as bitsandbytes' CPU
    NF4 packing needs (any real model has: SmolLM2-135M's narrowest projection has 192 outputs)."""
    from conftest import make_tiny_llama

    return make_tiny_llama(tmp_path_factory.mktemp("packable") / "ckpt", tokenizer_dir,
                           config={"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 2,
                                   "num_key_value_heads": 2})


@pytest.mark.parametrize("mode", sorted(TOLERANCES))
def test_weight_quantized_queries_agree_with_float32(mode, packable_checkpoint, tmp_path, one_thread):
    from csplade_pyserini.model.encoder import CspladeModel

    tiny_checkpoint = packable_checkpoint
    _, topics, _ = scifact_slice(tmp_path)
    texts = [line.split("\t", 1)[1] for line in topics.read_text().splitlines()]
    full = CspladeModel.from_spec(f"csplade:{tiny_checkpoint}", cache=False)
    quantized = CspladeModel.from_spec(f"csplade:{tiny_checkpoint},quantization={mode}", cache=False)
    layers = quantized.encoder.model.model.layers
    assert not any(type(m) is torch.nn.Linear and type(m.weight) is torch.nn.Parameter
                   and m.weight.dtype == torch.float32 for m in layers.modules()), "a projection stayed float"
    assert type(quantized.encoder.model.get_output_embeddings().weight) is torch.nn.Parameter  # LM head float
    coverage, worst = TOLERANCES[mode]
    covered = []
    for a, b in zip(full.encode(texts, kind="query"), quantized.encode(texts, kind="query")):
        top = sorted(a, key=a.get, reverse=True)[:10]
        covered.append(sum(t in b for t in top) / len(top))
        shared = a.keys() & b.keys()
        assert max(abs(a[t] - b[t]) for t in shared) <= worst * max(a.values()), mode
    assert sum(covered) / len(covered) >= coverage, (mode, covered)


def test_quantized_dense_vectors_stay_close(tokenizer_dir, tmp_path, one_thread):
    """A dense model quantised int8 (weights and activations) keeps each query's vector: cosine >= 0.99."""
    from conftest import make_tiny_llama

    from csplade_pyserini.model.encoder import CspladeModel

    folder = make_tiny_llama(tmp_path / "dense", tokenizer_dir, representation="dense", doc_top_k=None,
                             query_top_k=None)
    texts = ["how do cells divide", "effects of vitamin D on bone density", "the zebra"]
    full = CspladeModel.from_spec(f"csplade-dense:{folder}", cache=False).encode_dense(texts, "query")
    int8 = CspladeModel.from_spec(f"csplade-dense:{folder},quantization=int8-dynamic", cache=False).encode_dense(
        texts, "query")
    cosine = torch.nn.functional.cosine_similarity(torch.from_numpy(full), torch.from_numpy(int8))
    assert bool((cosine >= 0.99).all()), cosine


def test_model_bytes_shrink_with_the_weights(tiny_checkpoint):
    from csplade_pyserini.model.encoder import CspladeModel
    from csplade_pyserini.model.quantization import model_bytes

    full = model_bytes(CspladeModel.from_spec(f"csplade:{tiny_checkpoint}", cache=False).encoder.model)
    int8 = model_bytes(CspladeModel.from_spec(f"csplade:{tiny_checkpoint},quantization=int8-weight-only",
                                              cache=False).encoder.model)
    assert int8 < full
