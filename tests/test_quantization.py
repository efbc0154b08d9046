"""The int8-dynamic query side: a card field the encoders honour, close to float32 on the vectors."""

from __future__ import annotations

import pytest

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
