"""Encoder specs and model cards: what users type after --encoder, and what checkpoints carry."""

from __future__ import annotations

import json

import pytest

from csplade_pyserini.errors import InputError, ModelSpecError
from csplade_pyserini.model.backbone import resolve_backbone
from csplade_pyserini.model.card import ModelCard
from csplade_pyserini.model.spec import (
    BARE_BACKBONE_DEFAULTS,
    card_from_spec,
    parse_spec,
)


def test_parse_spec_forms():
    assert parse_spec("csplade") == (None, {})
    assert parse_spec("csplade:some/model") == ("some/model", {})
    assert parse_spec("csplade,variant=echo,max-doc-length=128,logit_scale=auto,doc_top_k=null") == (
        None, {"variant": "echo", "max_doc_length": 128, "logit_scale": "auto", "doc_top_k": None})
    assert parse_spec("csplade:ckpt,add_bos=true,quant_scale=50") == ("ckpt", {"add_bos": True, "quant_scale": 50.0})


@pytest.mark.parametrize("spec,message", [("splade", "not a csplade"), ("csplade:", "empty model"),
                                          ("csplade,colour=red", "unknown option 'colour'"),
                                          ("csplade,variant", "not key=value"),
                                          ("csplade,variant=sideways", "unknown variant"),
                                          ("csplade,max_doc_length=abc", "cannot read")])
def test_malformed_specs_are_clear(spec, message):
    with pytest.raises(ModelSpecError, match=message):
        card_from_spec(spec)


def test_bare_backbone_gets_top_k_and_checkpoint_card_is_kept(tiny_checkpoint):
    card, base = card_from_spec("csplade:HuggingFaceTB/SmolLM2-135M")
    assert card.backbone == "HuggingFaceTB/SmolLM2-135M" and base is None
    assert card.doc_top_k == BARE_BACKBONE_DEFAULTS["doc_top_k"]
    card, base = card_from_spec(f"csplade:{tiny_checkpoint},variant=echo")
    assert base == tiny_checkpoint.resolve() and card.variant == "echo" and card.doc_top_k == 48


def test_missing_model_path_is_an_error():
    with pytest.raises(ModelSpecError, match="does not exist"):
        resolve_backbone("./no/such/model")
    with pytest.raises(ModelSpecError, match="does not exist"):
        resolve_backbone("/definitely/missing.gguf")


def test_card_round_trip_and_located_errors(tmp_path):
    card = ModelCard(variant="bidirectional", adapter="adapter", quant_scale=64.0)
    card.save(tmp_path)
    assert ModelCard.load(tmp_path) == card
    (tmp_path / "csplade_card.json").write_text(json.dumps({"variant": "echo", "colour": "red"}))
    with pytest.raises(InputError, match="colour") as info:
        ModelCard.load(tmp_path)
    assert "csplade_card.json" in str(info.value)
    (tmp_path / "csplade_card.json").write_text('{"variant": \n "echo",,}')
    with pytest.raises(InputError, match=r"csplade_card.json:2"):
        ModelCard.load(tmp_path)
    with pytest.raises(InputError, match="quant_scale"):
        ModelCard(quant_scale=0)


def test_logit_scale_auto_is_lion_hidden_size_rule():
    assert ModelCard(logit_scale="auto").resolved_logit_scale(576) == pytest.approx(576 ** -0.25)
    assert ModelCard().resolved_logit_scale(576) is None


@pytest.mark.parametrize("field,value", [("add_bos", "false"), ("doc_top_k", True), ("max_doc_length", True),
                                         ("query_prefix", None), ("term_scheme", "nonsense")])
def test_card_fields_are_type_checked(field, value):
    from csplade_pyserini.errors import InputError
    from csplade_pyserini.model.card import ModelCard

    with pytest.raises(InputError) as error:
        ModelCard(**{field: value})
    assert error.value.field == field


def test_a_card_giving_a_field_twice_is_refused(tmp_path):
    from csplade_pyserini.errors import InputError
    from csplade_pyserini.model.card import ModelCard

    card = tmp_path / "csplade_card.json"
    card.write_text('{"variant": "echo", "variant": "causal"}')
    with pytest.raises(InputError, match="twice") as error:
        ModelCard.load(card)
    assert error.value.field == "variant"


def test_a_length_beyond_the_backbones_positions_is_refused(tiny_checkpoint):
    from csplade_pyserini.errors import InputError
    from csplade_pyserini.model.encoder import CspladeModel

    with pytest.raises(InputError, match="beyond the backbone's 1024 positions") as info:
        CspladeModel.from_spec(f"csplade:{tiny_checkpoint},max_doc_length=4096", cache=False)
    assert info.value.field == "max_doc_length"
    CspladeModel.from_spec(f"csplade:{tiny_checkpoint},max_doc_length=1024", cache=False)
