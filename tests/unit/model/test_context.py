"""The LM head read early (``model/context.py``): card rules, the map's file, and vectors by hand."""

import pytest
import torch
from conftest import make_tiny_llama

from csplade_pyserini.errors import InputError
from csplade_pyserini.model.card import ModelCard
from csplade_pyserini.model.context import ContextHead, rms_normalise


def test_card_rules_for_the_context_fields():
    card = ModelCard(context_layer=4, context_head="context_head.safetensors")
    assert card.context_layer == 4
    for changes, field in [({"context_head": "c.safetensors"}, "context_layer"), ({"context_layer": 2}, "context_layer"),
                           ({"context_layer": -1, "context_head": "c"}, "context_layer"),
                           ({"context_layer": True, "context_head": "c"}, "context_layer"),
                           ({"context_layer": 2, "context_head": "c", "lexical_head": "l", "lexical_layer": 1},
                            "context_layer"),
                           ({"context_layer": 2, "context_head": "c", "expansion": False, "lexical_head": "l",
                             "lexical_layer": 1}, "context_layer")]:
        with pytest.raises(InputError) as info:
            ModelCard(**changes)
        assert info.value.field == field


def test_an_untrained_map_adds_nothing_and_the_file_round_trips(tmp_path):
    head = ContextHead(8)
    embeddings, context = torch.randn(3, 8), torch.randn(3, 8) * 50
    assert torch.equal(head(embeddings, context), embeddings)
    torch.nn.init.normal_(head.map.weight)
    expected = embeddings + rms_normalise(context) @ head.map.weight.t()
    assert torch.allclose(head(embeddings, context), expected, atol=1e-5)
    assert torch.allclose(rms_normalise(torch.tensor([[3.0, -3.0]])), torch.tensor([[1.0, -1.0]]), atol=1e-5)
    head.save(tmp_path)
    loaded = ContextHead.load("context_head.safetensors", tmp_path, 8)
    assert torch.equal(loaded.map.weight, head.map.weight)
    with pytest.raises(InputError, match="16 wide") as info:
        ContextHead.load("context_head.safetensors", tmp_path, 16)
    assert info.value.field == "context_head" and info.value.path == str(tmp_path / "context_head.safetensors")


def test_the_encoder_runs_context_layer_layers_and_reads_the_lm_head_by_hand(tmp_path, tokenizer_dir):
    """Card with ``context_layer: 1`` and a zero map: the backbone keeps one layer and a document's weights are
    ``log(1 + relu(max(0, max_t lm_head(final_norm(embed(x_t)))) + bias))`` over its text positions."""
    from csplade_pyserini.model.encoder import CspladeModel
    from csplade_pyserini.model.logit_bias import save_logit_bias

    folder = make_tiny_llama(tmp_path / "tiny", tokenizer_dir, doc_top_k=None, context_layer=1,
                             context_head="context_head.safetensors", logit_bias="logit_bias.safetensors")
    ContextHead(32).save(folder)
    vocab = len(__import__("transformers").AutoTokenizer.from_pretrained(tokenizer_dir))
    bias = torch.linspace(-3, 1, vocab)
    save_logit_bias(bias, folder)
    model = CspladeModel.from_spec(f"csplade:{folder}", cache=False)
    encoder = model.encoder
    decoder = encoder.model.model
    assert len(decoder.layers) == 1
    [sequence] = encoder.tokenize(["cells grow"], "doc")
    text = sequence[encoder.prefix_length(sequence, "doc"):]
    [(ids, weights)] = encoder.encode_sequences([sequence], top_k=None)
    with torch.no_grad():
        states = decoder.norm(decoder.embed_tokens(torch.tensor(text)))
        expected = torch.log1p(torch.relu((states @ encoder.model.lm_head.weight.t()).amax(0).clamp_min(0) + bias))
    expected[encoder.excluded_ids(vocab, "cpu")] = 0
    encoded = torch.zeros(vocab).index_put_((ids,), weights.float())
    assert len(ids) > 100 and torch.allclose(encoded, expected, atol=1e-4)
