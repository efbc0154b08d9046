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
