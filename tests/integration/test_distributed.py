"""Distributed training and sharded encoding on the CPU (torch.distributed, gloo), on tiny random models.

Two processes with per-device batches of 2 against one process with a batch of 4 (the same global
batch): after one step the loss and the updated weights agree, because every process scores its
queries against the documents of the whole global batch (gathered, gradients flowing back to each
process's own part) and FLOPS uses the global batch mean. The step is plain SGD, so the weights
compare the gradients themselves (Adam's first step is lr x sign(g) and flips on float noise where
a gradient is nearly 0). Tolerance: 1e-5 (float sums in another order).
"""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest
import torch
from conftest import run_python
from safetensors.torch import load_file
from test_training_runs import (
    options,  # the toy set and the tiny backbone of the training tests
    workdir,  # noqa: F401  (fixture)
)

TOLERANCE = 1e-5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def contrastive(workdir: Path, output: Path, processes: int, batch: int, *extra: str) -> None:
    argv = ["contrastive", *options(workdir, output, "--validation-queries", "0", "--per-device-train-batch-size",
                                    str(batch), "--save-strategy", "steps", "--save-steps", "1",
                                    "--flops-query-weight", "0.01", "--flops-doc-weight", "0.01",
                                    "--flops-ramp-fraction", "0", "--bias-target-df", "0.2", "--optim", "sgd",
                                    "--learning-rate", "0.5", "--lr-scheduler-type", "constant", *extra)]
    argv = ["--negatives-run" if a == "--run" else a for a in argv]  # torchrun's parser claims --run
    if processes == 1:
        run_python("-m", "csplade_pyserini.train", *argv)
    else:
        run_python("-m", "torch.distributed.run", f"--nproc_per_node={processes}", f"--master_port={free_port()}",
                   "-m", "csplade_pyserini.train", *argv, env={"OMP_NUM_THREADS": "1"})


def logged_losses(output: Path, step: int) -> list[float]:
    state = json.loads((output / f"checkpoint-{step}" / "trainer_state.json").read_text())
    return [h["loss"] for h in state["log_history"] if "loss" in h]


@pytest.mark.parametrize("objective", ["cl", "clkd"])
def test_two_processes_equal_one_process_with_the_same_global_batch(workdir, tmp_path, objective):  # noqa: F811
    extra = ["--max-steps", "1", "--objective", objective]
    if objective == "clkd":
        teacher = tmp_path / "teacher.txt"
        teacher.write_text("".join(f"q{i} {d} {10.0 if d == f'd{i}' else float(len(d))}\n" for i in range(8)
                                   for d in [f"d{j}" for j in range(8)] + [f"n{j}-{k}" for j in range(8)
                                                                           for k in range(3)]))
        extra += ["--teacher-scores", str(teacher), "--teacher-temperature", "2"]
    contrastive(workdir, tmp_path / "one", 1, 4, *extra)
    contrastive(workdir, tmp_path / "two", 2, 2, *extra)
    one = load_file(str(tmp_path / "one" / "checkpoint-1" / "trainable.safetensors"))
    two = load_file(str(tmp_path / "two" / "checkpoint-1" / "trainable.safetensors"))
    assert set(one) == set(two) and len(one) > 4
    for name in one:
        assert torch.allclose(one[name], two[name], atol=TOLERANCE, rtol=TOLERANCE), name
    assert logged_losses(tmp_path / "one", 1) == pytest.approx(logged_losses(tmp_path / "two", 1), abs=TOLERANCE)


def test_a_two_process_run_resumed_ends_where_an_uninterrupted_one_does(workdir, tmp_path):  # noqa: F811
    contrastive(workdir, tmp_path / "whole", 2, 2, "--max-steps", "3")
    contrastive(workdir, tmp_path / "cut", 2, 2, "--max-steps", "3")
    for name in ("checkpoint-2", "checkpoint-3", "final"):  # killed after step 1's checkpoint
        shutil.rmtree(tmp_path / "cut" / name, ignore_errors=True)
    contrastive(workdir, tmp_path / "cut", 2, 2, "--max-steps", "3", "--resume-from-checkpoint",
                str(tmp_path / "cut" / "checkpoint-1"))
    whole = load_file(str(tmp_path / "whole" / "checkpoint-3" / "trainable.safetensors"))
    cut = load_file(str(tmp_path / "cut" / "checkpoint-3" / "trainable.safetensors"))
    for name in whole:
        assert torch.allclose(whole[name], cut[name], atol=TOLERANCE), name


def test_three_shards_hold_exactly_the_vectors_of_one_run(tiny_checkpoint, tmp_path):
    from conftest import scifact_slice

    from csplade_pyserini.vectors.jsonvec import read_info, read_vectors, shard_range

    corpus, _, _ = scifact_slice(tmp_path / "data", n_queries=4, extra_docs=10)
    spec = f"csplade:{tiny_checkpoint}"
    run_python("-m", "csplade_pyserini.encode", "--corpus", str(corpus), "--embeddings", str(tmp_path / "one"),
               "--encoder", spec, "--threads", "1")
    run_python("-m", "csplade_pyserini.encode", "--corpus", str(corpus), "--embeddings", str(tmp_path / "three"),
               "--encoder", spec, "--processes", "3", "--threads", "2")
    single = {r["id"]: r["vector"] for r in read_vectors(tmp_path / "one")}
    parts = [{r["id"]: r["vector"] for r in read_vectors(part)} for part in sorted((tmp_path / "three").iterdir())]
    assert len(parts) == 3 and sum(len(p) for p in parts) == len(single)  # no overlap, no gap
    merged = {k: v for p in parts for k, v in p.items()}
    assert merged == single
    assert read_info(tmp_path / "three")["documents"] == len(single)
    sizes = [len(shard_range(len(single), i, 3)) for i in range(3)]
    assert [len(p) for p in parts] == sizes
    # the parts index as one collection
    run_python("-m", "csplade_pyserini.index", "--input", str(tmp_path / "three"), "--index", str(tmp_path / "idx"))
    info = json.loads((tmp_path / "idx" / "csplade-index.info").read_text())
    assert info["index"]["documents"] == len(single)


def test_the_literal_pyserini_encode_honours_the_shard_flags(tiny_checkpoint, tmp_path):
    from conftest import scifact_slice

    from csplade_pyserini.vectors.jsonvec import shard_range

    corpus, _, _ = scifact_slice(tmp_path / "data", n_queries=3, extra_docs=8)
    ids = [json.loads(line)["_id"] for line in (corpus / "corpus.jsonl").read_text().splitlines()]
    out = tmp_path / "emb"
    run_python("-m", "pyserini.encode", "input", "--corpus", str(corpus / "corpus.jsonl"), "--fields", "title", "text",
               "--shard-id", "1", "--shard-num", "3", "output", "--embeddings", str(out), "encoder", "--encoder",
               f"csplade:{tiny_checkpoint}", "--fields", "title", "text", "--device", "cpu")
    written = [json.loads(line)["id"] for f in sorted(out.glob("*.jsonl")) for line in f.read_text().splitlines()]
    span = shard_range(len(ids), 1, 3)
    assert written == ids[span.start:span.stop]
