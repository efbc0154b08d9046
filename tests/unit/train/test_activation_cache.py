"""The frozen bottom's activation cache (``train/cache.py``) gives the vectors of the uncached forward, for
every variant; it is rebuilt only for other inputs; the causal prefix is never pooled."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_thread")


def test_causal_variant_does_not_pool_the_prefix(tiny_checkpoint):
    from csplade_pyserini.model.encoder import CspladeModel

    causal = CspladeModel.from_spec(f"csplade:{tiny_checkpoint}", cache=False).encoder
    bidirectional = CspladeModel.from_spec(f"csplade:{tiny_checkpoint},variant=bidirectional", cache=False).encoder
    sequences = causal.tokenize(["Cells of the immune system"], "doc")
    prefix = causal.tokenizer("passage:", add_special_tokens=False)["input_ids"]
    assert sequences[0][:len(prefix)] == prefix
    assert causal.collate(sequences, kind="doc").pool_mask[0].tolist()[:len(prefix) + 1] == [0] * len(prefix) + [1]
    assert bidirectional.collate(sequences, kind="doc").pool_mask[0, :len(prefix)].tolist() == [1] * len(prefix)
    # the prefix states do not depend on the text: two documents no longer share the prefix's terms
    with torch.no_grad():
        batch = causal.collate(causal.tokenize(["zebra zebra", "volcano"], "doc"), kind="doc")
        states = causal.hidden_states(batch.input_ids, batch.attention_mask)
    assert torch.allclose(states[0, :len(prefix)], states[1, :len(prefix)], atol=1e-5)


@pytest.mark.parametrize("variant", ["causal", "echo", "bidirectional"])
@pytest.mark.parametrize("frozen", [1, 2])
def test_cached_activations_give_the_uncached_vectors(tiny_checkpoint, tmp_path, variant, frozen):
    from csplade_pyserini.model.encoder import CspladeModel
    from csplade_pyserini.model.lexical import LexicalHead
    from csplade_pyserini.model.sparse import SparseEncoder
    from csplade_pyserini.train.cache import ActivationCache
    from csplade_pyserini.train.model import SparseBiEncoder

    base = CspladeModel.from_spec(f"csplade:{tiny_checkpoint},variant={variant}", cache=False).encoder
    torch.manual_seed(1)
    lexical = LexicalHead(32, 8)
    torch.nn.init.normal_(lexical.out.weight)
    card = base.card.replace(lexical_head="x", lexical_layer=2, expansion_weight=0.5)
    encoder = SparseEncoder(base.model, base.tokenizer, card, logit_bias=torch.randn(base.vocab), lexical=lexical)
    texts = ["Cells of the immune system", "a longer document about volcanoes and glaciers in the north",
             "zebra"]
    with torch.no_grad():
        batch = encoder.collate(encoder.tokenize(texts, "doc"), kind="doc")
        expected = encoder(batch.input_ids, batch.attention_mask, batch.pool_mask)
    pooled = frozen == 2
    cache = ActivationCache.build(encoder, texts, "doc", tmp_path / "cache", layer=2 if pooled else frozen,
                                  pooled=pooled)
    model = SparseBiEncoder(encoder, start_layer=frozen)
    with torch.no_grad():
        rows = cache.rows([0, 1, 2], encoder.tokenizer.pad_token_id).as_features()
        got = model.encode(rows, "doc")
    # the cache keeps the model's precision (fp32 here): the same vectors, to float rounding
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(got > 0, expected > 0)


def test_cache_is_reused_only_for_the_same_inputs(tiny_checkpoint, tmp_path):
    from csplade_pyserini.model.encoder import CspladeModel
    from csplade_pyserini.train.cache import ActivationCache

    encoder = CspladeModel.from_spec(f"csplade:{tiny_checkpoint}", cache=False).encoder
    first = ActivationCache.build(encoder, ["a", "b"], "doc", tmp_path / "c", layer=1, pooled=True)
    stamp = (tmp_path / "c" / "states.npy").stat().st_mtime_ns
    again = ActivationCache.build(encoder, ["a", "b"], "doc", tmp_path / "c", layer=None, pooled=True)
    assert (tmp_path / "c" / "states.npy").stat().st_mtime_ns == stamp and len(again) == len(first) == 2
    other = ActivationCache.build(encoder, ["a", "c"], "doc", tmp_path / "c", layer=1, pooled=True)
    assert other.meta["texts"] != first.meta["texts"]
