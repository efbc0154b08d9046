"""The word channel through real data and real commands: ``train words`` on SciFact and NFCorpus slices, the
zero-shot suite's code on Cranfield and Climate-FEVER slices, and the literal ``pyserini.encode``."""

from __future__ import annotations

import json

import pytest
from conftest import WORDS, beir_slice, make_tiny_llama, shared

from csplade_pyserini.errors import InputError
from csplade_pyserini.model.words import (
    TermFrequencyHead,
)


def test_train_words_end_to_end_on_two_small_real_domains(tmp_path, tokenizer_dir, one_thread):
    """``train words`` on slices of SciFact and NFCorpus with a tiny random backbone: caches, validation at
    step 0 (BM25 over words) and later, the best head kept, a card that loads and encodes."""
    from csplade_pyserini.model.encoder import CspladeModel
    from csplade_pyserini.train.__main__ import main

    backbone = make_tiny_llama(tmp_path / "tiny", tokenizer_dir)
    scifact, nfcorpus = tmp_path / "scifact", tmp_path / "nfcorpus"
    beir_slice(shared() / "data" / "beir" / "scifact", scifact, split="train", queries=40, extra_docs=40)
    beir_slice(shared() / "data" / "beir" / "nfcorpus", nfcorpus, split="train", queries=30, extra_docs=20)
    out = tmp_path / "run"
    assert main(["words", "--data", str(scifact), "--data", str(nfcorpus), "--backbone", str(backbone),
                 "--tf-layer", "1", "--steps", "6", "--eval-steps", "3", "--batch-size", "4", "--held-out", "8",
                 "--output-dir", str(out), "--threads", "1"]) == 0
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    validated = [e["step"] for e in log if "validation" in e]
    assert validated == [0, 3, 6] and all(0 <= e["validation"]["mean"] <= 1 for e in log if "validation" in e)
    assert sorted(p.name for p in (out / "cache").iterdir()) == ["nfcorpus.L1.pt", "scifact.L1.pt"]
    card = json.loads((out / "model" / "best" / "csplade_card.json").read_text())
    assert card["notes"]["trained_on"] == ["scifact", "nfcorpus"] and card["tf_layer"] == 1
    kept = card["notes"]["validation"]["step kept"]
    assert kept == max((e for e in log if "validation" in e), key=lambda e: e["validation"]["mean"])["step"]
    model = CspladeModel.from_spec(f"csplade:{out / 'model' / 'best'}", cache=False)
    [vector] = model.encode(["Cells grow in blood."])
    assert set(vector) == {"cell", "grow", "blood"} and all(v > 0 for v in vector.values())
    # a second run into the same folder is refused unless asked to replace what the first wrote
    again = ["words", "--data", str(scifact), "--data", str(nfcorpus), "--backbone", str(backbone), "--tf-layer", "1",
             "--steps", "2", "--eval-steps", "2", "--batch-size", "4", "--held-out", "8", "--output-dir", str(out),
             "--threads", "1"]
    with pytest.raises(InputError, match="overwrite-output-dir"):
        main(again)
    assert main([*again, "--overwrite-output-dir"]) == 0
    assert json.loads((out / "model" / "best" / "csplade_card.json").read_text())["notes"]["training"]["steps"] == 2


def test_zero_shot_suite_on_slices_with_a_tiny_model(tmp_path, tokenizer_dir, monkeypatch):
    """The suite's code end to end: a collection with empty documents (Cranfield) and one whose ids hold
    spaces (Climate-FEVER sentences), BM25 and a tiny word-channel model marked as trained on Cranfield."""
    from benchmarks import zero_shot
    data = tmp_path / "shared-data"
    cranfield = beir_slice(shared() / "data" / "classic" / "cranfield", data / "classic" / "cranfield", first_docs=40,
                           extra_ids={"471"})  # an empty document of the original release
    fever = beir_slice(shared() / "data" / "climate-fever-sentences", data / "climate-fever-sentences", first_docs=60)
    assert cranfield and fever
    tiny = make_tiny_llama(tmp_path / "tiny", tokenizer_dir, max_doc_length=32, doc_top_k=None, query_top_k=None,
                           tf_head="tf_head.safetensors", tf_layer=1, notes={"trained_on": ["cranfield"]}, **WORDS)
    TermFrequencyHead(32, 4).save(tiny)
    monkeypatch.chdir(tmp_path)
    assert zero_shot.main(["--systems", "bm25", "--candidate", f"tiny=csplade:{tiny}", "--collections",
                           "cranfield,climate-fever", "--shared-data", str(data), "--threads", "1"]) == 0
    report = json.loads((tmp_path / "eval" / "results" / "bench-zero-shot.json").read_text())
    bm25, model = report["systems"]["bm25"], report["systems"]["tiny"]
    assert set(bm25["collections"]) == set(model["collections"]) == {"cranfield", "climate-fever"}
    assert model["collections"]["cranfield"]["in_domain"] and not model["collections"]["climate-fever"]["in_domain"]
    assert model["zero_shot_collections"] == ["climate-fever"] and bm25["zero_shot_collections"] == ["cranfield", "climate-fever"]
    # an untrained head is BM25 over words: close to Lucene's BM25, compared query by query
    for collection in ("cranfield", "climate-fever"):
        vs = model["collections"][collection]["vs_bm25"]
        assert vs["queries"] > 0 and vs["ci_low"] <= vs["mean_difference"] <= vs["ci_high"]
        assert 0 <= model["collections"][collection]["nDCG@10"] <= 1 and model["collections"][collection]["docs_per_s"] > 0
    ids = [json.loads(line)["_id"] for line in (tmp_path / "encode" / "zero-shot-data" / "climate-fever" / "corpus.jsonl").open()]
    assert ids and all(" " not in i for i in ids)
    assert (tmp_path / "eval" / "results" / "bench-zero-shot.png").stat().st_size > 0
    text = (tmp_path / "eval" / "results" / "bench-zero-shot.md").read_text()
    assert "| tiny (`csplade:" in text and "*" in text.split("| tiny")[1].split("\n")[0]


def test_literal_pyserini_encode_measures_the_collection_as_our_encode_does(words_checkpoint, tmp_path):
    """The word channel's avgdl through ``python -m pyserini.encode`` (which shows an encoder one batch at a
    time): read from its own --corpus, so its vectors equal the encode command's, shard or not."""
    from conftest import run_python, scifact_slice

    from csplade_pyserini.integration.encoders import EncodeCommand, pyserini_encode_command

    corpus, _, _ = scifact_slice(tmp_path / "data", n_queries=3, extra_docs=8)
    spec = f"csplade:{words_checkpoint}"
    run_python("-m", "pyserini.encode", "input", "--corpus", str(corpus), "--fields", "title", "text",
               "--shard-id", "1", "--shard-num", "2", "output", "--embeddings", str(tmp_path / "literal"),
               "encoder", "--encoder", spec, "--fields", "title", "text", "--device", "cpu")
    run_python("-m", "csplade_pyserini.encode", "--corpus", str(corpus), "--embeddings", str(tmp_path / "ours"),
               "--encoder", spec, "--threads", "1")
    literal = {json.loads(line)["id"]: json.loads(line)["vector"]
               for line in open(tmp_path / "literal" / "embeddings.jsonl")}
    ours = {json.loads(line)["id"]: json.loads(line)["vector"]
            for path in sorted((tmp_path / "ours").glob("*.jsonl")) for line in open(path)}
    assert literal and set(literal) < set(ours)  # the second of two shards
    assert all(literal[d] == ours[d] for d in literal)
    pinned = f"{spec},bm25_avgdl=10"
    run_python("-m", "pyserini.encode", "input", "--corpus", str(corpus), "--fields", "title", "text",
               "output", "--embeddings", str(tmp_path / "pinned"), "encoder", "--encoder", pinned,
               "--fields", "title", "text", "--device", "cpu")
    pinned_vectors = {json.loads(line)["id"]: json.loads(line)["vector"]
                      for line in open(tmp_path / "pinned" / "embeddings.jsonl")}
    assert any(pinned_vectors[d] != ours[d] for d in ours)  # avgdl 10, not the collection's
    main = "/site-packages/pyserini/encode/__main__.py"
    assert pyserini_encode_command([main, "input", "--corpus", "C", "output", "--embeddings", "E"]) == \
        EncodeCommand("C", ["text"], None)
    assert pyserini_encode_command(["/bin/pytest", "--corpus", "C"]) is None
