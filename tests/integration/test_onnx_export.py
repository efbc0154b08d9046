"""The export command, as a user types it."""

from __future__ import annotations

import json

from conftest import run_python


def test_export_command_writes_whole_and_refuses_to_overwrite(tiny_checkpoint, tmp_path):
    """``python -m csplade_pyserini.export onnx``: the folder appears whole; a second export into it is refused
    without --overwrite and leaves it as it was; a bad spec names itself and writes nothing."""
    out = tmp_path / "export"
    env = {"CSPLADE_CACHE": str(tmp_path / "cache")}
    result = run_python("-m", "csplade_pyserini.export", "onnx", "--encoder", f"csplade:{tiny_checkpoint}",
                        "--output", str(out), env=env)
    assert json.loads(result.stdout)["runtime"] == "onnx" and (out / "sparse_encoder.onnx").is_file()
    before = sorted(p.name for p in out.iterdir())
    again = run_python("-m", "csplade_pyserini.export", "onnx", "--encoder", f"csplade:{tiny_checkpoint}",
                       "--output", str(out), env=env, check=False)
    assert again.returncode == 2 and "--overwrite" in again.stderr and sorted(p.name for p in out.iterdir()) == before
    bad = run_python("-m", "csplade_pyserini.export", "onnx", "--encoder", "csplade,runtime=tensorrt",
                     "--output", str(tmp_path / "bad"), env=env, check=False)
    assert bad.returncode == 2 and "runtime" in bad.stderr and not (tmp_path / "bad").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporaries left


def test_word_channel_documents_under_onnx_are_refused_before_any_output(tmp_path, tokenizer_dir):
    """The literal ``pyserini.encode`` and ours with ``runtime=onnx`` on a word channel (whose documents need
    PyTorch): one error naming the field, and no output folder."""
    from conftest import WORDS, make_tiny_llama, scifact_slice

    from csplade_pyserini.model.words import TermFrequencyHead

    folder = make_tiny_llama(tmp_path / "words", tokenizer_dir, doc_top_k=None, tf_head="tf_head.safetensors",
                             tf_layer=1, **{**WORDS, "expansion": True})
    TermFrequencyHead(32, 8).save(folder)
    corpus, _, _ = scifact_slice(tmp_path / "data")
    spec, env = f"csplade:{folder},runtime=onnx", {"CSPLADE_CACHE": str(tmp_path / "cache")}
    literal = run_python("-m", "pyserini.encode", "input", "--corpus", str(corpus), "--fields", "title", "text",
                         "output", "--embeddings", str(tmp_path / "literal"), "encoder", "--encoder", spec,
                         "--fields", "title", "text", "--device", "cpu", env=env, check=False)
    ours = run_python("-m", "csplade_pyserini.encode", "--corpus", str(corpus), "--embeddings", str(tmp_path / "ours"),
                      "--encoder", spec, env=env, check=False)
    for result in (literal, ours):
        assert result.returncode != 0 and "field 'runtime'" in result.stderr and "runtime=torch" in result.stderr
    assert not (tmp_path / "literal").exists() and not (tmp_path / "ours").exists()
