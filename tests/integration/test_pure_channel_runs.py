"""The pure CSPLADE path (the LM-head channel read early, ``model/context.py``) through real data: ``train
pure`` on SciFact and NFCorpus slices with a tiny random backbone, then the saved card through the encoder."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import beir_slice, make_tiny_llama, shared

from csplade_pyserini.errors import InputError


def test_train_pure_end_to_end_on_two_small_real_domains(tmp_path, tokenizer_dir, one_thread):
    from csplade_pyserini.model.encoder import CspladeModel
    from csplade_pyserini.train.__main__ import main
    from csplade_pyserini.train.lm_head_channel import LMHeadChannel, PositionCache

    backbone = make_tiny_llama(tmp_path / "tiny", tokenizer_dir)
    scifact, nfcorpus = tmp_path / "scifact", tmp_path / "nfcorpus"
    beir_slice(shared() / "data" / "beir" / "scifact", scifact, split="train", queries=40, extra_docs=40)
    beir_slice(shared() / "data" / "beir" / "nfcorpus", nfcorpus, split="train", queries=30, extra_docs=20)
    out = tmp_path / "run"
    arguments = ["pure", "--data", str(scifact), "--data", str(nfcorpus), "--backbone", str(backbone),
                 "--context-layer", "1", "--steps", "6", "--eval-steps", "3", "--batch-size", "4", "--held-out", "8",
                 "--bias-sample", "20", "--flops-sample", "64", "--max-doc-length", "48", "--output-dir", str(out),
                 "--threads", "1", "--learning-rate", "0.05"]
    assert main(arguments) == 0
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log if "validation" in e] == [0, 3, 6]
    assert all(0 <= e["validation"]["mean"] <= 1 for e in log if "validation" in e)
    assert all(e["infonce"] > 0 and e["query_terms"] <= 64 for e in log if "infonce" in e)
    folder = out / "model" / "best"
    card = json.loads((folder / "csplade_card.json").read_text())
    assert card["context_layer"] == 1 and card["context_head"] and card["logit_bias"] and card["doc_top_k"] is None
    assert card["notes"]["trained_on"] == ["scifact", "nfcorpus"]
    kept = card["notes"]["validation"]["step kept"]
    assert kept == max((e for e in log if "validation" in e), key=lambda e: e["validation"]["mean"])["step"]

    # the saved card encodes through the real encoder exactly as training's cached view scored
    model = CspladeModel.from_spec(f"csplade:{folder},dtype=float32", cache=False)
    encoder = model.encoder
    assert len(encoder.model.model.layers) == 1  # the backbone runs only context_layer layers
    texts = ["Cells grow in blood.", "The protein binds DNA in mice."]
    vectors = encoder.encode_sequences(encoder.tokenize(texts, "doc"), top_k=None)
    cache = PositionCache.build(encoder, texts, "doc", None)
    channel = LMHeadChannel(encoder, 1.0, encoder.logit_bias.detach())
    with torch.no_grad():
        dense = channel.weights(cache, [0, 1])
    for (ids, weights), row in zip(vectors, dense):  # the cache keeps states in bfloat16: rounding apart
        encoded = torch.zeros_like(row).index_put_((ids,), weights.float())
        assert len(ids) > 10 and torch.allclose(encoded, row, atol=0.02)
    assert len(model.encode(texts, kind="query")) == 2
    # a second run into the same folder is refused unless asked to replace it
    with pytest.raises(InputError, match="overwrite-output-dir"):
        main(arguments)
