"""Trainers, checkpoints, export and the train CLI, on a tiny random Llama with the SmolLM2 tokenizer.

Everything runs on CPU with one torch thread; each training run is a handful of steps on toy data
(8 queries whose relevant passage shares a rare word with the query).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from csplade_pyserini.errors import InputError
from csplade_pyserini.model.card import CARD_NAME, ModelCard
from csplade_pyserini.model.encoder import CspladeModel
from csplade_pyserini.training import checkpoint as ckpt
from csplade_pyserini.training.data import Passage, TrainingExample
from csplade_pyserini.training.loop import (
    AdaptConfig,
    AdaptTrainer,
    ContrastiveConfig,
    ContrastiveTrainer,
    EvalSet,
    evaluate_retrieval,
    read_log,
)

SPLADE_TINY = Path("/work/shared/models/splade-tiny")
RARE = ["zebra", "volcano", "saxophone", "glacier", "cactus", "lighthouse", "pyramid", "octopus"]
FILLER = ["the report describes results", "a study of many things", "general notes about the weather",
          "information on common topics", "the meeting covered plans", "some text about nothing special"]


# --- fixtures --------------------------------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tokenizer():
    from transformers import AutoTokenizer

    from csplade_pyserini.model.backbone import smollm2_gguf

    gguf = smollm2_gguf()
    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tokenizer) -> Path:
    """A folder holding ``backbone/``: a tiny random Llama (2 layers, hidden 32) + the SmolLM2 tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("training")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(root / "backbone")
    tokenizer.save_pretrained(root / "backbone")
    return root


@pytest.fixture(scope="module")
def backbone(workdir) -> str:
    return str(workdir / "backbone")


def toy_examples() -> list[TrainingExample]:
    examples = []
    for i, word in enumerate(RARE):
        negatives = [Passage(f"n{i}-{j}", f"{FILLER[(i + j) % len(FILLER)]} where {j}") for j in range(3)]
        examples.append(TrainingExample(f"q{i}", f"where is the {word}",
                                        [Passage(f"d{i}", f"the {word} is described here in detail")], negatives))
    return examples


def toy_eval_set() -> EvalSet:
    examples = toy_examples()
    docs = {p.docid: p.text for e in examples for p in e.positives + e.negatives}
    return EvalSet({e.query_id: e.query for e in examples}, docs, {e.query_id: {e.positives[0].docid: 1}
                                                                  for e in examples})


@pytest.fixture(scope="module")
def toy_beir(workdir) -> Path:
    """The toy set as a BEIR folder, with a 'BM25' run listing every document for every query."""
    folder = workdir / "toy-beir"
    (folder / "qrels").mkdir(parents=True)
    examples = toy_examples()
    with open(folder / "corpus.jsonl", "w") as corpus, open(folder / "queries.jsonl", "w") as queries, \
            open(folder / "qrels" / "train.tsv", "w") as qrels, open(workdir / "toy.run", "w") as run:
        qrels.write("query-id\tcorpus-id\tscore\n")
        docs = [p for e in examples for p in e.positives + e.negatives]
        for doc in docs:
            corpus.write(json.dumps({"_id": doc.docid, "title": "", "text": doc.text}) + "\n")
        for e in examples:
            queries.write(json.dumps({"_id": e.query_id, "text": e.query}) + "\n")
            qrels.write(f"{e.query_id}\t{e.positives[0].docid}\t1\n")
            for rank, doc in enumerate(docs, start=1):
                run.write(f"{e.query_id} Q0 {doc.docid} {rank} {100 - rank} toy\n")
    return folder


def contrastive_config(backbone: str, output: Path, **changes) -> ContrastiveConfig:
    values = dict(output_dir=str(output), backbone=backbone, per_device_batch_size=4, negatives=1, max_steps=12,
                  learning_rate=1e-3, warmup_fraction=0.0, lora_rank=8, lora_alpha=16, lora_dropout=0.0,
                  max_query_length=16, max_doc_length=24, flops_query_weight=1e-4, flops_doc_weight=1e-4,
                  progress=False, seed=7)
    values.update(changes)
    return ContrastiveConfig(**values)


def adapter_weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / ckpt.ADAPTER_DIR / "adapter_model.safetensors"))


def text_files(folder: Path):
    for path in folder.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".md", ".txt", ".jinja", ".yaml"):
            yield path


# --- phase 1 ---------------------------------------------------------------------------------------
ADAPT_TEXTS = [f"the cat sat on the mat and the dog sat on the log number {i % 3}" for i in range(40)]
# The tiny model's logits are too small for a LoRA on the body alone to move them far in a few steps:
# the LM head gets an adapter too (fine in phase 1, which calls the head module).
ADAPT_TARGETS = ["q_proj", "v_proj", "lm_head"]


def tokenizer_id(token: str, tokenizer) -> int:
    return tokenizer(token, add_special_tokens=False)["input_ids"][0]


def _fixed_loss(trainer) -> float:
    trainer.model.eval()
    with torch.no_grad():
        loss, _ = trainer.micro_loss([(0, i, i) for i in range(4)], 0)
    trainer.model.train()
    return loss.item()


def test_adaptation_lowers_loss(backbone, tmp_path):
    config = AdaptConfig(output_dir=str(tmp_path), backbone=backbone, seq_len=32, per_device_batch_size=4,
                         max_steps=12, learning_rate=1e-2, warmup_fraction=0.0, lora_rank=8, lora_alpha=16,
                         lora_dropout=0.0, target_modules=ADAPT_TARGETS, progress=False)
    trainer = AdaptTrainer(config, texts=ADAPT_TEXTS)
    trainer.setup()
    before = _fixed_loss(trainer)
    result = trainer.train()
    after = _fixed_loss(trainer)
    assert after < before - 2.0, (before, after)
    log = read_log(tmp_path / "train_log.jsonl")
    assert [e["step"] for e in log] == list(range(1, 13))
    assert {"loss", "clm", "relu", "lr", "elapsed", "peak_rss_mb", "positive_logits"} <= log[0].keys()
    assert log[-1]["relu"] < log[0]["relu"] and log[-1]["clm"] < log[0]["clm"]
    assert abs(log[0]["loss"] - (log[0]["clm"] + log[0]["relu"])) < 1e-3  # lambda = 1
    assert result.final_dir is not None and (result.final_dir / CARD_NAME).exists()
    # phase 2 pools the LM head's weight directly: an adapter on lm_head is refused, not silently ignored
    with pytest.raises(InputError, match="lm_head"):
        ContrastiveTrainer(contrastive_config(backbone, tmp_path / "phase2", init_adapter=str(result.final_dir)),
                           examples=toy_examples()).setup()


def test_adapter_of_phase_one_starts_phase_two(backbone, tmp_path):
    from peft.utils import get_peft_model_state_dict

    adapted = AdaptTrainer(AdaptConfig(output_dir=str(tmp_path / "adapt"), backbone=backbone, seq_len=32,
                                       per_device_batch_size=4, max_steps=2, learning_rate=1e-2, warmup_fraction=0.0,
                                       lora_rank=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                       progress=False), texts=ADAPT_TEXTS).train()
    phase1 = adapter_weights(adapted.final_dir)
    assert any(name.endswith("lora_B.weight") and w.abs().sum() > 0 for name, w in phase1.items())
    trainer = ContrastiveTrainer(contrastive_config(backbone, tmp_path / "contrastive", max_steps=2,
                                                    init_adapter=str(adapted.final_dir)), examples=toy_examples())
    trainer.setup()
    start = get_peft_model_state_dict(trainer.model)
    assert start.keys() == phase1.keys()
    assert all(torch.equal(start[name], phase1[name]) for name in phase1)
    assert all(p.requires_grad for n, p in trainer.model.named_parameters() if "lora_" in n)
    result = trainer.train()
    assert ModelCard.load(result.final_dir).notes["training"]["lora_rank"] == 8  # as configured ...
    assert json.loads((result.final_dir / "adapter" / "adapter_config.json").read_text())["r"] == 4  # ... but kept


def test_masked_next_token_adaptation_is_bidirectional(backbone, tmp_path):
    config = AdaptConfig(output_dir=str(tmp_path), backbone=backbone, variant="bidirectional", objective="mntp",
                         seq_len=32, per_device_batch_size=4, max_steps=12, learning_rate=1e-2,
                         warmup_fraction=0.0, lora_rank=8, lora_alpha=16, lora_dropout=0.0, mask_fraction=0.3,
                         target_modules=ADAPT_TARGETS, progress=False)
    trainer = AdaptTrainer(config, texts=ADAPT_TEXTS)
    trainer.setup()
    # masking: position i-1 predicts the ORIGINAL token i for every masked i; the rest is ignored
    ids = trainer.blocks[:4]
    positions = [(0, i, i) for i in range(4)]
    masked, labels, chosen = trainer.mask(ids, positions)
    assert trainer.mask_id == tokenizer_id("_", trainer.tokenizer)  # LLM2Vec's mask for Llama tokenizers
    assert chosen.any() and not chosen[:, 0].any() and (masked[chosen] == trainer.mask_id).all()
    assert torch.equal(masked[~chosen], ids[~chosen])
    assert torch.equal(labels[:, :-1][chosen[:, 1:]], ids[:, 1:][chosen[:, 1:]])
    assert (labels[:, :-1][~chosen[:, 1:]] == -100).all() and (labels[:, -1] == -100).all()
    assert torch.equal(trainer.mask(ids, positions)[0], masked)  # same positions, same mask (resume)
    # attention is bidirectional: changing the LAST token changes the hidden state of the FIRST one
    with torch.no_grad():
        edited = ids[:1].clone()
        edited[0, -1] = (edited[0, -1] + 1) % 1000
        ones = torch.ones_like(edited)
        first = trainer.encoder.hidden_states(ids[:1], ones)[0, 0]
        second = trainer.encoder.hidden_states(edited, ones)[0, 0]
    assert not torch.allclose(first, second)
    before = _fixed_loss(trainer)
    trainer.train()
    assert _fixed_loss(trainer) < before - 2.0


# --- phase 2 ---------------------------------------------------------------------------------------
def test_contrastive_lowers_loss_and_changes_ranking(backbone, tmp_path):
    eval_set = toy_eval_set()
    config = contrastive_config(backbone, tmp_path, max_steps=16, eval_steps=8)
    trainer = ContrastiveTrainer(config, examples=toy_examples(), eval_set=eval_set)
    trainer.setup()
    before = evaluate_retrieval(trainer.sparse_encoder(), eval_set)
    result = trainer.train()
    log = read_log(tmp_path / "train_log.jsonl")
    losses = [e["loss"] for e in log]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    for key in ("cl", "flops_q", "flops_d", "lambda_q", "nnz_q", "nnz_d", "zero_q", "zero_d", "zero_share", "lr",
                "elapsed", "peak_rss_mb"):
        assert key in log[0], key
    assert log[0]["lambda_q"] == 0.0 and log[-1]["lambda_q"] > 0.0  # quadratic FLOPS warm-up
    evals = read_log(tmp_path / "train_log.jsonl", event="eval")
    assert [e["step"] for e in evals] == [8, 16] and all(0.0 <= e["ndcg@10"] <= 1.0 for e in evals)
    after = result.evals[-1]
    ranking = lambda run: {q: sorted(d, key=d.get, reverse=True)[:5] for q, d in run.items()}  # noqa: E731
    assert ranking(after["_run"]) != ranking(before["_run"])
    assert after["ndcg@10"] > before["ndcg@10"]


@pytest.mark.parametrize("variant", ["echo", "bidirectional"])
def test_contrastive_variants_and_options_run(backbone, tmp_path, variant):
    """Other variants, gradient checkpointing, accumulation and bf16 run and produce loadable checkpoints."""
    config = contrastive_config(backbone, tmp_path, variant=variant, max_steps=2, gradient_accumulation_steps=2,
                                per_device_batch_size=2, gradient_checkpointing=True,
                                dtype="bfloat16" if variant == "echo" else "float32")
    result = ContrastiveTrainer(config, examples=toy_examples()).train()
    log = read_log(tmp_path / "train_log.jsonl")
    assert len(log) == 2 and all(torch.isfinite(torch.tensor(e["loss"])) for e in log)
    card = ModelCard.load(result.final_dir)
    assert card.variant == variant and card.adapter == "adapter"


def test_train_top_k_trains_on_the_vectors_the_index_keeps(backbone, tmp_path):
    config = contrastive_config(backbone, tmp_path, max_steps=2, train_top_k=True, query_top_k=3, doc_top_k=5)
    ContrastiveTrainer(config, examples=toy_examples()).train()
    log = read_log(tmp_path / "train_log.jsonl")
    assert all(e["nnz_q"] <= 3 and e["nnz_d"] <= 5 for e in log)
    with pytest.raises(InputError, match="train-top-k"):
        contrastive_config(backbone, tmp_path, train_top_k=True, query_top_k=None, doc_top_k=None).validate()


def test_cl_kd_with_teacher_scores_from_cli(backbone, toy_beir, workdir, tmp_path):
    """score-teacher (splade-tiny) writes qid pid score lines; contrastive CL+KD and KD (MarginMSE) train on
    them from the CLI, BEIR folder + run as data."""
    from csplade_pyserini.train import main
    from csplade_pyserini.training.data import read_teacher_scores

    scores = tmp_path / "teacher.txt"
    assert main(["score-teacher", "--teacher", str(SPLADE_TINY), "--run", str(workdir / "toy.run"), "--data",
                 str(toy_beir), "--top-k", "6", "--output", str(scores)]) == 0
    teacher = read_teacher_scores(scores)
    # the run's top 6 (the same 6 documents for every query here), plus the judged positive when missing
    assert len(teacher) == 8 and len(teacher["q0"]) == 6 and len(teacher["q2"]) == 7 and "d2" in teacher["q2"]
    assert max(teacher["q0"], key=teacher["q0"].get) == "d0"  # a real SPLADE model finds the rare word
    common = ["--data", str(toy_beir), "--run", str(workdir / "toy.run"), "--teacher-scores", str(scores),
              "--backbone", backbone, "--per-device-batch-size", "2", "--negatives", "2", "--max-steps", "3",
              "--learning-rate", "1e-3", "--warmup-fraction", "0", "--lora-rank", "4", "--max-doc-length", "24",
              "--no-progress", "--threads", "1"]
    assert main(["contrastive", *common, "--objective", "clkd", "--kd-loss", "kl",
                 "--output-dir", str(tmp_path / "clkd")]) == 0
    log = read_log(tmp_path / "clkd" / "train_log.jsonl")
    assert len(log) == 3 and all("cl" in e and "kd" in e for e in log)
    assert all(e["kd"] >= 0 for e in log)
    assert main(["contrastive", *common, "--objective", "kd", "--kd-loss", "margin-mse",
                 "--output-dir", str(tmp_path / "kd"), "--eval-data", str(toy_beir), "--eval-split", "train",
                 "--eval-queries", "4", "--eval-docs", "10", "--doc-top-k", "50"]) == 0
    log = read_log(tmp_path / "kd" / "train_log.jsonl")
    assert len(log) == 3 and all("kd" in e and "cl" not in e for e in log)
    evals = read_log(tmp_path / "kd" / "train_log.jsonl", event="eval")  # at the end of training
    assert len(evals) == 1 and evals[0]["step"] == 3 and evals[0]["eval_nnz_d"] <= 50
    assert CspladeModel.from_spec(f"csplade:{tmp_path / 'kd' / 'final'}", cache=False).encode(["zebra"], "query")[0]


def test_score_teacher_with_csplade_and_cross_encoder(backbone, toy_beir, workdir, tmp_path):
    from transformers import AutoConfig, AutoTokenizer, BertForSequenceClassification

    from csplade_pyserini.training.data import read_teacher_scores
    from csplade_pyserini.training.mining import score_teacher

    run = workdir / "toy.run"
    score_teacher(f"csplade:{backbone},doc_top_k=100", run, tmp_path / "csplade.txt", data=toy_beir, top_k=3)
    scores = read_teacher_scores(tmp_path / "csplade.txt")
    assert len(scores) == 8 and all(len(row) in (3, 4) for row in scores.values())
    torch.manual_seed(0)
    config = AutoConfig.from_pretrained(SPLADE_TINY, num_labels=1, architectures=["BertForSequenceClassification"])
    BertForSequenceClassification(config).save_pretrained(tmp_path / "cross")
    AutoTokenizer.from_pretrained(SPLADE_TINY).save_pretrained(tmp_path / "cross")
    score_teacher(str(tmp_path / "cross"), run, tmp_path / "cross.txt", data=toy_beir, top_k=2)
    assert sum(len(row) for row in read_teacher_scores(tmp_path / "cross.txt").values()) == 2 * 8 + 7
    with pytest.raises(InputError, match="teacher"):
        score_teacher(str(tmp_path), run, tmp_path / "none.txt", data=toy_beir)


def test_missing_teacher_scores_is_an_input_error(backbone, toy_beir, workdir, tmp_path):
    config = contrastive_config(backbone, tmp_path, data=str(toy_beir), run=str(workdir / "toy.run"),
                                objective="clkd")
    with pytest.raises(InputError, match="teacher scores"):
        ContrastiveTrainer(config).train()


# --- checkpoints -----------------------------------------------------------------------------------
@pytest.mark.parametrize("full", [False, True], ids=["lora", "full"])
def test_resume_gives_the_same_weights(backbone, tmp_path, full):
    """6 steps in one go == 3 steps, a checkpoint, then --resume for the rest (dropout, accumulation,
    FLOPS warm-up, cosine schedule and shuffled data all included)."""
    def config(out, **changes):
        return contrastive_config(backbone, tmp_path / out, max_steps=6, save_steps=3, lora_dropout=0.1,
                                  per_device_batch_size=2, gradient_accumulation_steps=2, warmup_fraction=0.2,
                                  full=full, learning_rate=1e-4 if full else 1e-3, **changes)

    whole = ContrastiveTrainer(config("whole"), examples=toy_examples()).train()
    stopped = ContrastiveTrainer(config("parts", stop_after=3), examples=toy_examples()).train()
    assert stopped.final_dir is None and stopped.step == 3
    assert (tmp_path / "parts" / "checkpoint-3" / ckpt.STATE_NAME).exists()
    resumed = ContrastiveTrainer(config("parts", resume="latest"), examples=toy_examples()).train()
    assert resumed.step == 6
    if full:
        a = load_file(str(whole.final_dir / ckpt.MODEL_DIR / "model.safetensors"))
        b = load_file(str(resumed.final_dir / ckpt.MODEL_DIR / "model.safetensors"))
        start = load_file(str(Path(backbone) / "model.safetensors"))
    else:
        a, b = adapter_weights(whole.final_dir), adapter_weights(resumed.final_dir)
        start = adapter_weights(tmp_path / "parts" / "checkpoint-3")
    assert a.keys() == b.keys() and a
    for name in a:
        assert torch.allclose(a[name], b[name], rtol=0, atol=1e-7), name
    assert any(not torch.equal(a[n], start[n]) for n in a if n in start)
    assert CspladeModel.from_spec(f"csplade:{resumed.final_dir}", cache=False).encode(["zebra"], "query")[0]
    steps = [e["step"] for e in read_log(tmp_path / "parts" / "train_log.jsonl")]
    assert steps == [1, 2, 3, 4, 5, 6]
    losses = [e["loss"] for e in read_log(tmp_path / "whole" / "train_log.jsonl")]
    assert losses == pytest.approx([e["loss"] for e in read_log(tmp_path / "parts" / "train_log.jsonl")], abs=1e-6)
    # resuming with other settings is refused instead of silently diverging
    with pytest.raises(InputError, match="cannot resume exactly"):
        ContrastiveTrainer(config("parts", resume=str(tmp_path / "parts" / "checkpoint-3"), seed=8),
                           examples=toy_examples()).train()


def test_checkpoint_is_portable_and_loads(workdir, monkeypatch):
    """Relative backbone, relative adapter, no absolute path in any file; loads with csplade:CHECKPOINT."""
    monkeypatch.chdir(workdir)
    config = contrastive_config("backbone", Path("portable"), max_steps=2, save_steps=1, model_name="toy")
    result = ContrastiveTrainer(config, examples=toy_examples()).train()
    for folder in (workdir / "portable" / "checkpoint-1", result.final_dir):
        card = ModelCard.load(folder)
        assert card.backbone == "../../backbone" and card.adapter == "adapter"
        assert (card.variant, card.max_query_length, card.max_doc_length, card.quant_scale) == ("causal", 16, 24, 100.0)
        assert card.query_prefix == "query: " and card.notes["training"]["phase"] == "contrastive"
        for path in text_files(folder):
            content = path.read_text(encoding="utf-8")
            assert str(workdir) not in content and "/tmp" not in content and str(Path.home()) not in content, path
        adapter_config = json.loads((folder / "adapter" / "adapter_config.json").read_text())
        assert adapter_config["base_model_name_or_path"] == "../../backbone"
        model = CspladeModel.from_spec(f"csplade:{folder.resolve()}", cache=False)
        vectors = model.encode(["where is the zebra", "the zebra is described here"], "doc")
        assert all(vectors) and all(isinstance(w, int) and w > 0 for w in vectors[0].values())
    # moved elsewhere together with the backbone, it still loads
    moved = workdir / "moved"
    (moved / "runs").mkdir(parents=True)
    os.symlink(workdir / "backbone", moved / "backbone")
    os.rename(result.final_dir, moved / "runs" / "final")
    assert CspladeModel.from_spec(f"csplade:{moved / 'runs' / 'final'}", cache=False).encode(["zebra"], "query")[0]


def test_export_matches_adapter_checkpoint(backbone, tmp_path):
    from csplade_pyserini.train import main

    result = ContrastiveTrainer(contrastive_config(backbone, tmp_path / "run", max_steps=3),
                                examples=toy_examples()).train()
    assert main(["export", "--checkpoint", str(result.final_dir), "--output-dir", str(tmp_path / "merged")]) == 0
    merged = tmp_path / "merged"
    card = ModelCard.load(merged)
    assert card.backbone == "." and card.adapter is None and (merged / "config.json").exists()
    assert not (merged / "adapter").exists() and not (merged / "adapter_config.json").exists()
    texts = ["where is the zebra", "the volcano is described here in detail", "general notes about the weather"]
    for kind in ("query", "doc"):
        a = CspladeModel.from_spec(f"csplade:{result.final_dir},dtype=float32", cache=False).encode_weights(texts, kind)
        b = CspladeModel.from_spec(f"csplade:{merged},dtype=float32", cache=False).encode_weights(texts, kind)
        for (ids_a, w_a), (ids_b, w_b) in zip(a, b):
            assert torch.equal(ids_a, ids_b)
            assert torch.allclose(w_a, w_b, atol=1e-4)
    # the adapter changed the model: the merged vectors differ from the bare backbone's
    bare = CspladeModel.from_spec(f"csplade:{backbone},dtype=float32,doc_top_k=null", cache=False)
    ids, weights = bare.encode_weights(texts[:1], "doc")[0]
    assert not (torch.equal(ids, b[0][0]) and torch.allclose(weights, b[0][1]))


# --- recipes and CLI -------------------------------------------------------------------------------
def test_recipes_parse(tmp_path):
    from csplade_pyserini.train import CONFIG_DIR, load_recipe

    names = {p.name for p in CONFIG_DIR.glob("*.yaml")}
    assert {"csplade-1b.yaml", "csplade-8b.yaml", "lion-sp-1b-cl.yaml", "lion-sp-1b-kd.yaml", "lion-sp-1b-clkd.yaml",
            "lion-sp-8b-cl.yaml", "lion-sp-8b-kd.yaml", "lion-sp-8b-clkd.yaml", "cpu-smollm2.yaml"} <= names
    parsed = {}
    for path in sorted(CONFIG_DIR.glob("*.yaml")):
        for command, cls in (("adapt", AdaptConfig), ("contrastive", ContrastiveConfig)):
            values = load_recipe(path, command)
            config = cls(**{"output_dir": "x", **values})
            config.validate()
            parsed[path.stem, command] = config
    one_b = parsed["csplade-1b", "contrastive"]
    assert one_b.backbone == "meta-llama/Llama-3.2-1B"
    assert (one_b.learning_rate, one_b.epochs, one_b.lora_rank, one_b.warmup_fraction) == (5e-5, 3, 64, 0.05)
    assert (one_b.flops_query_weight, one_b.flops_doc_weight, one_b.negatives) == (0.003, 0.003, 15)
    eight_b = parsed["csplade-8b", "contrastive"]
    assert (eight_b.learning_rate, eight_b.epochs, eight_b.lora_rank, eight_b.flops_query_weight) == (1e-4, 1, 16, 0.03)
    adapt = parsed["csplade-1b", "adapt"]
    assert (adapt.max_steps, adapt.seq_len, adapt.relu_weight, adapt.objective) == (10000, 2048, 1.0, "clm")
    assert adapt.per_device_batch_size * adapt.gradient_accumulation_steps == 32
    lion = parsed["lion-sp-8b-clkd", "contrastive"]
    assert (lion.objective, lion.kd_loss, lion.negatives, lion.variant) == ("clkd", "kl", 16, "bidirectional")
    assert (lion.flops_query_weight, lion.flops_doc_weight, lion.lora_rank, lion.lora_alpha) == (0.05, 0.04, 16, 32)
    assert (lion.query_prefix, lion.doc_prefix, lion.max_query_length, lion.max_doc_length) == ("", "", 64, 128)
    assert parsed["lion-sp-1b-kd", "contrastive"].kd_loss == "margin-mse"
    assert parsed["lion-sp-1b-cl", "adapt"].objective == "mntp"
    cpu = parsed["cpu-smollm2", "contrastive"]
    assert cpu.backbone == "smollm2" and cpu.max_steps <= 200 and cpu.per_device_batch_size <= 4


def test_flags_override_recipe_and_bad_recipes_fail(tmp_path):
    from csplade_pyserini.train import CONFIG_DIR, resolve_options

    command, values = resolve_options(["contrastive", "--config", str(CONFIG_DIR / "csplade-1b.yaml"),
                                       "--learning-rate", "1e-3", "--output-dir", "out",
                                       "--target-modules", "q_proj,v_proj"])
    assert command == "contrastive" and values["learning_rate"] == 1e-3 and values["lora_rank"] == 64
    assert values["target_modules"] == ["q_proj", "v_proj"]
    assert resolve_options(["adapt", "--resume"])[1]["resume"] == "latest"
    assert resolve_options(["adapt", "--resume", "run/checkpoint-5"])[1]["resume"] == "run/checkpoint-5"
    assert resolve_options(["adapt", "--no-gradient-checkpointing", "--max-steps", "none"])[1] == {
        "gradient_checkpointing": False, "max_steps": None}
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rate: 1e-4\nlora_rnk: 8\n")
    with pytest.raises(InputError) as info:
        resolve_options(["contrastive", "--config", str(bad)])
    assert info.value.path == str(bad) and info.value.field == "lora_rnk"
    bad.write_text("contrastive:\n  learning_rate: fast\n")
    with pytest.raises(InputError) as info:
        resolve_options(["contrastive", "--config", str(bad)])
    assert info.value.field == "contrastive.learning_rate"
    with pytest.raises(InputError, match="output-dir"):
        from csplade_pyserini.train import main

        main(["adapt", "--data", "corpus.jsonl"])


def test_cli_help(capsys):
    from csplade_pyserini.train import COMMANDS, main

    with pytest.raises(SystemExit) as info:
        main(["--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0 and "usage: python -m csplade_pyserini.train" in out
    assert all(command in out for command in COMMANDS)
    for command in COMMANDS:
        with pytest.raises(SystemExit) as info:
            main([command, "--help"])
        assert info.value.code == 0
        assert f"usage: python -m csplade_pyserini.train {command}" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["contrastive", "--help"])
    out = capsys.readouterr().out
    for flag in ("--learning-rate", "--lora-rank", "--lora-alpha", "--lora-dropout", "--target-modules",
                 "--per-device-batch-size", "--gradient-accumulation-steps", "--max-steps", "--epochs",
                 "--warmup-fraction", "--flops-query-weight", "--flops-doc-weight", "--negatives", "--variant",
                 "--backbone", "--save-steps", "--eval-steps", "--resume", "--seed", "--dtype",
                 "--gradient-checkpointing", "--threads", "--data", "--objective", "--kd-loss", "--full",
                 "--init-adapter", "--output-dir"):
        assert flag in out, flag


def test_calibrated_logit_bias_is_saved_loaded_resumed_and_exported(backbone, tmp_path):
    from csplade_pyserini.train import main

    config = contrastive_config(backbone, tmp_path / "run", max_steps=4, logit_bias_sigmas=1.0, save_steps=2)
    trainer = ContrastiveTrainer(config, examples=toy_examples())
    result = trainer.train()
    card = ModelCard.load(result.final_dir)
    assert card.logit_bias == "logit_bias.safetensors" and (result.final_dir / card.logit_bias).is_file()
    texts = ["where is the zebra", "the volcano is described here in detail"]
    expected = trainer.sparse_encoder().encode_sequences(trainer.encoder.tokenize(texts, "doc"), top_k=card.doc_top_k)
    loaded = CspladeModel.from_spec(f"csplade:{result.final_dir},dtype=float32", cache=False)
    assert loaded.encoder.logit_bias is not None
    for (ids_a, w_a), (ids_b, w_b) in zip(expected, loaded.encode_weights(texts, "doc")):
        assert torch.equal(ids_a, ids_b) and torch.allclose(w_a, w_b, atol=1e-5)
    # a resumed run restores the checkpoint's bias instead of calibrating on the changed model
    resumed = ContrastiveTrainer(contrastive_config(backbone, tmp_path / "run", max_steps=4, logit_bias_sigmas=1.0,
                                                    save_steps=2, resume="latest"), examples=toy_examples())
    resumed.setup()
    step2 = ModelCard.load(tmp_path / "run" / "checkpoint-2")
    assert resumed.start_step == 2 and step2.logit_bias
    from csplade_pyserini.model.logit_bias import load_logit_bias

    assert torch.equal(resumed.logit_bias, load_logit_bias(step2.logit_bias, tmp_path / "run" / "checkpoint-2"))
    # a second phase from this checkpoint keeps its bias; export carries it along
    follow = ContrastiveTrainer(contrastive_config(backbone, tmp_path / "next", max_steps=1,
                                                   init_adapter=str(result.final_dir)), examples=toy_examples())
    follow.setup()
    assert torch.equal(follow.logit_bias, trainer.logit_bias)
    assert main(["export", "--checkpoint", str(result.final_dir), "--output-dir", str(tmp_path / "merged")]) == 0
    assert ModelCard.load(tmp_path / "merged").logit_bias == "logit_bias.safetensors"


def test_validation_slice_is_held_out_and_the_best_model_is_kept(backbone, tmp_path):
    """--eval-holdout trains without the evaluation queries; --eval-at-start scores the starting point;
    --save-best keeps the model of the best evaluation (strictly better than every earlier one)."""
    examples = toy_examples()
    valid = examples[:2]
    docs = {p.docid: p.text for e in examples for p in e.positives + e.negatives}
    eval_set = EvalSet({e.query_id: e.query for e in valid}, docs, {e.query_id: {e.positives[0].docid: 1}
                                                                    for e in valid})
    config = contrastive_config(backbone, tmp_path, per_device_batch_size=2, max_steps=6, eval_steps=2,
                                eval_at_start=True, save_best=True, eval_holdout=True)
    trainer = ContrastiveTrainer(config, examples=examples, eval_set=eval_set)
    result = trainer.train()
    assert trainer.n_examples == 6 and not {e.query_id for e in trainer.examples} & {"q0", "q1"}
    evals = read_log(tmp_path / "train_log.jsonl", event="eval")
    assert [e["step"] for e in evals] == [0, 2, 4, 6]
    expected, best = [], None
    for e in evals:
        if best is None or e["ndcg@10"] > best:
            best = e["ndcg@10"]
            expected.append(e["step"])
    assert [e["step"] for e in read_log(tmp_path / "train_log.jsonl", event="best")] == expected
    card = ModelCard.load(tmp_path / ckpt.BEST_DIR)
    assert card.notes["training"]["step"] == expected[-1]
    assert result.final_dir == tmp_path / ckpt.FINAL_DIR
    # a fresh run in the same folder does not inherit the earlier run's evaluations or best model
    config = contrastive_config(backbone, tmp_path, per_device_batch_size=2, max_steps=2, save_best=True)
    ContrastiveTrainer(config, examples=examples).train()
    assert not read_log(tmp_path / "train_log.jsonl", event="eval") and not (tmp_path / ckpt.BEST_DIR).exists()


# --- bias phase ------------------------------------------------------------------------------------
def bias_config(backbone: str, output: Path, **changes):
    from csplade_pyserini.training.bias import BiasConfig

    values = dict(output_dir=str(output), backbone=backbone, per_device_batch_size=4, negatives=2, max_steps=16,
                  learning_rate=0.05, max_query_length=16, max_doc_length=24, logit_bias_sigmas=0.0,
                  progress=False, seed=7, dtype="float32")
    values.update(changes)
    return BiasConfig(**values)


def test_bias_phase_trains_only_the_bias_from_cached_logits(backbone, tmp_path):
    """The frozen model's max-pooled logits are cached once; only the bias moves (and stays <= 0); the
    final folder holds just the card and the bias, and loads with csplade:FOLDER to the same weights."""
    from csplade_pyserini.training.bias import BiasTrainer

    eval_set = toy_eval_set()
    trainer = BiasTrainer(bias_config(backbone, tmp_path, eval_steps=8, eval_at_start=True),
                          examples=toy_examples(), eval_set=eval_set)
    trainer.setup()
    assert trainer.params == [trainer.bias]
    frozen = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    start = trainer.bias.detach().clone()
    texts = ["the zebra is described here in detail", "the volcano is described here in detail"]
    batch = trainer.encoder.collate(trainer.encoder.tokenize(texts, "doc"))
    with torch.no_grad():
        direct = trainer.encoder(batch.input_ids, batch.attention_mask, batch.pool_mask)
        cached = trainer.encoder.activate(trainer.cache["doc"][texts].float(), trainer.bias)
    assert torch.allclose(cached, direct, atol=2e-2)  # the cache is bf16
    assert len(trainer.cache["doc"].rows) == len({p.text for e in toy_examples() for p in e.positives + e.negatives})
    result = trainer.train()
    losses = [e["loss"] for e in read_log(tmp_path / "train_log.jsonl")]
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4
    assert all(torch.equal(p, frozen[n]) for n, p in trainer.model.named_parameters())
    bias = trainer.bias.detach()
    assert not torch.equal(bias, start) and bool((bias <= 0).all())
    assert [e["step"] for e in read_log(tmp_path / "train_log.jsonl", event="eval")] == [0, 8, 16]
    assert {p.name for p in result.final_dir.iterdir()} == {CARD_NAME, "logit_bias.safetensors"}
    card = ModelCard.load(result.final_dir)
    assert card.adapter is None and card.backbone == backbone and card.notes["training"]["phase"] == "bias"
    loaded = CspladeModel.from_spec(f"csplade:{result.final_dir},dtype=float32", cache=False)
    with torch.no_grad():
        expected = trainer.encoder(batch.input_ids, batch.attention_mask, batch.pool_mask)
    for row, (ids, weights) in zip(expected, loaded.encode_weights(texts, "doc")):
        dense = torch.zeros_like(row).index_put_((ids,), weights.float())
        assert torch.allclose(dense, row, atol=1e-4) and bool((row > 1e-3).any())
    with pytest.raises(InputError, match="frozen"):
        bias_config(backbone, tmp_path, full=True).validate()


@pytest.mark.parametrize("variant", ["echo", "bidirectional"])
def test_bias_cache_is_the_encoder_of_each_variant(backbone, tmp_path, variant):
    """The default model is an echo bias run: its cache must pool like the echo encoder (second copy
    only), and the bidirectional one with its own attention, not the causal forward."""
    from csplade_pyserini.training.bias import BiasTrainer

    trainer = BiasTrainer(bias_config(backbone, tmp_path, variant=variant, max_steps=2), examples=toy_examples())
    trainer.setup()
    texts = ["the zebra is described here in detail", "the volcano is described here in detail"]
    batch = trainer.encoder.collate(trainer.encoder.tokenize(texts, "doc"))
    causal = BiasTrainer(bias_config(backbone, tmp_path / "causal", max_steps=2), examples=toy_examples())
    causal.setup()
    with torch.no_grad():
        direct = trainer.encoder(batch.input_ids, batch.attention_mask, batch.pool_mask)
        cached = trainer.encoder.activate(trainer.cache["doc"][texts].float(), trainer.bias)
        other = causal.encoder.activate(causal.cache["doc"][texts].float(), causal.bias)
    assert torch.allclose(cached, direct, atol=2e-2)  # the cache is bf16
    assert not torch.allclose(cached, other, atol=2e-2)


def test_bias_phase_resumes_exactly_and_keeps_an_init_adapter(backbone, toy_beir, workdir, tmp_path):
    """From the CLI, on BEIR data with a run: 6 steps in one go == 3, a checkpoint, --resume; started
    from a LoRA checkpoint, the saved model carries that adapter unchanged and the new bias."""
    from csplade_pyserini.model.logit_bias import load_logit_bias
    from csplade_pyserini.train import main

    def run(out: str, *extra: str) -> int:
        return main(["bias", "--data", str(toy_beir), "--run", str(workdir / "toy.run"), "--backbone", backbone,
                     "--output-dir", str(tmp_path / out), "--max-steps", "6", "--save-steps", "3",
                     "--per-device-batch-size", "4", "--negatives", "2", "--max-negatives", "4",
                     "--max-query-length", "16", "--max-doc-length", "24", "--logit-bias-sigmas", "0",
                     "--dtype", "float32", "--no-progress", *extra])

    assert run("whole") == 0
    assert run("parts", "--stop-after", "3") == 0
    assert not (tmp_path / "parts" / ckpt.FINAL_DIR).exists()
    assert run("parts", "--resume") == 0
    a = load_logit_bias("logit_bias.safetensors", tmp_path / "whole" / ckpt.FINAL_DIR)
    b = load_logit_bias("logit_bias.safetensors", tmp_path / "parts" / ckpt.FINAL_DIR)
    assert torch.equal(a, b)
    lora = ContrastiveTrainer(contrastive_config(backbone, tmp_path / "lora", max_steps=2),
                              examples=toy_examples()).train()
    assert run("on-lora", "--init-adapter", str(lora.final_dir)) == 0
    final = tmp_path / "on-lora" / ckpt.FINAL_DIR
    assert ModelCard.load(final).adapter == "adapter"
    before, after = adapter_weights(lora.final_dir), adapter_weights(final)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert CspladeModel.from_spec(f"csplade:{final}", cache=False).encode(["where is the zebra"], "query")
