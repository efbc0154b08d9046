"""``train join`` through real data: a tiny word channel and a tiny LM-head channel weighed on SciFact and
NFCorpus slices, and the joined model through encode -> Anserini impact index -> search, whose scores are
those the join's exact validation computed."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import WORDS, beir_slice, make_tiny_llama, run_python, shared

from csplade_pyserini.errors import InputError


def test_join_weighs_the_lm_head_channel_on_validation_and_the_index_scores_as_validation_did(
        tmp_path, tokenizer_dir, one_thread):
    from csplade_pyserini.model.card import ModelCard
    from csplade_pyserini.model.context import ContextHead
    from csplade_pyserini.model.encoder import CspladeModel
    from csplade_pyserini.model.logit_bias import save_logit_bias
    from csplade_pyserini.model.words import TermFrequencyHead
    from csplade_pyserini.train.__main__ import main
    from csplade_pyserini.train.domains import load_domain
    from csplade_pyserini.train.join import scores_by_weight

    words = make_tiny_llama(tmp_path / "words", tokenizer_dir, max_doc_length=48, doc_top_k=None, query_top_k=None,
                            tf_head="tf_head.safetensors", tf_layer=1, notes={"trained_on": ["scifact"]}, **WORDS)
    torch.manual_seed(1)
    head = TermFrequencyHead(32, 4)
    torch.nn.init.normal_(head.out.weight, std=0.3)
    head.save(words)
    lm_head = tmp_path / "lm-head"
    lm_head.mkdir()
    context = ContextHead(32)
    torch.nn.init.normal_(context.map.weight, std=0.2)
    vocab = json.loads((words / "config.json").read_text())["vocab_size"]
    ModelCard(backbone=str(words), max_doc_length=48, doc_top_k=16, query_top_k=8, dtype="float32", context_layer=1,
              context_head=context.save(lm_head), logit_bias=save_logit_bias(torch.full((vocab,), 0.5), lm_head),
              notes={"trained_on": ["nfcorpus"]}).save(lm_head)
    scifact, nfcorpus = tmp_path / "scifact", tmp_path / "nfcorpus"
    beir_slice(shared() / "data" / "beir" / "scifact", scifact, split="train", queries=30, extra_docs=30)
    beir_slice(shared() / "data" / "beir" / "nfcorpus", nfcorpus, split="train", queries=20, extra_docs=10)
    out = tmp_path / "joined"
    arguments = ["join", "--words", str(words), "--lm-head", str(lm_head), "--data", str(scifact), "--data",
                 str(nfcorpus), "--held-out", "8", "--output-dir", str(out), "--threads", "1"]
    assert main([*arguments, "--weights", "0", "0.5", "4"]) == 0
    curve = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [e["expansion_weight"] for e in curve] == [0, 0.5, 4]
    best = max(curve, key=lambda e: e["validation"]["mean"])
    card = json.loads((out / "model" / "best" / "csplade_card.json").read_text())
    assert card["expansion"] == (best["expansion_weight"] > 0)

    with pytest.raises(InputError, match="overwrite-output-dir"):
        main([*arguments, "--weights", "0.5"])
    assert main([*arguments, "--weights", "0.5", "--overwrite-output-dir"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["model", "train_log.jsonl"]  # no staging left behind
    folder = out / "model" / "best"
    card = ModelCard.load(folder)
    assert card.is_words and card.expansion and card.expansion_weight == 0.5 and card.quant_scale == 1000
    assert card.notes["trained_on"] == ["nfcorpus", "scifact"] and card.backbone == str(words.resolve())
    assert sorted(p.name for p in folder.iterdir()) == ["context_head.safetensors", "csplade_card.json",
                                                        "logit_bias.safetensors", "tf_head.safetensors"]
    # the joined model through the real commands scores each validation query's documents as the join did
    domain = load_domain(scifact, 8, 42)
    topics = tmp_path / "validation.tsv"
    topics.write_text("".join(f"{q}\t{t}\n" for q, t in domain.validation.queries.items()), encoding="utf-8")
    spec = f"csplade:{folder}"
    run_python("-m", "csplade_pyserini.encode", "--corpus", str(scifact / "corpus.jsonl"), "--embeddings",
               str(tmp_path / "vectors"), "--encoder", spec, "--threads", "1")
    vectors = [json.loads(line)["vector"] for path in (tmp_path / "vectors").glob("*.jsonl") for line in open(path)]
    assert any(t.startswith("lm_") for v in vectors for t in v) and any(not t.startswith("lm_") for v in vectors for t in v)
    run_python("-m", "csplade_pyserini.index", "--input", str(tmp_path / "vectors"), "--index", str(tmp_path / "index"))
    run_python("-m", "csplade_pyserini.search", "--index", str(tmp_path / "index"), "--topics", str(topics),
               "--encoder", spec, "--output", str(tmp_path / "run.txt"), "--hits", "10", "--threads", "1")
    lucene: dict[str, list[float]] = {}
    for line in (tmp_path / "run.txt").read_text().splitlines():
        qid, _, _, _, score, _ = line.split()
        lucene.setdefault(qid, []).append(float(score))
    exact = scores_by_weight(CspladeModel.from_spec(spec, cache=False).with_card(expansion_weight=1.0), domain, [0.5])[0.5]
    assert set(lucene) == set(exact)
    for qid, scores in lucene.items():
        assert scores == pytest.approx(sorted(exact[qid].values(), reverse=True)[:len(scores)], rel=1e-6)

    shutil.rmtree(out)  # channels that read texts differently cannot share one reading
    ModelCard.load(lm_head).replace(doc_prefix="doc: ").save(lm_head)
    with pytest.raises(InputError, match="doc_prefix"):
        main([*arguments, "--weights", "0.5"])
