"""Training options for card fields come from ``ModelCard`` (type, default, choices) and are read by the
card's own value parser: one source of truth for cards, specs and training."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from csplade_pyserini.errors import InputError
from csplade_pyserini.model.card import CARD_CHOICES, ModelCard, card_field_type, parse_card_value
from csplade_pyserini.train.config import CARD_OPTIONS, TEXT_CARD_OPTIONS, ModelArguments, parse_arguments


def test_every_card_option_has_the_cards_default_type_and_choices():
    card = ModelCard()
    options = {f.name: f for f in dataclasses.fields(ModelArguments)}
    hints = typing.get_type_hints(ModelArguments)  # (HfArgumentParser rewrites Optional field types in place)
    for name in CARD_OPTIONS:
        assert options[name].default == getattr(card, name), name
        assert hints[name] == TEXT_CARD_OPTIONS.get(name, card_field_type(name)), name
        if name in CARD_CHOICES:
            assert options[name].metadata["choices"] == list(CARD_CHOICES[name])
    assert ModelArguments().card() == ModelCard()  # no option, no difference


def test_one_parser_reads_card_values_for_specs_and_training():
    assert parse_card_value("logit_scale", "auto") == "auto"
    assert parse_card_value("logit_scale", "0.5") == 0.5 and parse_card_value("doc_top_k", "none") is None
    assert parse_card_value("add_bos", "false") is False and parse_card_value("max_doc_length", "64") == 64
    model_args, _, _ = parse_arguments("contrastive", ["--logit-scale", "0.5", "--max-doc-length", "64",
                                                       "--output-dir", "x"])
    assert model_args.card().logit_scale == 0.5 and model_args.card().max_doc_length == 64
    for flag, value in (("--logit-scale", "many"), ("--logit-scale", "-1"), ("--max-doc-length", "0")):
        with pytest.raises(InputError) as error:
            parse_arguments("contrastive", [flag, value, "--output-dir", "x"])
        assert error.value.field == flag[2:].replace("-", "_")
