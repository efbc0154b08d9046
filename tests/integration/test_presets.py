"""Named presets for published checkpoints, wired through tiny random models in the published layouts.

The hub cannot be reached here, so each preset's repositories are laid out in a local Hugging Face cache
(``models--OWNER--NAME/snapshots/REV`` + ``refs/main``) exactly as the authors publish them (LACONIC: a
full model without tokenizer files, the tokenizer in the Llama-3 base repo; Lion-SP: a peft adapter whose
``adapter_config.json`` names its base model, the tokenizer in the adapter repo), and loaded with
``HF_HUB_OFFLINE=1``: the same code path a user with internet takes, minus the download.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from conftest import run_python

from csplade_pyserini.errors import ModelSpecError
from csplade_pyserini.model.presets import PRESETS
from csplade_pyserini.model.spec import card_from_spec


def publish(cache: Path, repo_id: str, files: dict[str, Path]) -> None:
    """Put ``files`` (name -> local file) into the local hub cache as the snapshot of ``repo_id``."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    revision = hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, source in files.items():
        shutil.copyfile(source, snapshot / name)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision)


BASES = {"lion-sp-1b": "meta-llama/Llama-3.2-1B", "lion-sp-8b": "meta-llama/Meta-Llama-3-8B",
         "lion-ds-1b": "meta-llama/Llama-3.2-1B", "lion-ds-8b": "meta-llama/Meta-Llama-3-8B"}


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory, tokenizer_dir):
    """Every preset's repositories, with tiny random Llamas (SmolLM2's tokenizer stands in for Llama-3's)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, LlamaModel

    work = tmp_path_factory.mktemp("presets")
    cache = work / "hub"
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
                         tie_word_embeddings=True)
    torch.manual_seed(0)
    full = work / "full"
    LlamaForCausalLM(config).save_pretrained(full)
    tok = work / "tok"
    tokenizer.save_pretrained(tok)
    model_files = {name: full / name for name in ("config.json", "model.safetensors", "generation_config.json")}
    tokenizer_files = {path.name: path for path in tok.iterdir()}  # what this transformers saves
    for preset in PRESETS.values():
        card = preset.card
        if card["backbone"] is not None:  # LACONIC: a full model; its tokenizer lives in another repo
            publish(cache, card["backbone"], model_files)
            publish(cache, card["tokenizer"], {**tokenizer_files, "config.json": full / "config.json"})
        else:  # Lion: an adapter on the base model its adapter_config names; tokenizer (and the base's
            # config.json, which the authors' loader reads) in the adapter repo. Lion-SP's adapter was
            # trained on the causal LM, Lion-DS's on the headless decoder (keys base_model.model.layers.*).
            base = BASES[preset.name]
            publish(cache, base, model_files)
            torch.manual_seed(1)
            module = (LlamaModel if preset.name.startswith("lion-ds") else LlamaForCausalLM).from_pretrained(full)
            lora = get_peft_model(module, LoraConfig(
                r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
            lora.peft_config["default"].base_model_name_or_path = base
            adapter = work / preset.name
            lora.save_pretrained(adapter)
            publish(cache, card["adapter"], {"adapter_config.json": adapter / "adapter_config.json",
                                             "adapter_model.safetensors": adapter / "adapter_model.safetensors",
                                             "config.json": full / "config.json", **tokenizer_files})
    return cache


PROBE = r"""
import json, sys, torch
from csplade_pyserini.model.encoder import CspladeModel
from csplade_pyserini.model.sparse import set_bidirectional
spec = sys.argv[1]
model = CspladeModel.from_spec(spec, cache=False)
enc, tok = model.encoder, model.encoder.tokenizer
texts = ["Cells divide by mitosis in most tissues of the body", "Aspirin"]
ids = enc.tokenize(texts, "query")
batch = enc.collate(ids, kind="query")
# bidirectional attention: the first position's state depends on the last token
a = torch.tensor([ids[0]]); b = a.clone(); b[0, -1] = (b[0, -1] + 7) % len(tok)
ones = torch.ones_like(a)
with torch.inference_mode():
    first = (enc.hidden_states(a, ones)[0, 0] - enc.hidden_states(b, ones)[0, 0]).abs().max().item()
    pooled = enc.max_logits(batch.input_ids, batch.attention_mask, batch.pool_mask)
    weights = enc.forward(batch.input_ids, batch.attention_mask, batch.pool_mask)
scale = model.card.resolved_logit_scale(enc.model.config.hidden_size)
expected = torch.log1p(torch.relu(pooled.float() * (scale or 1.0)))
expected = expected.index_fill(-1, enc.excluded_ids(expected.shape[-1], "cpu"), 0.0)
together = model.encode(texts, kind="query")
alone = [model.encode([t], kind="query")[0] for t in texts]
print(json.dumps({
    "card": model.card.to_dict(), "ids": ids, "bos": tok.bos_token_id, "decoded": [tok.decode(i) for i in ids],
    "prefix_ids": tok(model.card.query_prefix, add_special_tokens=False)["input_ids"] if model.card.query_prefix else [],
    "input_ids": batch.input_ids.tolist(), "pool_mask": batch.pool_mask.tolist(), "pad": tok.pad_token_id,
    "padding_side": tok.padding_side, "causal_modules": sum(1 for m in enc.model.modules() if getattr(m, "is_causal", None) is True),
    "first_state_change": first, "scale": scale, "activation_error": (weights - expected).abs().max().item(),
    "terms": [len(v) for v in together], "weights_int": all(isinstance(w, int) for v in together for w in v.values()),
    "batch_vs_alone": [sum(abs(x.get(t, 0) - y.get(t, 0)) > 1 for t in set(x) | set(y)) for x, y in zip(together, alone)],
}))
"""


def probe(hub_cache: Path, spec: str) -> dict:
    result = run_python("-c", PROBE, spec, env={"HF_HUB_CACHE": str(hub_cache), "HF_HUB_OFFLINE": "1",
                                                "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_every_preset_resolves_to_its_authors_conventions():
    for name, preset in PRESETS.items():
        dense = preset.card.get("representation") == "dense"
        card, base_dir = card_from_spec(f"csplade-dense:{name}" if dense else f"csplade:{name}")
        assert card.name == name and base_dir is None and card.variant == "bidirectional"
        assert card.add_bos == name.startswith("lion")  # LACONIC drops the BOS; Lion's code keeps it
        assert card.is_dense == name.startswith("lion-ds")
        assert card.quant_scale == 100.0
    laconic = card_from_spec("csplade:laconic-8b")[0]
    assert (laconic.backbone, laconic.tokenizer) == ("utahnlp/laconic-8b", "unsloth/Llama-3.2-1B")
    assert (laconic.query_prefix, laconic.doc_prefix, laconic.doc_top_k, laconic.query_top_k) == (
        "query: ", "passage: ", 512, 512)
    lion = card_from_spec("csplade:lion-sp-8b,max_doc_length=192")[0]
    assert lion.backbone is None and lion.adapter == lion.tokenizer == "hzeng/Lion-SP-8B-llama3-marco-mntp"
    assert (lion.logit_scale, lion.padding_side, lion.query_prefix, lion.doc_prefix) == ("auto", "left", "", "")
    assert (lion.max_query_length, lion.max_doc_length) == (64, 192)
    ds = card_from_spec("csplade-dense:lion-ds-1b")[0]
    assert ds.adapter == ds.tokenizer == "hzeng/Lion-DS-1B-llama3-marco-mntp" and ds.dense_pooling == "mean"
    assert (ds.padding_side, ds.query_prefix, ds.max_query_length, ds.max_doc_length) == ("left", "", 64, 512)
    with pytest.raises(ModelSpecError, match="sparse model"):  # a sparse preset is not a dense model
        card_from_spec("csplade-dense:lion-sp-1b")


def test_laconic_preset_loads_the_published_layout(hub_cache):
    out = probe(hub_cache, "csplade:laconic-1b")
    assert out["card"]["name"] == "laconic-1b"
    assert out["decoded"] == ["query: Cells divide by mitosis in most tissues of the body", "query: Aspirin"]
    assert all(out["bos"] not in ids for ids in out["ids"])
    assert out["padding_side"] == "right" and out["input_ids"][1][-1] == out["pad"]
    assert out["causal_modules"] == 0 and out["first_state_change"] > 1e-4  # bidirectional attention on
    assert out["scale"] is None and out["activation_error"] < 1e-5
    assert out["terms"] == [512, 512] and out["weights_int"]  # top-512 terms (a random head is dense), x100 ints
    assert out["batch_vs_alone"] == [0, 0]


def test_lion_sp_preset_loads_adapter_base_and_tokenizer_from_the_hub_layout(hub_cache):
    out = probe(hub_cache, "csplade:lion-sp-1b")
    assert out["card"]["adapter"] == "hzeng/Lion-SP-1B-llama3-marco-mntp" and out["card"]["backbone"] is None
    assert all(ids[0] == out["bos"] for ids in out["ids"])  # BOS kept
    assert [d.endswith("Aspirin") and "query" not in d for d in out["decoded"]] == [False, True]  # no prompt
    short, long_ = out["input_ids"][1], out["input_ids"][0]
    assert out["padding_side"] == "left" and short[0] == out["pad"] and short[-1] != out["pad"]  # left padding
    assert out["pool_mask"][1][-1] == 1 and out["pool_mask"][1][0] == 0 and long_[0] != out["pad"]
    assert out["causal_modules"] == 0 and out["first_state_change"] > 1e-4
    assert out["scale"] == pytest.approx(32 ** -0.25) and out["activation_error"] < 1e-5  # logit scale applied
    assert out["weights_int"] and out["batch_vs_alone"] == [0, 0]  # left padding changes no weight


def test_preset_through_the_literal_pyserini_encode(hub_cache, tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "contents": text}) + "\n" for i, text in enumerate(
        ["Cells divide by mitosis.", "Aspirin reduces the risk of heart attack in adults over fifty years of age."])))
    run_python("-m", "pyserini.encode", "input", "--corpus", str(corpus), "output", "--embeddings",
               str(tmp_path / "vectors"), "encoder", "--encoder", "csplade:lion-sp-1b", "--device", "cpu",
               env={"HF_HUB_CACHE": str(hub_cache), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    lines = (tmp_path / "vectors" / "embeddings.jsonl").read_text().splitlines()
    assert [json.loads(l)["id"] for l in lines] == ["d0", "d1"] and all(json.loads(l)["vector"] for l in lines)


def test_a_preset_without_the_hub_fails_clearly(tmp_path):
    result = run_python("-m", "csplade_pyserini.encode_queries", "--topics", "beir-v1.0.0-scifact.test", "--encoder",
                        "csplade:laconic-3b", "--output", str(tmp_path / "q.jsonl"), check=False,
                        env={"HF_HUB_CACHE": str(tmp_path / "empty"), "HF_HUB_OFFLINE": "1"})
    assert result.returncode != 0 and "utahnlp/laconic-3b" in result.stderr and "hub" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "q.jsonl").exists()


DENSE_PROBE = r"""
import json, sys, torch
from peft import PeftModel
from transformers import AutoModelForCausalLM
from csplade_pyserini.model.encoder import CspladeModel
from csplade_pyserini.model.dense import pool_dense
model = CspladeModel.from_spec("csplade-dense:lion-ds-1b,dtype=float32", cache=False)  # exact comparisons
enc, tok = model.encoder, model.encoder.tokenizer
texts = ["Cells divide by mitosis in most tissues of the body", "Aspirin"]
together = torch.as_tensor(model.encode_dense(texts, kind="query"))
alone = torch.cat([torch.as_tensor(model.encode_dense([t], kind="query")) for t in texts])
# by hand: the base model, the adapter merged into its headless decoder, every token of the text pooled
base = AutoModelForCausalLM.from_pretrained(sys.argv[1])
plain = base.model.layers[0].self_attn.q_proj.weight.clone()
base.model = PeftModel.from_pretrained(base.model, "hzeng/Lion-DS-1B-llama3-marco-mntp").merge_and_unload()
loaded = model.encoder.model.model.layers[0].self_attn.q_proj.weight
ids = enc.tokenize([texts[1]], "query")[0]
with torch.inference_mode():
    states = model.encoder.hidden_states(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long))
    by_hand = pool_dense(states, torch.ones(1, len(ids)), "mean")[0]
print(json.dumps({
    "shape": list(together.shape), "bos_first": ids[0] == tok.bos_token_id, "padding_side": tok.padding_side,
    "batch_vs_alone": (together - alone).abs().max().item(), "pooled_error": (together[1] - by_hand).abs().max().item(),
    "adapter_applied": (loaded - base.model.layers[0].self_attn.q_proj.weight).abs().max().item(),
    "adapter_changes": (loaded - plain).abs().max().item(),
    "causal_modules": sum(1 for m in enc.model.modules() if getattr(m, "is_causal", None) is True),
}))
"""


def test_lion_ds_preset_applies_its_headless_adapter_to_the_decoder(hub_cache):
    # peft alone would attach this adapter to the causal LM, load none of its tensors, warn and run freshly
    # initialised LoRA weights; the loader reads the adapter's module tree and merges it into the decoder
    result = run_python("-c", DENSE_PROBE, BASES["lion-ds-1b"], env={
        "HF_HUB_CACHE": str(hub_cache), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["shape"] == [2, 32] and out["bos_first"] and out["padding_side"] == "left"
    assert out["adapter_changes"] > 1e-3 and out["adapter_applied"] < 1e-6  # the adapter's own weights, merged
    assert out["causal_modules"] == 0  # bidirectional
    assert out["batch_vs_alone"] < 1e-5 and out["pooled_error"] < 1e-5  # left padding changes nothing


def test_an_adapter_for_another_module_tree_is_refused(tmp_path, tokenizer_dir):
    # an adapter with tensors for a layer the model does not have must not load as a silent partial no-op
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from csplade_pyserini.model.backbone import apply_adapter

    size = len(AutoTokenizer.from_pretrained(tokenizer_dir))
    config = dict(vocab_size=size, hidden_size=32, intermediate_size=64, num_attention_heads=2, num_key_value_heads=1)
    torch.manual_seed(0)
    lora = get_peft_model(LlamaForCausalLM(LlamaConfig(num_hidden_layers=3, **config)),
                          LoraConfig(r=4, target_modules=["q_proj"], init_lora_weights=False))
    lora.save_pretrained(tmp_path / "adapter")
    with pytest.raises(ModelSpecError, match=r"2 of its 6 tensors address no module .*layers\.2"):
        apply_adapter(LlamaForCausalLM(LlamaConfig(num_hidden_layers=2, **config)), tmp_path / "adapter")


def test_lion_ds_preset_through_the_literal_pyserini_faiss_commands(hub_cache, tmp_path):
    import faiss

    env = {"HF_HUB_CACHE": str(hub_cache), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "contents": text}) + "\n" for i, text in enumerate(
        ["Cells divide by mitosis.", "Aspirin reduces the risk of heart attack in adults over fifty years of age."])))
    topics = tmp_path / "topics.tsv"
    topics.write_text("q1\tDoes aspirin prevent heart attacks?\n")
    run_python("-m", "pyserini.encode", "input", "--corpus", str(corpus), "output", "--embeddings",
               str(tmp_path / "faiss"), "--to-faiss", "encoder", "--encoder", "csplade-dense:lion-ds-1b",
               "--device", "cpu", env=env)
    assert faiss.read_index(str(tmp_path / "faiss" / "index")).d == 32  # the model's hidden size
    run_python("-m", "pyserini.search.faiss", "--index", str(tmp_path / "faiss"), "--topics", str(topics),
               "--encoder", "csplade-dense:lion-ds-1b", "--output", str(tmp_path / "run.txt"), "--hits", "2",
               "--device", "cpu", env=env)
    lines = (tmp_path / "run.txt").read_text().split("\n")
    assert sorted(line.split()[2] for line in lines if line) == ["d0", "d1"]
