"""Through real Anserini with the literal Pyserini commands, on a real SciFact slice.

A tiny random Llama with the SmolLM2 tokenizer stands in for the backbone: effectiveness is
meaningless, but every piece a user touches is real (the hook, pyserini.encode, Anserini's impact
index, LuceneImpactSearcher, trec_eval, ir-measures).
"""

from __future__ import annotations

import json
import re

import pytest
from conftest import run_python, scifact_slice

from csplade_pyserini.evaluate.measures import evaluate_run, measures_for


@pytest.fixture(scope="module")
def literal_pipeline(tmp_path_factory, tiny_checkpoint):
    """encode -> index -> search -> trec_eval, exactly as a Pyserini user types them."""
    work = tmp_path_factory.mktemp("literal")
    corpus, topics, qrels = scifact_slice(work)
    spec = f"csplade:{tiny_checkpoint}"
    run_python("-m", "pyserini.encode", "input", "--corpus", str(corpus), "--fields", "title", "text",
               "output", "--embeddings", str(work / "vectors"), "encoder", "--encoder", spec,
               "--fields", "title", "text", "--device", "cpu")
    run_python("-m", "pyserini.index.lucene", "--collection", "JsonVectorCollection", "--input", str(work / "vectors"),
               "--index", str(work / "index"), "--generator", "DefaultLuceneDocumentGenerator", "--impact",
               "--pretokenized")
    run_python("-m", "pyserini.search.lucene", "--index", str(work / "index"), "--topics", "beir-v1.0.0-scifact.test",
               "--encoder", spec, "--impact", "--output", str(work / "run.txt"), "--hits", "1000")
    return {"work": work, "corpus": corpus, "topics": topics, "qrels": qrels, "spec": spec}


def test_pyserini_encode_writes_integer_impacts(literal_pipeline):
    lines = (literal_pipeline["work"] / "vectors" / "embeddings.jsonl").read_text().splitlines()
    docs = sum(1 for _ in open(literal_pipeline["corpus"] / "corpus.jsonl"))
    assert len(lines) == docs
    for line in lines:
        record = json.loads(line)
        assert set(record) == {"id", "contents", "vector"}
        assert record["vector"] and all(isinstance(w, int) and w > 0 for w in record["vector"].values())
        assert not any(any(c.isspace() for c in t) for t in record["vector"])


def test_search_by_topic_name_covers_all_test_queries(literal_pipeline):
    run = (literal_pipeline["work"] / "run.txt").read_text().splitlines()
    assert len({line.split()[0] for line in run}) == 300
    assert all(len(line.split()) == 6 and line.split()[1] == "Q0" for line in run)


def test_trec_eval_and_ir_measures_agree(literal_pipeline):
    run_path = literal_pipeline["work"] / "run.txt"
    result = run_python("-m", "pyserini.eval.trec_eval", "-c", "-m", "ndcg_cut.10", "-m", "recall.100",
                        "beir-v1.0.0-scifact.test", str(run_path))
    theirs = {m: float(v) for m, v in re.findall(r"^(ndcg_cut_10|recall_100)\s+all\s+([0-9.]+)", result.stdout, re.M)}
    ours = evaluate_run(run_path, "beir-v1.0.0-scifact.test", measures_for("beir-v1.0.0-scifact.test"))
    assert ours["nDCG@10"] == pytest.approx(theirs["ndcg_cut_10"], abs=1e-4)
    assert ours["R@100"] == pytest.approx(theirs["recall_100"], abs=1e-4)
    assert ours["R@100"] > 0  # the judged documents of the slice are retrievable


@pytest.fixture(scope="module")
def our_index(literal_pipeline):
    """The same slice through our encode and index CLIs (the index records the model that built it)."""
    work, spec = literal_pipeline["work"], literal_pipeline["spec"]
    run_python("-m", "csplade_pyserini.encode", "--corpus", str(literal_pipeline["corpus"]), "--embeddings",
               str(work / "ours-vectors"), "--encoder", spec, "--threads", "1")
    run_python("-m", "csplade_pyserini.index", "--input", str(work / "ours-vectors"), "--index",
               str(work / "ours-index"), "--threads", "1")
    return work / "ours-index"


def test_our_clis_reproduce_the_literal_commands(literal_pipeline, our_index):
    work, spec = literal_pipeline["work"], literal_pipeline["spec"]
    literal = {json.loads(l)["id"]: json.loads(l)["vector"] for l in open(work / "vectors" / "embeddings.jsonl")}
    ours = {}
    for path in sorted((work / "ours-vectors").glob("*.jsonl")):
        for line in open(path):
            record = json.loads(line)
            ours[record["id"]] = record["vector"]
    assert ours.keys() == literal.keys()
    differing = [d for d in ours if ours[d] != literal[d]]
    assert len(differing) <= len(ours) // 10  # batch composition may flip a rounding at the 0.5 boundary
    info = json.loads((work / "ours-index" / "csplade-index.info").read_text())
    assert info["index"]["documents"] == len(ours) and info["term_fingerprint"]
    run_python("-m", "csplade_pyserini.search", "--index", str(work / "ours-index"), "--topics",
               str(literal_pipeline["topics"]), "--encoder", spec, "--output", str(work / "ours-run.txt"),
               "--hits", "100", "--threads", "1")
    run = (work / "ours-run.txt").read_text().splitlines()
    topics = literal_pipeline["topics"].read_text().splitlines()
    assert {l.split()[0] for l in run} == {t.split("\t")[0] for t in topics}
    result = run_python("-m", "csplade_pyserini.evaluate", "--run", str(work / "ours-run.txt"), "--qrels",
                        str(literal_pipeline["qrels"]))
    assert "nDCG@10" in result.stdout


def test_onnx_runtime_query_side_gives_the_same_run(literal_pipeline, tmp_path):
    """The literal search with the query encoder in ONNX Runtime (``runtime=onnx``, exported on first use into
    the cache): the same run file as PyTorch's, the index check passing unchanged."""
    work = literal_pipeline["work"]
    run_python("-m", "pyserini.search.lucene", "--index", str(work / "index"), "--topics", "beir-v1.0.0-scifact.test",
               "--encoder", literal_pipeline["spec"] + ",runtime=onnx", "--impact", "--output",
               str(tmp_path / "onnx-run.txt"), "--hits", "1000", env={"CSPLADE_CACHE": str(tmp_path / "cache")})
    assert list((tmp_path / "cache" / "onnx").iterdir())  # exported once, there
    assert (tmp_path / "onnx-run.txt").read_text() == (work / "run.txt").read_text()


def test_query_vocabulary_must_match_the_index(literal_pipeline, tmp_path):
    vectors = tmp_path / "bert-vectors"
    vectors.mkdir()
    (vectors / "docs.jsonl").write_text("".join(
        json.dumps({"id": f"d{i}", "contents": "", "vector": {"##ing": 3, "the": 2, f"[unused{i}]": 1}}) + "\n"
        for i in range(5)))
    run_python("-m", "pyserini.index.lucene", "--collection", "JsonVectorCollection", "--input", str(vectors),
               "--index", str(tmp_path / "bert-index"), "--generator", "DefaultLuceneDocumentGenerator",
               "--impact", "--pretokenized")
    result = run_python("-m", "pyserini.search.lucene", "--index", str(tmp_path / "bert-index"), "--topics",
                        str(literal_pipeline["topics"]), "--encoder", literal_pipeline["spec"], "--impact",
                        "--output", str(tmp_path / "run.txt"), check=False)
    assert result.returncode != 0 and "not in the query encoder's vocabulary" in result.stderr
    assert not (tmp_path / "run.txt").exists()


def test_unknown_model_and_malformed_spec_fail_clearly(literal_pipeline, tmp_path):
    for spec, message in [("csplade:/no/such/model", "model path does not exist"),
                          ("csplade,variant=sideways", "unknown variant")]:
        result = run_python("-m", "csplade_pyserini.search", "--index", str(literal_pipeline["work"] / "index"),
                            "--topics", str(literal_pipeline["topics"]), "--encoder", spec, "--output",
                            str(tmp_path / "run.txt"), check=False)
        assert result.returncode == 2 and message in result.stderr
        assert not (tmp_path / "run.txt").exists()


def test_bad_corpus_leaves_no_vectors(tiny_checkpoint, tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"_id": "1", "text": "a"}\n{"_id": "1", "text": "b"}\n')
    result = run_python("-m", "csplade_pyserini.encode", "--corpus", str(corpus), "--embeddings",
                        str(tmp_path / "vectors"), "--encoder", f"csplade:{tiny_checkpoint}", check=False)
    assert result.returncode == 2 and f"{corpus}:2" in result.stderr and "duplicate" in result.stderr
    assert not (tmp_path / "vectors").exists()


def test_failed_indexing_leaves_no_index(tmp_path):
    vectors = tmp_path / "vectors"
    vectors.mkdir()
    (vectors / "docs.jsonl").write_text('{"id": "d1", "contents": "", "vector": {"a": 0.5}}\n')
    result = run_python("-m", "csplade_pyserini.index", "--input", str(vectors), "--index", str(tmp_path / "index"),
                        check=False)
    assert result.returncode == 2 and "docs.jsonl:1" in result.stderr and "integers" in result.stderr
    assert not (tmp_path / "index").exists()


def test_pre_encoded_queries_give_the_same_run(literal_pipeline, tmp_path):
    """Pyserini's own pre-encoded query path (``--encoder FILE.jsonl``) repeats the on-the-fly run exactly."""
    work, spec = literal_pipeline["work"], literal_pipeline["spec"]
    queries = tmp_path / "queries.csplade.jsonl"
    run_python("-m", "csplade_pyserini.encode_queries", "--topics", "beir-v1.0.0-scifact.test", "--encoder", spec,
               "--output", str(queries), "--threads", "1")
    records = [json.loads(line) for line in queries.read_text().splitlines()]
    assert len(records) == 300 and all(set(r) == {"id", "contents", "vector"} for r in records)
    assert all(isinstance(w, int) and w > 0 for r in records for w in r["vector"].values())
    run_python("-m", "pyserini.search.lucene", "--index", str(work / "index"), "--topics", "beir-v1.0.0-scifact.test",
               "--encoder", str(queries), "--impact", "--output", str(tmp_path / "run.txt"), "--hits", "1000")
    assert (tmp_path / "run.txt").read_text() == (work / "run.txt").read_text()
    run_python("-m", "csplade_pyserini.search", "--index", str(work / "index"), "--topics", "beir-v1.0.0-scifact.test",
               "--encoder", str(queries), "--output", str(tmp_path / "ours.txt"), "--hits", "1000", "--threads", "1")
    ours = {(l.split()[0], l.split()[2]) for l in (tmp_path / "ours.txt").read_text().splitlines()}
    assert ours == {(l.split()[0], l.split()[2]) for l in (work / "run.txt").read_text().splitlines()}


def test_pre_encoded_queries_of_another_model_are_refused(literal_pipeline, our_index, tmp_path):
    """Against an index our ``index`` built (it records the model), as a live query encoder would be."""
    spec = literal_pipeline["spec"]
    queries = tmp_path / "echo-queries.jsonl"
    run_python("-m", "csplade_pyserini.encode_queries", "--topics", str(literal_pipeline["topics"]), "--encoder",
               spec + ",variant=echo", "--output", str(queries), "--threads", "1")
    result = run_python("-m", "pyserini.search.lucene", "--index", str(our_index), "--topics",
                        str(literal_pipeline["topics"]), "--encoder", str(queries), "--impact",
                        "--output", str(tmp_path / "run.txt"), check=False)
    assert result.returncode != 0 and "variant: 'causal' (index) vs 'echo'" in result.stderr
    assert not (tmp_path / "run.txt").exists()
    broken = tmp_path / "broken.jsonl"
    broken.write_text(queries.read_text().splitlines()[0] + "\n" + '{"id": "q2", "contents": "x"}\n')
    (tmp_path / "broken.jsonl.info.json").write_text((tmp_path / "echo-queries.jsonl.info.json").read_text())
    result = run_python("-m", "csplade_pyserini.search", "--index", str(our_index), "--topics",
                        str(literal_pipeline["topics"]), "--encoder", str(broken), "--output", str(tmp_path / "r.txt"),
                        check=False)
    assert result.returncode != 0 and "broken.jsonl:2, field 'vector'" in result.stderr


def test_inference_free_query_side_weights_query_tokens_by_the_index_idf(literal_pipeline, tmp_path):
    """``query_side=idf-tokens``: a query is its own tokens (prefix dropped) weighted round(30 x idf) of the
    searched index, through the literal search command; documents are the model's."""
    from pyserini.search.lucene import LuceneImpactSearcher

    from csplade_pyserini.model.encoder import IDF_TOKEN_SCALE

    work, spec = literal_pipeline["work"], literal_pipeline["spec"] + ",query_side=idf-tokens"
    run_python("-m", "pyserini.search.lucene", "--index", str(work / "index"), "--topics", "beir-v1.0.0-scifact.test",
               "--encoder", spec, "--impact", "--output", str(tmp_path / "run.txt"), "--hits", "100")
    assert len({line.split()[0] for line in (tmp_path / "run.txt").read_text().splitlines()}) == 300
    searcher = LuceneImpactSearcher(str(work / "index"), spec)
    encoder = searcher.query_encoder
    text = "Cells divide by mitosis"
    ids = encoder.model.encoder.tokenize([text], "query")[0]
    tokens = [encoder.model.term_map.terms[i] for i in ids[encoder.model.encoder.prefix_length(ids, "query"):]]
    expected = {t: max(1, round(IDF_TOKEN_SCALE * searcher.idf[t])) for t in tokens if t in searcher.idf}
    assert expected and encoder.encode(text) == expected
    searcher.close()


def test_seismic_configured_for_exactness_returns_the_exact_lucene_top10(literal_pipeline, our_index, tmp_path):
    pytest.importorskip("seismic")  # pyseismic-lsr: in the test extras
    work, spec = literal_pipeline["work"], literal_pipeline["spec"]
    common = ["--topics", str(literal_pipeline["topics"]), "--encoder", spec, "--hits", "10", "--threads", "1"]
    run_python("-m", "csplade_pyserini.search", "--index", str(our_index), "--output", str(tmp_path / "lucene.txt"),
               *common)
    run_python("-m", "csplade_pyserini.search", "--engine", "seismic", "--seismic-exact", "--index",
               str(work / "ours-vectors"), "--output", str(tmp_path / "seismic.txt"), *common)

    def ranked(path):
        out: dict[str, list[tuple[str, float]]] = {}
        for line in path.read_text().splitlines():
            qid, _, docid, _, score, _ = line.split()
            out.setdefault(qid, []).append((docid, float(score)))
        return out

    lucene, seismic = ranked(tmp_path / "lucene.txt"), ranked(tmp_path / "seismic.txt")
    assert lucene.keys() == seismic.keys() and len(lucene) == 12
    for qid in lucene:
        assert [s for _, s in seismic[qid]] == pytest.approx([s for _, s in lucene[qid]])  # the same scores
        tenth = lucene[qid][-1][1]  # documents tied with the 10th may be cut either way
        assert {d for d, s in lucene[qid] if s > tenth} <= {d for d, _ in seismic[qid]}
    # the model check applies to the vectors as to a Lucene index
    result = run_python("-m", "csplade_pyserini.search", "--engine", "seismic", "--index", str(work / "ours-vectors"),
                        "--output", str(tmp_path / "x.txt"), *common[:2], "--encoder", spec + ",variant=echo",
                        check=False)
    assert result.returncode != 0 and "variant: 'causal' (index) vs 'echo'" in result.stderr
