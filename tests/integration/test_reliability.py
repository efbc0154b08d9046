"""Reliability: no data loss, correct scores on partial runs, strict inputs on every path.

Fault injection: outputs that exist or are not plain files, kills and signals at any moment, resumes,
concurrent writers, full disks, damaged checkpoints and malformed input; the CLIs run as a user types
them, on a tiny random model and real SciFact slices.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import run_python, scifact_slice

from csplade_pyserini.errors import InputError


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return scifact_slice(tmp_path_factory.mktemp("data"), n_queries=3, extra_docs=6)


def encode(spec, corpus, out, *extra, check=True):
    return run_python("-m", "csplade_pyserini.encode", "--corpus", str(corpus), "--embeddings", str(out),
                      "--encoder", spec, "--threads", "1", *extra, check=check)


def vectors_of(folder: Path) -> dict:
    from csplade_pyserini.vectors.jsonvec import read_vectors

    return {r["id"]: r["vector"] for r in read_vectors(folder)}


# --- no data loss ----------------------------------------------------------------------------------
def test_existing_outputs_are_refused_without_overwrite_and_inputs_are_never_replaced(tiny_checkpoint, data, tmp_path):
    corpus, _, _ = data
    spec = f"csplade:{tiny_checkpoint}"
    out = tmp_path / "out"
    (out / "other.csplade").mkdir(parents=True)
    (out / "other.csplade" / "docs-00000.jsonl").write_text("keep\n")
    result = encode(spec, corpus, out, check=False)
    assert result.returncode == 2 and "already exists" in result.stderr
    result = encode(spec, corpus, out, "--overwrite", check=False)  # not a folder this toolkit wrote
    assert result.returncode == 2 and "did not write" in result.stderr
    assert (out / "other.csplade" / "docs-00000.jsonl").read_text() == "keep\n"
    result = encode(spec, corpus, corpus, "--overwrite", check=False)  # --embeddings = the corpus folder
    assert result.returncode == 2 and "replace the input" in result.stderr
    assert (corpus / "corpus.jsonl").exists()
    encode(spec, corpus, tmp_path / "vectors")
    first = vectors_of(tmp_path / "vectors")
    encode(spec, corpus, tmp_path / "vectors", "--overwrite")  # its own output: replaced
    assert vectors_of(tmp_path / "vectors") == first
    result = run_python("-m", "csplade_pyserini.index", "--input", str(tmp_path / "vectors"), "--index",
                        str(tmp_path / "vectors"), check=False)
    assert result.returncode == 2 and "replace the input" in result.stderr
    assert vectors_of(tmp_path / "vectors") == first


# --- partial runs -------------------------------------------------------------------------------------
def test_a_run_lacking_topics_scores_as_trec_eval_minus_c(tmp_path):
    import re

    from csplade_pyserini.datasets import load_qrels
    from csplade_pyserini.evaluate.measures import evaluate_run, measures_for

    qrels = load_qrels("beir-v1.0.0-scifact.test")
    three = sorted(qrels)[:3]
    run = tmp_path / "run.txt"
    run.write_text("".join(f"{q} Q0 {d} 1 1.0 t\n" for q in three for d in list(qrels[q])[:1]))
    ours = evaluate_run(run, "beir-v1.0.0-scifact.test", measures_for("beir-v1.0.0-scifact.test"))
    result = run_python("-m", "pyserini.eval.trec_eval", "-c", "-m", "ndcg_cut.10", "-m", "recall.100",
                        "beir-v1.0.0-scifact.test", str(run))
    theirs = {m: float(v) for m, v in re.findall(r"^(ndcg_cut_10|recall_100)\s+all\s+([0-9.]+)", result.stdout, re.M)}
    assert ours["nDCG@10"] == pytest.approx(theirs["ndcg_cut_10"], abs=1e-4)
    assert ours["R@100"] == pytest.approx(theirs["recall_100"], abs=1e-4)
    assert ours["nDCG@10"] > 0.005  # 3 perfect-ish topics of 300, not rescaled twice (was 0.0001)


# --- a model that does not match the index -------------------------------------------------------
def test_a_query_encoder_that_differs_from_the_index_model_is_refused(tiny_checkpoint, data, tmp_path):
    corpus, topics, _ = data
    built = f"csplade:{tiny_checkpoint},variant=echo,max_doc_length=32"
    encode(built, corpus, tmp_path / "vectors")
    run_python("-m", "csplade_pyserini.index", "--input", str(tmp_path / "vectors"), "--index", str(tmp_path / "index"))
    result = run_python("-m", "csplade_pyserini.search", "--index", str(tmp_path / "index"), "--topics", str(topics),
                        "--encoder", f"csplade:{tiny_checkpoint}", "--output", str(tmp_path / "run.txt"), check=False)
    assert result.returncode == 2 and "variant: 'echo' (index) vs 'causal'" in result.stderr
    assert not (tmp_path / "run.txt").exists()
    # the same query side (only the document length differs): accepted
    run_python("-m", "csplade_pyserini.search", "--index", str(tmp_path / "index"), "--topics", str(topics),
               "--encoder", f"csplade:{tiny_checkpoint},variant=echo", "--output", str(tmp_path / "run.txt"))


# --- numeric overflow -----------------------------------------------------------------------------
def test_weights_beyond_lucene_integers_are_refused(tiny_checkpoint, data, tmp_path):
    corpus, _, _ = data
    result = encode(f"csplade:{tiny_checkpoint},quant_scale=1e9", corpus, tmp_path / "v1", check=False)
    assert result.returncode == 2 and "quant_scale" in result.stderr and not (tmp_path / "v1").exists()
    result = encode(f"csplade:{tiny_checkpoint},logit_scale=inf", corpus, tmp_path / "v2", check=False)
    assert result.returncode == 2 and "logit_scale" in result.stderr
    vectors = tmp_path / "big"
    vectors.mkdir()
    (vectors / "docs-00000.jsonl").write_text(json.dumps({"id": "d1", "contents": "", "vector": {"a": 2**40}}) + "\n")
    result = run_python("-m", "csplade_pyserini.index", "--input", str(vectors), "--index", str(tmp_path / "i"),
                        check=False)
    assert result.returncode == 2 and "integer impacts" in result.stderr and not (tmp_path / "i").exists()


# --- ids with whitespace ------------------------------------------------------------------------------
def test_ids_with_whitespace_are_refused_at_index_time(tmp_path):
    vectors = tmp_path / "v"
    vectors.mkdir()
    (vectors / "docs-00000.jsonl").write_text(json.dumps({"id": "d 1", "contents": "", "vector": {"a": 2}}) + "\n")
    result = run_python("-m", "csplade_pyserini.index", "--input", str(vectors), "--index", str(tmp_path / "i"),
                        check=False)
    assert result.returncode == 2 and "docs-00000.jsonl:1" in result.stderr and "whitespace" in result.stderr


# --- the literal Pyserini path ----------------------------------------------------------------------
def test_literal_encode_reads_a_beir_folder_and_marks_partial_output(tiny_checkpoint, tmp_path):
    base = Path(scifact_slice(tmp_path / "d", n_queries=2, extra_docs=3)[0])
    (base / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "a query"}) + "\n")
    (base / "qrels").mkdir()
    (base / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\tx\t1\n")
    out = tmp_path / "emb"
    run_python("-m", "pyserini.encode", "input", "--corpus", str(base), "--fields", "title", "text", "output",
               "--embeddings", str(out), "encoder", "--encoder", f"csplade:{tiny_checkpoint}", "--fields", "title",
               "text", "--device", "cpu")
    ids = [json.loads(line)["id"] for line in (out / "embeddings.jsonl").read_text().splitlines()]
    corpus_ids = [json.loads(line)["_id"] for line in (base / "corpus.jsonl").read_text().splitlines()]
    assert ids == corpus_ids  # queries.jsonl is not read as documents
    from csplade_pyserini.integration.patches import PARTIAL_MARKER

    assert not (out / PARTIAL_MARKER).exists()
    (out / PARTIAL_MARKER).write_text("123456789\n")  # what a killed literal encode leaves
    result = run_python("-m", "csplade_pyserini.index", "--input", str(out), "--index", str(tmp_path / "i"),
                        check=False)
    assert result.returncode == 2 and "incomplete" in result.stderr


def test_the_literal_encoder_refuses_empty_documents(tiny_checkpoint):
    from csplade_pyserini.integration.encoders import CspladeDocumentEncoder

    encoder = CspladeDocumentEncoder(f"csplade:{tiny_checkpoint}")
    with pytest.raises(InputError, match="empty document"):
        encoder.encode(["fine text", "\u200b "], titles=["", ""])


# --- evaluate input handling --------------------------------------------------------------------
@pytest.mark.parametrize("content, where, message", [
    ("1 Q0 d1 1 1.0\n", "run.txt:1", "expected 6 columns"),
    ("1 Q0 d1 1 high t\n", "run.txt:1", "score 'high' is not a number"),
    ("1 Q0 d1 1 1.0 t extra\n", "run.txt:1", "expected 6 columns"),
    ("1 Q0 d1 1 nan t\n", "run.txt:1", "score 'nan' is not finite"),
    ("", "run.txt", "no result lines"),
])
def test_evaluate_names_the_bad_line(tmp_path, content, where, message):
    run = tmp_path / "run.txt"
    run.write_text(content)
    result = run_python("-m", "csplade_pyserini.evaluate", "--run", str(run), "--qrels", "beir-v1.0.0-scifact.test",
                        check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert where in result.stderr and message in result.stderr


def test_evaluate_qrels_problems_and_foreign_topics(tmp_path):
    run = tmp_path / "run.txt"
    run.write_text("zz Q0 d1 1 1.0 t\n")
    qrels = tmp_path / "qrels.txt"
    qrels.write_text("1 0 d1 1\n2 0 d2\n")  # second line lost its relevance column
    result = run_python("-m", "csplade_pyserini.evaluate", "--run", str(run), "--qrels", str(qrels), check=False)
    assert result.returncode == 2 and f"{qrels}:2" in result.stderr
    qrels.write_text("")
    result = run_python("-m", "csplade_pyserini.evaluate", "--run", str(run), "--qrels", str(qrels), check=False)
    assert result.returncode == 2 and "no judgement" in result.stderr
    result = run_python("-m", "csplade_pyserini.evaluate", "--run", str(run), "--qrels", "beir-v1.0.0-scifact.test",
                        "--measures", "R@100", "nDCG@10", check=False, env={"CSPLADE_LOG": "WARNING"})
    assert "not in the qrels" in result.stderr
    assert [line.split()[0] for line in result.stdout.splitlines()] == ["R@100", "nDCG@10"]  # the order asked for
    result = run_python("-m", "csplade_pyserini.evaluate", "--run", str(tmp_path / "none.txt"), "--qrels",
                        "beir-v1.0.0-scifact.test", check=False)
    assert result.returncode == 2 and "does not exist" in result.stderr


# --- empty documents --------------------------------------------------------------------------------
def test_an_empty_document_gets_no_terms_and_invisible_text_counts_as_empty(tiny_checkpoint, tmp_path):
    from csplade_pyserini.model.encoder import CspladeModel

    model = CspladeModel.from_spec(f"csplade:{tiny_checkpoint},logit_bias=null", cache=False)
    assert model.encode([""], "doc") == [{}]
    assert model.encode(["real words"], "doc")[0]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(json.dumps({"_id": "a", "title": "", "text": "\u200b\u2060\x07"}) + "\n")
    result = encode(f"csplade:{tiny_checkpoint}", corpus, tmp_path / "v", check=False)
    assert result.returncode == 2 and "is empty" in result.stderr


# --- arguments checked before anything loads -------------------------------------------------------
def test_search_checks_its_arguments_before_loading_anything(tmp_path):
    topics = tmp_path / "topics.tsv"
    topics.write_text("1\tsome query\n")
    (tmp_path / "index").mkdir()
    start = time.perf_counter()
    result = run_python("-m", "csplade_pyserini.search", "--index", str(tmp_path / "index"), "--topics", str(topics),
                        "--output", str(tmp_path / "run.txt"), "--hits", "0", check=False)
    assert result.returncode == 2 and "--hits must be at least 1" in result.stderr and "Traceback" not in result.stderr
    assert time.perf_counter() - start < 20  # no model, no JVM
    topics.write_text("")
    result = run_python("-m", "csplade_pyserini.search", "--index", str(tmp_path / "index"), "--topics", str(topics),
                        "--output", str(tmp_path / "run.txt"), check=False)
    assert result.returncode == 2 and "no query" in result.stderr


# --- trec_eval's tie order ---------------------------------------------------------------------------
def test_ties_are_ranked_as_trec_eval_ranks_them(tmp_path):
    from csplade_pyserini.runs.check import check_run
    from csplade_pyserini.search import write_trec_run

    out = tmp_path / "run.txt"
    write_trec_run({"1": [("a", 1.0), ("c", 2.0), ("b", 1.0)]}, out, "t")
    assert [line.split()[2] for line in out.read_text().splitlines()] == ["c", "b", "a"]  # docid descending
    assert check_run(out).ok


# --- interruption ----------------------------------------------------------------------------------
def test_ctrl_c_prints_one_line(tmp_path):
    code = ("from csplade_pyserini.cli import run_cli\n"
            "def main(argv): raise KeyboardInterrupt\n"
            "run_cli(main)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 130 and result.stderr.strip() == "interrupted"


def as_from_a_shell() -> None:
    """The signal state a command gets from a shell: SIGINT and SIGTERM handled by default, not blocked. An
    earlier test of the same pytest process can leave SIGINT ignored, which a child inherits (and a Python
    started with SIGINT ignored keeps it ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


JVM_START = ("import time\nfrom pyserini.search.lucene import LuceneSearcher\n"
             "from jnius import autoclass\nautoclass('io.anserini.search.SimpleSearcher')\ntime.sleep(60)\n")


def test_sigterm_while_the_jvm_starts_ends_the_process_at_once():
    """SIGTERM (twice, as schedulers send it) at any moment of a Pyserini start ends the process by the
    signal itself. Without -Xrs the JVM's own handler answers instead: exit 143, an abort (-6), or a hang
    in vm_exit while the main thread loads classes."""
    for delay in (1.0, 2.0, 3.0, 4.0):
        process = subprocess.Popen([sys.executable, "-c", JVM_START], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, preexec_fn=as_from_a_shell)
        time.sleep(delay)
        process.send_signal(signal.SIGTERM)
        time.sleep(0.7)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=8)
        except subprocess.TimeoutExpired:
            process.kill()
            raise AssertionError(f"still running 8 s after SIGTERM at {delay} s")
        assert code == -signal.SIGTERM, f"SIGTERM at {delay} s: exit {code}"


def test_sigint_while_the_jvm_starts_ends_the_process_promptly():
    process = subprocess.Popen([sys.executable, "-c", JVM_START], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               preexec_fn=as_from_a_shell)
    time.sleep(3.0)
    process.send_signal(signal.SIGINT)
    try:
        # alone it ends within 2 s; the bound leaves room for a loaded machine (a hang is for ever)
        assert process.wait(timeout=20) != 0
    except subprocess.TimeoutExpired:
        process.kill()
        raise AssertionError("still running 20 s after SIGINT")


def test_the_hook_adds_jvm_options_and_leaves_a_jnius_without_pyserini_alone():
    code = ("import sys, types, jnius_config\n"
            "from csplade_pyserini.integration import patches\n"
            "jnius_config.set_options('-Dmine=1')\n"
            "patches.prepare_jvm_options()\n"
            "print(jnius_config.get_options())\n"
            "sys.modules['pyserini'] = types.ModuleType('pyserini')\n"
            "patches.prepare_jvm_options()\n"
            "print(jnius_config.get_options())\n")
    result = run_python("-c", code)
    alone, with_pyserini = result.stdout.strip().splitlines()
    assert alone == "['-Dmine=1']" and with_pyserini == "['-Dmine=1', '-Xrs']"


def test_a_killed_encode_leaves_nothing_and_a_rerun_gives_the_same_vectors(tiny_checkpoint, data, tmp_path):
    corpus, _, _ = data
    spec = f"csplade:{tiny_checkpoint}"
    encode(spec, corpus, tmp_path / "reference")
    process = subprocess.Popen([sys.executable, "-m", "csplade_pyserini.encode", "--corpus", str(corpus),
                                "--embeddings", str(tmp_path / "out"), "--encoder", spec, "--threads", "1"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lock = tmp_path / "out.lock"
    for _ in range(3000):  # until it writes its temporary output folder (mid-encoding)
        if any(p.name.startswith(".out.") for p in tmp_path.iterdir()) or process.poll() is not None:
            break
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "out").exists() or vectors_of(tmp_path / "out") == vectors_of(tmp_path / "reference")
    encode(spec, corpus, tmp_path / "out", "--overwrite")  # a stale lock of a dead process is taken over
    assert vectors_of(tmp_path / "out") == vectors_of(tmp_path / "reference")
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")]
    assert leftovers == []  # the killed run's temporaries were cleared
    assert not lock.exists()


def test_an_interrupted_encode_resumes_from_its_finished_blocks(tiny_model, data, tmp_path):
    """Fault injection: the third block fails (as a kill would stop it); the rerun encodes only the blocks
    that were missing and writes exactly the vectors of an uninterrupted run."""
    from csplade_pyserini.datasets import read_corpus
    from csplade_pyserini.vectors.encoding import encode_documents

    corpus, _, _ = data
    documents = list(read_corpus(corpus))
    assert len(documents) > 6
    encode_documents(tiny_model, documents, tmp_path / "reference", block_size=2)
    calls = []
    resumed = False
    original = tiny_model.encoder.encode_sequences

    def failing(sequences, **kwargs):
        calls.append(len(sequences))
        if len(calls) == 3 and not resumed:
            raise RuntimeError("killed")
        return original(sequences, **kwargs)

    partial = tmp_path / ".out.partial"
    tiny_model.encoder.encode_sequences = failing
    try:
        with pytest.raises(RuntimeError, match="killed"):
            encode_documents(tiny_model, documents, tmp_path / "out", block_size=2, resume_dir=partial)
        assert not (tmp_path / "out").exists() and len(json.loads((partial / "blocks.json").read_text())["blocks"]) == 2
        calls.clear()
        resumed = True
        stats = encode_documents(tiny_model, documents, tmp_path / "out", block_size=2, resume_dir=partial)
    finally:
        tiny_model.encoder.encode_sequences = original
    blocks = (len(documents) + 1) // 2
    assert len(calls) == blocks - 2  # the two finished blocks were not encoded again
    assert vectors_of(tmp_path / "out") == vectors_of(tmp_path / "reference")
    assert stats.documents == len(documents) and not partial.exists()
    assert stats.resumed == 4 and stats.docs_per_second > 0  # the speed counts only what was encoded now
    # kept beyond the end for a caller whose later steps may fail (the pipeline): its rerun encodes nothing
    kept = encode_documents(tiny_model, documents, tmp_path / "kept", block_size=2, resume_dir=partial,
                            keep_blocks=True)
    assert kept.resumed == 0 and partial.exists()
    again = encode_documents(tiny_model, documents, tmp_path / "kept", block_size=2, resume_dir=partial)
    assert again.resumed == len(documents) and again.docs_per_second == 0.0 and not partial.exists()
    assert vectors_of(tmp_path / "kept") == vectors_of(tmp_path / "reference")
    # finished blocks of other inputs (here another block size) are never mixed in: the rerun starts over
    partial.mkdir()
    (partial / "blocks.json").write_text(json.dumps({"fingerprint": "other", "blocks": {"0": {"documents": 2,
                                                                                             "tokens": 1}}}))
    encode_documents(tiny_model, documents, tmp_path / "again", block_size=3, resume_dir=partial)
    assert vectors_of(tmp_path / "again") == vectors_of(tmp_path / "reference")


def test_a_killed_index_leaves_no_orphan_and_a_rerun_gives_the_same_index(tiny_checkpoint, data, tmp_path):
    corpus, topics, _ = data
    spec = f"csplade:{tiny_checkpoint}"
    encode(spec, corpus, tmp_path / "vectors")
    index = ["-m", "csplade_pyserini.index", "--input", str(tmp_path / "vectors"), "--threads", "1"]
    run_python(*index, "--index", str(tmp_path / "reference"))
    process = subprocess.Popen([sys.executable, *index, "--index", str(tmp_path / "out")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    java = str(tmp_path / ".out.")  # the Anserini child writes into the temporary index folder

    def children() -> list[str]:
        found = subprocess.run(["pgrep", "-f", java], capture_output=True, text=True).stdout.split()
        return [pid for pid in found if int(pid) != process.pid]

    for _ in range(6000):  # until Anserini runs
        if children() or process.poll() is not None:
            break
        time.sleep(0.01)
    assert process.poll() is None, "the index finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    for _ in range(100):
        if not children():
            break
        time.sleep(0.05)
    assert children() == []  # the Anserini child died with its parent
    assert not (tmp_path / "out").exists()  # nothing partial where the index belongs
    run_python(*index, "--index", str(tmp_path / "out"))
    runs = {}
    for name in ("reference", "out"):
        run_python("-m", "csplade_pyserini.search", "--index", str(tmp_path / name), "--topics", str(topics),
                   "--encoder", spec, "--output", str(tmp_path / f"run.{name}.txt"), "--threads", "1")
        runs[name] = [line.split()[:5] for line in (tmp_path / f"run.{name}.txt").read_text().splitlines()]
    assert runs["out"] == runs["reference"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")] == []


# --- concurrency -------------------------------------------------------------------------------------
def test_a_second_writer_of_the_same_output_is_refused(tiny_checkpoint, data, tmp_path):
    corpus, _, _ = data
    (tmp_path / "out.lock").write_text(f"{os.getpid()}\n")  # a live writer (this test process)
    result = encode(f"csplade:{tiny_checkpoint}", corpus, tmp_path / "out", check=False)
    assert result.returncode == 2 and "another process" in result.stderr and not (tmp_path / "out").exists()


# --- the user's umask ----------------------------------------------------------------------------------
def test_outputs_get_the_users_umask(tmp_path):
    from csplade_pyserini.atomic import atomic_dir, atomic_file

    old = os.umask(0o022)
    try:
        with atomic_dir(tmp_path / "folder") as tmp:
            (tmp / "x").write_text("x")
        with atomic_file(tmp_path / "file.txt") as handle:
            handle.write("y")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "folder").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "file.txt").stat().st_mode) == 0o644


def test_a_full_disk_is_one_line(tmp_path):
    code = ("import errno, os\nfrom csplade_pyserini.cli import run_cli\n"
            "def main(argv): raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), 'encode/x/docs-00000.jsonl')\n"
            "run_cli(main)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: No space left on device while writing encode/x/docs-00000.jsonl"
    code = code.replace("errno.ENOSPC, os.strerror(errno.ENOSPC)", "errno.ENOENT, 'bug'")
    assert "Traceback" in subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stderr


def test_an_index_anserini_could_not_write_is_refused_with_its_cause(tiny_checkpoint, data, tmp_path, monkeypatch):
    from csplade_pyserini import index
    from csplade_pyserini.errors import CspladeError

    corpus, _, _ = data
    encode(f"csplade:{tiny_checkpoint}", corpus, tmp_path / "vectors")
    monkeypatch.setattr(index, "run_anserini", lambda command, log_path: log_path.write_text("") or {})
    with pytest.raises(CspladeError, match="disk is probably full"):
        index.build_index(tmp_path / "vectors", tmp_path / "index")
    assert not (tmp_path / "index").exists()


def test_a_damaged_checkpoint_is_refused_in_one_line_before_resuming(tmp_path):
    import torch
    from safetensors.torch import save_file

    from csplade_pyserini.train.trainer import check_resumable

    good = tmp_path / "checkpoint-4"
    good.mkdir()
    save_file({"w": torch.arange(1000.0)}, str(good / "trainable.safetensors"))
    (good / "trainer_state.json").write_text('{"global_step": 4}')
    check_resumable(good)
    check_resumable(None)
    truncated = tmp_path / "checkpoint-8"
    truncated.mkdir()
    data = (good / "trainable.safetensors").read_bytes()
    (truncated / "trainable.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="unreadable weights") as info:
        check_resumable(truncated)
    assert info.value.path == str(truncated / "trainable.safetensors")
    (good / "trainer_state.json").write_text('{"global_step": 4')
    with pytest.raises(InputError, match="not a readable trainer state"):
        check_resumable(good)
    with pytest.raises(InputError, match="no such checkpoint"):
        check_resumable(tmp_path / "missing")
