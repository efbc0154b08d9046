"""``--max-length`` has one meaning everywhere: an override of the card's ``max_doc_length``, recorded with
the vectors (our encode command) and honoured by the literal ``pyserini.encode`` when typed there."""

from __future__ import annotations

import json
import sys

import pytest

from csplade_pyserini.errors import InputError
from csplade_pyserini.integration.encoders import EncodeCommand, pyserini_encode_command
from csplade_pyserini.vectors.jsonvec import info_path

MAIN = "/venv/site-packages/pyserini/encode/__main__.py"


def test_a_typed_max_length_is_read_from_the_encoder_group_only():
    argv = [MAIN, "input", "--corpus", "C", "--fields", "title", "text", "output", "--embeddings", "E",
            "encoder", "--encoder", "csplade", "--max-length", "64"]
    assert pyserini_encode_command(argv) == EncodeCommand("C", ["title", "text"], 64)
    assert pyserini_encode_command([*argv[:-2], "--max-length=32"]).max_length == 32
    assert pyserini_encode_command(argv[:-2]).max_length is None  # not typed: the card decides
    with pytest.raises(InputError, match="max-length"):
        pyserini_encode_command([*argv[:-1], "many"])


def test_encode_max_length_overrides_the_card_and_is_recorded(tiny_checkpoint, tmp_path, one_thread):
    from csplade_pyserini.encode import main

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    long_text = " ".join(f"word{i} zebra volcano" for i in range(60))
    (corpus / "corpus.jsonl").write_text(json.dumps({"_id": "d1", "title": "", "text": long_text}) + "\n")
    spec = f"csplade:{tiny_checkpoint}"

    def encode(out: str, encoder: str, *extra: str) -> tuple[dict, dict]:
        assert main(["--corpus", str(corpus), "--embeddings", str(tmp_path / out), "--encoder", encoder, *extra]) == 0
        info = json.loads(info_path(tmp_path / out).read_text())
        [vector] = [json.loads(line)["vector"] for p in sorted((tmp_path / out).glob("*.jsonl")) for line in open(p)]
        return info, vector

    flag_info, flag_vector = encode("flag", spec, "--max-length", "8")
    spec_info, spec_vector = encode("spec", f"{spec},max_doc_length=8")
    card_info, card_vector = encode("card", spec)
    assert flag_info["card"]["max_doc_length"] == spec_info["card"]["max_doc_length"] == 8
    assert card_info["card"]["max_doc_length"] == 128
    assert flag_vector == spec_vector and flag_vector != card_vector


def test_the_literal_encoder_honours_a_typed_max_length(tiny_checkpoint, monkeypatch):
    from csplade_pyserini.integration.encoders import CspladeDocumentEncoder

    spec = f"csplade:{tiny_checkpoint}"
    text = [" ".join(f"word{i} zebra volcano" for i in range(60))]
    monkeypatch.setattr(sys, "argv", [MAIN, "encoder", "--encoder", spec, "--max-length", "8"])
    typed = CspladeDocumentEncoder(spec)
    monkeypatch.setattr(sys, "argv", [MAIN, "encoder", "--encoder", spec])
    untyped = CspladeDocumentEncoder(spec)
    assert typed.model.card.max_doc_length == 8 and untyped.model.card.max_doc_length == 128
    # what Pyserini passes on each call (its default 256) changes nothing: the card decides
    assert untyped.encode(text, max_length=256) == untyped.encode(text, max_length=8)
    assert typed.encode(text, max_length=256) != untyped.encode(text, max_length=256)


def test_torchao_kernel_load_warnings_are_dropped_and_nothing_else():
    import logging

    from csplade_pyserini.integration.patches import UnloadableKernels

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("torchao", logging.WARNING, __file__, 1, message, None, None)

    quiet = UnloadableKernels()
    assert not quiet.filter(record("Failed to load /x/torchao/_C_mxfp8.cpython-310-x86_64-linux-gnu.so: Could not load"))
    assert quiet.filter(record("Failed to load the quantization config"))
    assert quiet.filter(record("int4 weight-only needs a CPU with AVX-512"))
