"""Training end to end on a tiny random Llama with the SmolLM2 tokenizer: the Trainer-based phases,
checkpoints, resume, export, recipes and the train CLI.

Toy data: 8 queries whose relevant passage shares a rare word with the query, as a BEIR folder with a
'BM25' run listing every document. One torch thread; a handful of steps per run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import REPO, run_python, shared
from safetensors.torch import load_file

from csplade_pyserini.errors import InputError
from csplade_pyserini.model.card import CARD_NAME, ModelCard
from csplade_pyserini.model.encoder import CspladeModel
from csplade_pyserini.train.config import parse_arguments
from csplade_pyserini.train.trainer import read_log

RARE = ["zebra", "volcano", "saxophone", "glacier", "cactus", "lighthouse", "pyramid", "octopus"]
FILLER = ["the report describes results", "a study of many things", "general notes about the weather",
          "information on common topics", "the meeting covered plans", "some text about nothing special"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tokenizer_dir) -> Path:
    """``backbone/``: a tiny random Llama (2 layers, hidden 32) + the SmolLM2 tokenizer; ``toy/``: the toy
    set as a BEIR folder; ``toy.run``: every document for every query; ``valid/``: the same queries as a
    separate validation folder (so that validating on them does not hold them out of training)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("training")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(root / "backbone")
    tokenizer.save_pretrained(root / "backbone")
    for name in ("toy", "valid"):
        folder = root / name
        (folder / "qrels").mkdir(parents=True)
        docs = []
        with open(folder / "corpus.jsonl", "w") as corpus, open(folder / "queries.jsonl", "w") as queries, \
                open(folder / "qrels" / "train.tsv", "w") as qrels:
            qrels.write("query-id\tcorpus-id\tscore\n")
            for i, word in enumerate(RARE):
                docs.append((f"d{i}", f"the {word} is described here in detail"))
                docs += [(f"n{i}-{j}", f"{FILLER[(i + j) % len(FILLER)]} where {j}") for j in range(3)]
                queries.write(json.dumps({"_id": f"q{i}", "text": f"where is the {word}"}) + "\n")
                qrels.write(f"q{i}\td{i}\t1\n")
            for docid, text in docs:
                corpus.write(json.dumps({"_id": docid, "title": f"title {docid}", "text": text}) + "\n")
    with open(root / "toy.run", "w") as run:
        for i in range(len(RARE)):
            for rank, (docid, _) in enumerate(docs, start=1):
                run.write(f"q{i} Q0 {docid} {rank} {100 - rank} toy\n")
    return root


def options(workdir: Path, output: Path, *extra: str) -> list[str]:
    return ["--backbone", str(workdir / "backbone"), "--data", str(workdir / "toy"), "--run", str(workdir / "toy.run"),
            "--output-dir", str(output), "--max-query-length", "16", "--max-doc-length", "24", "--negatives", "2",
            "--per-device-train-batch-size", "4", "--learning-rate", "1e-3", "--lora-rank", "4", "--lora-alpha", "8",
            "--lora-dropout", "0", "--dtype", "float32", "--report-to", "none", "--disable-tqdm", "true",
            "--validation-data", str(workdir / "valid"), "--validation-queries", "8", "--seed", "7",
            "--save-strategy", "no", "--logging-steps", "1", *extra]


def train(*argv: str):
    from csplade_pyserini.train.contrastive import run_contrastive

    return run_contrastive(*parse_arguments("contrastive", list(argv)))


def validation(trainer) -> list[tuple[int, float]]:
    return [(h["step"], h["eval_ndcg@10"]) for h in trainer.state.log_history if "eval_ndcg@10" in h]


# --- contrastive -----------------------------------------------------------------------------------
def test_training_raises_validation_without_shrinking_the_vectors(workdir, tmp_path):
    """Pure CSPLADE (LM head + trainable bias, LoRA on every layer): a few steps raise the validation
    nDCG@10 while the vectors keep their terms (the old raw-score InfoNCE shrank them)."""
    trainer = train(*options(workdir, tmp_path / "run", "--max-steps", "24", "--eval-strategy", "steps",
                             "--eval-steps", "24", "--bias-target-df", "0.3", "--bias-learning-rate", "0.05",
                             "--query-top-k", "16", "--doc-top-k", "32", "--train-top-k-slack", "2"))
    curve = validation(trainer)
    assert curve[0][0] == 0 and curve[-1][0] == 24
    assert curve[-1][1] > curve[0][1] + 0.02, curve
    evals = [h for h in trainer.state.log_history if "eval_terms_q" in h]
    assert evals[-1]["eval_terms_q"] >= 0.8 * evals[0]["eval_terms_q"]
    assert (tmp_path / "run" / "best" / CARD_NAME).exists() and (tmp_path / "run" / "final" / CARD_NAME).exists()
    best = ModelCard.load(tmp_path / "run" / "best")
    assert best.notes["validation"]["ndcg@10"] == round(max(v for _, v in curve), 4)
    log = read_log(tmp_path / "run")
    assert {"loss", "cl", "flops_q", "terms_q", "score_scale"} <= set(log[-1])


def test_frozen_backbone_trains_the_heads_from_the_cache(workdir, tmp_path):
    """--frozen-layers all: cached once, only the bias, lexical head, channel weight and score scale train;
    the saved model loads as an encoder and equals what was validated."""
    trainer = train(*options(workdir, tmp_path / "run", "--max-steps", "6", "--frozen-layers", "all",
                             "--lexical-layer", "1", "--bias-target-df", "0.1", "--head-learning-rate", "1e-2"))
    model = trainer.accelerator.unwrap_model(trainer.model)
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained == {"encoder.logit_bias", "encoder.expansion_weight", "encoder.lexical.hidden.weight",
                       "encoder.lexical.hidden.bias", "encoder.lexical.out.weight", "encoder.lexical.out.bias",
                       "loss_fn.main.scale.log_scale"}
    assert (tmp_path / "run" / "cache" / "causal-docs" / "pooled.npy").exists()
    final = tmp_path / "run" / "final"
    card = ModelCard.load(final)
    assert card.lexical_layer == 1 and card.lexical_head and card.logit_bias and card.adapter is None
    loaded = CspladeModel.from_spec(f"csplade:{final}", cache=False)
    assert torch.allclose(loaded.encoder.logit_bias, model.encoder.logit_bias.detach())
    assert abs(card.expansion_weight - float(model.encoder.expansion_weight)) < 1e-5
    assert loaded.encode(["where is the zebra"], "query")[0]


def test_lora_continues_from_any_checkpoint_bias_included(workdir, tmp_path):
    first = tmp_path / "first"
    train(*options(workdir, first, "--max-steps", "2", "--bias-target-df", "0.2"))
    bias = load_file(str(first / "final" / "logit_bias.safetensors"))["bias"]
    adapter = load_file(str(first / "final" / "adapter" / "adapter_model.safetensors"))
    trainer = train(*options(workdir, tmp_path / "second", "--max-steps", "2", "--init-checkpoint",
                             str(first / "final"), "--learning-rate", "1e-9", "--bias-learning-rate", "1e-9"))
    model = trainer.accelerator.unwrap_model(trainer.model)
    assert torch.allclose(model.encoder.logit_bias.detach(), bias, atol=1e-5)  # kept, and trainable
    assert model.encoder.logit_bias.requires_grad
    continued = load_file(str(tmp_path / "second" / "final" / "adapter" / "adapter_model.safetensors"))
    assert set(continued) == set(adapter)
    assert all(torch.allclose(continued[k], adapter[k], atol=1e-5) for k in adapter)


def test_resume_gives_the_same_weights(workdir, tmp_path):
    common = ("--max-steps", "4", "--save-strategy", "steps", "--save-steps", "2", "--bias-target-df", "0.2")
    whole = train(*options(workdir, tmp_path / "whole", *common))
    stopped = tmp_path / "stopped"
    train(*options(workdir, stopped, *common))
    for folder in ("checkpoint-4", "final", "best"):  # as if killed right after step 2's checkpoint
        import shutil

        shutil.rmtree(stopped / folder, ignore_errors=True)
    resumed = train(*options(workdir, stopped, *common, "--resume-from-checkpoint", str(stopped / "checkpoint-2")))
    a = whole.accelerator.unwrap_model(whole.model).trainable_state()
    b = resumed.accelerator.unwrap_model(resumed.model).trainable_state()
    assert set(a) == set(b)
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6), name
    assert CspladeModel.from_spec(f"csplade:{stopped / 'checkpoint-2'}", cache=False).encode(["zebra"], "query")


def test_a_second_run_in_the_same_output_dir_is_refused_and_overwrite_keeps_other_files(workdir, tmp_path):
    out = tmp_path / "run"
    train(*options(workdir, out, "--max-steps", "1", "--bias-target-df", "0.2"))
    (out / "final" / "notes.txt").write_text("mine")  # a user's file inside what training wrote
    (out / "README.txt").write_text("mine")  # and one beside it
    before = (out / "final" / "logit_bias.safetensors").read_bytes()
    with pytest.raises(InputError, match="overwrite-output-dir") as error:
        train(*options(workdir, out, "--max-steps", "1", "--bias-target-df", "0.2"))
    assert "final" in str(error.value) or "best" in str(error.value)
    assert (out / "final" / "notes.txt").exists() and (out / "final" / "logit_bias.safetensors").read_bytes() == before
    train(*options(workdir, out, "--max-steps", "1", "--bias-target-df", "0.2", "--seed", "8",
                   "--overwrite-output-dir"))
    assert (out / "README.txt").read_text() == "mine"  # not training's: kept
    assert not (out / "final" / "notes.txt").exists() and (out / "final" / CARD_NAME).exists()


def test_score_teacher_with_splade_tiny_and_a_csplade_model(workdir, tmp_path):
    from csplade_pyserini.train.data import read_teacher_scores
    from csplade_pyserini.train.teachers import score_teacher

    splade = shared() / "models" / "splade-tiny"
    out = tmp_path / "splade.txt"
    score_teacher(str(splade), workdir / "toy.run", out, data=workdir / "toy", top_k=5)
    scores = read_teacher_scores(out)
    assert set(scores) == {f"q{i}" for i in range(8)} and all(len(row) >= 5 for row in scores.values())
    # splade-tiny, a trained model, ranks the document sharing the rare word first
    assert sum(max(row, key=row.get) == f"d{q[1:]}" for q, row in scores.items()) >= 6
    score_teacher(f"csplade:{workdir / 'backbone'}", workdir / "toy.run", tmp_path / "c.txt", data=workdir / "toy",
                  top_k=3)
    assert len(read_teacher_scores(tmp_path / "c.txt")["q0"]) == 3


def test_distillation_needs_teacher_scores(workdir, tmp_path):
    with pytest.raises(InputError, match="teacher"):
        train(*options(workdir, tmp_path / "run", "--max-steps", "1", "--objective", "clkd"))


def test_cl_kd_with_a_teacher_and_pseudo_queries(workdir, tmp_path):
    teacher = tmp_path / "teacher.txt"
    teacher.write_text("".join(f"q{i} {d} {10.0 if d == f'd{i}' else 1.0}\n" for i in range(8)
                               for d in [f"d{i}", *[f"n{j}-{k}" for j in range(8) for k in range(3)],
                                         *[f"d{j}" for j in range(8) if j != i]]))
    trainer = train(*options(workdir, tmp_path / "run", "--max-steps", "4", "--objective", "clkd",
                             "--teacher-scores", str(teacher), "--teacher-temperature", "2", "--teacher-margin", "1",
                             "--pseudo-queries", "true", "--pseudo-query-share", "0.5"))
    log = read_log(tmp_path / "run")
    assert any("kd" in row for row in log) and trainer.state.global_step == 4


# --- phase 1 ---------------------------------------------------------------------------------------
def test_adaptation_lowers_the_loss_and_starts_phase_two(workdir, tmp_path):
    from csplade_pyserini.train.adaptation import run_adapt

    argv = ["--backbone", str(workdir / "backbone"), "--data", str(workdir / "toy"), "--output-dir",
            str(tmp_path / "adapt"), "--seq-len", "16", "--max-steps", "12", "--per-device-train-batch-size", "4",
            "--learning-rate", "3e-3", "--dtype", "float32", "--report-to", "none", "--save-strategy", "no",
            "--logging-steps", "1", "--disable-tqdm", "true", "--target-modules", "q_proj", "v_proj", "lm_head"]
    trainer = run_adapt(*parse_arguments("adapt", argv))
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert sum(losses[-3:]) < sum(losses[:3])
    card = ModelCard.load(tmp_path / "adapt" / "final")
    assert card.adapter == "adapter" and card.notes["training"]["phase"] == "adapt"
    nxt = train(*options(workdir, tmp_path / "con", "--max-steps", "1", "--init-checkpoint",
                         str(tmp_path / "adapt" / "final"), "--target-modules", "q_proj", "v_proj"))
    assert nxt.state.global_step == 1


def test_masked_next_token_adaptation_needs_the_bidirectional_variant(workdir, tmp_path):
    from csplade_pyserini.train.adaptation import mask_block, run_adapt

    argv = ["--backbone", str(workdir / "backbone"), "--data", str(workdir / "toy"), "--output-dir", str(tmp_path),
            "--adapt-objective", "mntp", "--report-to", "none"]
    with pytest.raises(InputError, match="bidirectional"):
        run_adapt(*parse_arguments("adapt", argv))
    ids = torch.arange(2, 34).view(2, 16)
    masked, labels = mask_block(ids, 0.3, 1, seed=3)
    again, _ = mask_block(ids, 0.3, 1, seed=3)
    assert torch.equal(masked, again)  # the same block gets the same mask (resume)
    chosen = masked == 1
    assert torch.equal(labels[:, :-1] != -100, chosen[:, 1:])  # position i-1 predicts masked token i


# --- recipes and the CLI ---------------------------------------------------------------------------
CONFIGS = REPO / "csplade_pyserini" / "configs"


@pytest.mark.parametrize("recipe", sorted(p.name for p in CONFIGS.glob("*.yaml") if not p.name.startswith("accelerate-")))
def test_every_shipped_recipe_parses(recipe):
    from csplade_pyserini.train.config import parse_arguments

    config = CONFIGS / recipe
    cpu = ["--bf16", "false"] if not torch.cuda.is_available() else []  # GPU recipes ask for bf16 autocast
    for command in ("adapt", "contrastive"):
        model_args, data_args, training_args = parse_arguments(command, ["--config", str(config), "--output-dir", "x",
                                                                         *cpu])
        assert training_args.output_dir == "x"


def test_flags_override_the_recipe_and_bad_recipes_name_the_key(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("learning_rate: 0.5\nnegatives: 3\ncontrastive:\n  negatives: 5\n  max_steps: 9\n")
    model_args, data_args, args = parse_arguments("contrastive", ["--config", str(recipe), "--max-steps", "11"])
    assert (args.learning_rate, data_args.negatives, args.max_steps) == (0.5, 5, 11)
    recipe.write_text("contrastive:\n  negative: 5\n")
    with pytest.raises(InputError, match=r"r\.yaml.*contrastive\.negative"):
        parse_arguments("contrastive", ["--config", str(recipe)])
    with pytest.raises(InputError, match="bias_target_df"):
        parse_arguments("contrastive", ["--bias-target-df", "2"])


def test_cli_help_lists_the_commands():
    result = run_python("-m", "csplade_pyserini.train", "--help")
    for command in ("words", "pure", "join", "recipe", "contrastive", "adapt"):
        assert command in result.stdout
    moved = run_python("-m", "csplade_pyserini.train", "gpu-bundle", "--data", "x", check=False)
    assert moved.returncode != 0 and "scripts/air_gapped_gpu.py bundle" in moved.stderr
    assert "--frozen-layers" in run_python("-m", "csplade_pyserini.train", "contrastive", "--help").stdout


def test_validation_measures_equal_ir_measures():
    from ir_measures import R, nDCG

    from csplade_pyserini.evaluate.measures import evaluate_run
    from csplade_pyserini.train import validation

    run = {"a": {"d1": 3.0, "d2": 3.0, "d3": 1.0, "d4": 0.5}, "b": {"d5": 1.0, "d1": 0.9}}
    qrels = {"a": {"d2": 1, "d4": 2, "d9": 1}, "b": {"d1": 1}}
    expected = evaluate_run(run, qrels, [nDCG @ 10, R @ 100])
    import builtins

    real_import = builtins.__import__

    def no_ir_measures(name, *args, **kwargs):
        if name.startswith("ir_measures"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    builtins.__import__ = no_ir_measures
    try:
        ndcg, recall = validation.ndcg_and_recall(run, qrels)
    finally:
        builtins.__import__ = real_import
    assert abs(ndcg - expected["nDCG@10"]) < 1e-9 and abs(recall - expected["R@100"]) < 1e-9


def test_air_gapped_gpu_recipe_runs_end_to_end_on_cpu_at_toy_size(workdir, tmp_path):
    """``scripts/air_gapped_gpu.py``: the bundle (real SmolLM2 GGUF in parts of at most 60 MiB, checked by SHA-256, de-quantised without the
    gguf package), then the GPU command with toy sizes on the CPU: a checkpoint and validation.json."""
    import importlib.util

    from conftest import REPO

    spec = importlib.util.spec_from_file_location("air_gapped_gpu", REPO / "scripts" / "air_gapped_gpu.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    recipe_main, write_bundle = script.recipe_main, script.write_bundle

    manifest = write_bundle(workdir / "toy", workdir / "toy.run", None, tmp_path / "bundle")
    assert len(manifest["transfers"]) == 2
    assert all(t["bytes"] <= 60 << 20 for t in manifest["transfers"])
    bundle = tmp_path / "there" / "gpu-bundle"  # what the two transfers leave on the GPU machine
    for transfer in manifest["transfers"]:
        import shutil

        shutil.copytree(tmp_path / "bundle" / transfer["folder"] / "gpu-bundle", bundle, dirs_exist_ok=True)
    recipe_main(["--bundle", str(bundle), "--output-dir", str(tmp_path / "out"), "--",
                 "--bf16", "false", "--dtype", "float32", "--gradient-checkpointing", "false", "--max-steps", "2",
                 "--per-device-train-batch-size", "2", "--negatives", "1", "--max-doc-length", "24",
                 "--max-query-length", "16", "--validation-queries", "4", "--eval-steps", "2", "--save-steps", "2",
                 "--bias-sample", "16", "--lora-rank", "2", "--lora-alpha", "4", "--disable-tqdm", "true",
                 "--negative-depth", "8"])
    scores = json.loads((tmp_path / "out" / "validation.json").read_text())
    assert [s["step"] for s in scores] == [0, 2] and all(0 <= s["ndcg@10"] <= 1 for s in scores)
    card = ModelCard.load(tmp_path / "out" / "run" / "final")
    assert card.adapter == "adapter" and card.logit_bias


# --- the dense counterpart (Lion-DS) ---------------------------------------------------------------
def test_dense_training_raises_validation_and_exports_a_dense_card(workdir, tmp_path):
    """--representation dense: the same command, data and trainer; InfoNCE at temperature 0.01 (fixed, not
    learned) raises the validation nDCG@10, and the exported model loads as ``csplade-dense`` and gives
    the vectors the trainer validated."""
    trainer = train(*options(workdir, tmp_path / "run", "--representation", "dense", "--max-steps", "24",
                             "--learning-rate", "3e-3", "--eval-strategy", "steps", "--eval-steps", "24"))
    curve = validation(trainer)
    assert curve[-1][1] > curve[0][1] + 0.02, curve
    assert "flops_q" not in read_log(tmp_path / "run")[-1]
    model = trainer.accelerator.unwrap_model(trainer.model)
    assert float(model.loss_fn.main.scale.value) == pytest.approx(100.0)
    assert not any(p.requires_grad for n, p in model.named_parameters() if "scale" in n)
    card = ModelCard.load(tmp_path / "run" / "final")
    assert card.representation == "dense" and card.dense_pooling == "mean" and card.adapter
    loaded = CspladeModel.from_spec(f"csplade-dense:{tmp_path / 'run' / 'final'},dtype=float32", cache=False)
    texts = ["where is the zebra", "the glacier is described here in detail"]
    with torch.no_grad():
        batch = model.encoder.collate(model.encoder.tokenize(texts, "query"), kind="query")
        model.eval()
        expected = model.encoder(batch.input_ids, batch.attention_mask, batch.pool_mask)
    got = torch.from_numpy(loaded.encode_dense(texts, "query"))
    assert got.shape == (2, 32) and torch.allclose(got, expected, atol=1e-4)
    with pytest.raises(InputError, match="csplade-dense"):
        loaded.encode(texts, "query")


def test_dense_lora_above_a_frozen_bottom_ignores_cached_pooled_logits(workdir, tmp_path):
    """A cache built by a frozen-backbone sparse run (states + pooled logits) serves a dense LoRA run above
    layer 1: it reads the states, never the pooled logits, and its LoRA weights change."""
    cache = tmp_path / "cache"
    train(*options(workdir, tmp_path / "sparse", "--max-steps", "1", "--frozen-layers", "all", "--lexical-layer", "1",
                   "--cache-dir", str(cache), "--validation-queries", "0"))
    assert (cache / "causal-docs" / "pooled.npy").exists()
    trainer = train(*options(workdir, tmp_path / "dense", "--representation", "dense", "--max-steps", "4",
                             "--frozen-layers", "1", "--cache-dir", str(cache), "--validation-queries", "0"))
    model = trainer.accelerator.unwrap_model(trainer.model)
    assert model.use_pooled is False and model.start_layer == 1
    lora = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert lora and all(".layers.1." in n and "lora_" in n for n in lora)
    assert any(p.abs().sum() > 0 for n, p in lora.items() if "lora_B" in n)


def test_dense_options_refuse_sparse_only_parts(workdir, tmp_path):
    with pytest.raises(InputError, match="FLOPS"):
        train(*options(workdir, tmp_path / "a", "--representation", "dense", "--max-steps", "1",
                       "--flops-doc-weight", "0.01", "--validation-queries", "0"))
    with pytest.raises(InputError) as info:
        parse_arguments("contrastive", options(workdir, tmp_path / "b", "--representation", "dense",
                                               "--lexical-layer", "1"))
    assert info.value.field == "lexical_layer"


def test_a_recipe_repeating_a_key_is_refused_naming_file_and_line(tmp_path):
    from csplade_pyserini.errors import InputError
    from csplade_pyserini.train.config import parse_arguments

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("learning_rate: 1.0e-4\ncontrastive:\n  max_steps: 10\n  max_steps: 20\n")
    with pytest.raises(InputError, match="duplicate key 'max_steps' \\(first on line 3\\)") as info:
        parse_arguments("contrastive", ["--config", str(recipe), "--output-dir", str(tmp_path / "out")])
    assert info.value.path == str(recipe) and info.value.line == 4


@pytest.mark.parametrize("line, message", [
    ("max_steps: [1, 2]", "expected one value"),
    ("max_steps: many", "not a valid value"),
    ("variant: sideways", "not one of"),
])
def test_a_recipe_value_of_the_wrong_type_is_one_error_naming_the_key(tmp_path, line, message):
    from csplade_pyserini.errors import InputError
    from csplade_pyserini.train.config import parse_arguments

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(line + "\n")
    with pytest.raises(InputError, match=message) as info:
        parse_arguments("contrastive", ["--config", str(recipe), "--output-dir", str(tmp_path / "out")])
    assert info.value.path == str(recipe) and info.value.field == line.split(":")[0]
