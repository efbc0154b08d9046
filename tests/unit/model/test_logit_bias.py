"""The per-term logit bias: activation by hand, and the checkpoint round trip (trainer vectors == loaded vectors == exported vectors)."""

import pytest
import torch

from csplade_pyserini.errors import InputError
from csplade_pyserini.model.card import ModelCard
from csplade_pyserini.model.logit_bias import load_logit_bias, save_logit_bias
from csplade_pyserini.model.pooling import splade_activation
from csplade_pyserini.model.sparse import SparseEncoder, decoder_and_head


def test_activation_applies_scale_then_bias():
    x = torch.tensor([[2.0, 10.0, -1.0]])
    bias = torch.tensor([-1.0, -4.0, 3.0])
    expected = torch.log1p(torch.relu(torch.tensor([[0.5 * 2 - 1, 0.5 * 10 - 4, 0.5 * -1 + 3]])))
    assert torch.allclose(splade_activation(x, 0.5, bias), expected)
    assert torch.equal(splade_activation(x, None, None), torch.log1p(torch.relu(x)))


def test_bias_changes_weights_and_is_checked_against_the_vocabulary(tiny_model, tmp_path):
    encoder = tiny_model.encoder
    vocab = decoder_and_head(encoder.model)[1].shape[0]
    batch = encoder.collate(encoder.tokenize(["the zebra runs"], "doc"))
    with torch.no_grad():
        plain = encoder(batch.input_ids, batch.attention_mask, batch.pool_mask)
        shifted = SparseEncoder(encoder.model, encoder.tokenizer, encoder.card, logit_bias=torch.full((vocab,), -1e4))(
            batch.input_ids, batch.attention_mask, batch.pool_mask)
    assert (plain > 0).any() and not (shifted > 0).any()
    with pytest.raises(ValueError, match="entries"):
        SparseEncoder(encoder.model, encoder.tokenizer, encoder.card, logit_bias=torch.zeros(vocab + 1))
    save_logit_bias(torch.zeros(5), tmp_path)
    with pytest.raises(InputError, match="5 entries"):
        load_logit_bias("logit_bias.safetensors", tmp_path, vocab=vocab)
    with pytest.raises(InputError, match="does not exist"):
        load_logit_bias("missing.safetensors", tmp_path)
    (tmp_path / "hostname").write_text("not tensors\n")  # e.g. logit_bias: ../../etc/hostname
    with pytest.raises(InputError, match="not a readable safetensors file") as info:
        load_logit_bias("hostname", tmp_path)
    assert info.value.field == "logit_bias" and info.value.path == str(tmp_path / "hostname")
    with pytest.raises(InputError, match="logit_bias"):
        ModelCard(logit_bias="  ")
