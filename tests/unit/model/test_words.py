"""The word channel (``model/words.py``): analysis, BM25 saturation, the term-frequency head, its training
objective, and the channel through the real encode -> Anserini -> search path."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch
from conftest import WORDS

from csplade_pyserini.errors import InputError
from csplade_pyserini.model.card import ModelCard
from csplade_pyserini.model.words import (
    TermFrequencyHead,
    WordAnalyzer,
    bm25_saturation,
)


def test_analyzer_lowercases_drops_stop_words_and_stems_like_lucene():
    words = WordAnalyzer().words("The Cells' infections are growing; s.")
    # 'the', 'are' are Lucene stop words... 'are' is one, 'the' too; 's' (two chars or fewer) is kept unstemmed
    assert [w for w, _ in words] == ["cell", "infect", "grow", "s"]
    text = "The Cells' infections are growing; s."
    assert [text[end - 1] for _, end in words] == ["s", "s", "g", "s"]  # ends point just past each word


def test_bm25_saturation_hand_computed():
    tf = torch.tensor([1.0, 2.0, 0.5])
    length = torch.tensor([100.0, 50.0, 200.0])
    got = bm25_saturation(tf, length, 0.9, 0.4, 100.0).tolist()
    # 1*1.9/(1+0.9*1) ; 2*1.9/(2+0.9*(0.6+0.2)) ; 0.5*1.9/(0.5+0.9*(0.6+0.8))
    want = [1.0, 3.8 / 2.72, 0.95 / (0.5 + 0.9 * 1.4)]
    assert got == pytest.approx(want, rel=1e-6)


def test_untrained_head_counts_every_occurrence_once():
    head = TermFrequencyHead(8, 4)
    states = torch.randn(5, 8)
    assert head(states).tolist() == [1.0] * 5
    torch.nn.init.normal_(head.out.weight)
    assert not torch.allclose(head(states), torch.ones(5))


def test_card_refuses_mixing_the_word_channel_with_vocabulary_channels():
    ModelCard(**WORDS)
    with pytest.raises(InputError, match="lexical_head"):
        ModelCard(**WORDS, lexical_head="lexical_head.safetensors", lexical_layer=1)
    with pytest.raises(InputError, match="expansion true"):  # an LM-head file needs the LM-head channel on
        ModelCard(**WORDS, logit_bias="logit_bias.safetensors")
    joined = ModelCard(**{**WORDS, "expansion": True}, context_layer=4, context_head="context_head.safetensors",
                       logit_bias="logit_bias.safetensors", tf_head="tf_head.safetensors", tf_layer=4,
                       expansion_weight=0.04, query_top_k=64)
    lm_head = joined.expansion_card()
    assert not lm_head.is_words and lm_head.query_side == "model" and lm_head.tf_head is None
    assert (lm_head.context_head, lm_head.logit_bias, lm_head.query_top_k) == (joined.context_head, joined.logit_bias, 64)
    assert lm_head.expansion_weight == 1.0  # the joined card's weight applies where the channels meet
    with pytest.raises(InputError, match="expansion"):
        ModelCard(**WORDS).expansion_card()
    with pytest.raises(InputError, match="query_side"):
        ModelCard(**{**WORDS, "query_side": "model"})
    with pytest.raises(InputError, match="tf_layer"):
        ModelCard(**WORDS, tf_head="tf_head.safetensors")
    with pytest.raises(InputError, match="term_scheme"):
        ModelCard(term_scheme="nonsense")
    with pytest.raises(InputError, match="tf_head"):
        ModelCard(tf_head="x.safetensors", tf_layer=1)


def test_impacts_are_bm25_of_the_heads_counts_and_words_past_the_window_count_one(words_checkpoint, one_thread):
    from csplade_pyserini.model.encoder import CspladeModel

    model = CspladeModel.from_spec(f"csplade:{words_checkpoint}", cache=False)
    encoder = model.encoder
    text = "cells cells grow in blood " + "protein " * 30 + "cells"
    [document], [sequence] = encoder.analyse([text])
    assert len(sequence) == 16 and document.positions[-1] == -1  # the last 'cells' is past the window
    [states] = encoder.occurrence_states([sequence], [document.positions])
    counts = encoder.tf_head(states)
    assert not torch.allclose(counts, torch.ones_like(counts))
    inside = [p >= 0 for p in document.positions]
    per_term: dict[str, float] = {}
    read = iter(counts.tolist())
    for term, is_inside in zip(document.terms, inside):
        per_term[term] = per_term.get(term, 0.0) + (next(read) if is_inside else 1.0)
    length = len(document.terms)
    want = {t: tf * 1.9 / (tf + 0.9 * (0.6 + 0.4 * length / 10.0)) for t, tf in per_term.items()}
    [vector] = model.encode([text])
    assert vector == {t: round(w * 100) for t, w in want.items() if round(w * 100) > 0}
    # the block path of the encode command gives the same vector
    vectors, tokens = model.encode_documents([text])
    assert vectors == [vector] and tokens == 16


def test_average_length_counts_analysed_words():
    from csplade_pyserini.model.words import average_length

    # 'the' and 'and' are stop words: 2 + 1 + 0 words
    assert average_length(["The cells grow", "and blood", "the"]) == 1.0
    assert average_length([]) == 0.0


def test_encoding_uses_the_collections_avgdl_unless_the_spec_sets_it(words_checkpoint, tmp_path, one_thread):
    from csplade_pyserini.encode import main as encode_main
    from csplade_pyserini.model.encoder import CspladeModel

    spec = f"csplade:{words_checkpoint}"
    model = CspladeModel.from_spec(spec, cache=False)
    texts = ["cells grow in blood", "protein protein cells", "blood"]  # 3 + 3 + 1 words
    measured = model.for_collection(texts, spec)
    assert measured.card.bm25_avgdl == round(7 / 3, 1) and model.card.bm25_avgdl == 10.0
    assert measured.encoder.tf_head is model.encoder.tf_head  # the weights are shared, not copied
    with torch.no_grad():
        counts = model.encoder.tf_head(model.encoder.occurrence_states(*_read(model, "blood"))[0])
    want = float(counts[0]) * 1.9 / (float(counts[0]) + 0.9 * (0.6 + 0.4 * 1 / 2.3))
    assert measured.encode(["blood"]) == [{"blood": round(want * 100)}]
    pinned = f"{spec},bm25_avgdl=10"
    assert CspladeModel.from_spec(pinned, cache=False).for_collection(texts, pinned).card.bm25_avgdl == 10.0
    # the encode command measures the whole corpus, so every shard of it gets the same avgdl
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    for shard in (0, 1):
        assert encode_main(["--corpus", str(corpus), "--embeddings", str(tmp_path / "vectors"), "--encoder", spec,
                            "--shard-id", str(shard), "--shard-num", "2"]) == 0
    from csplade_pyserini.vectors.jsonvec import part_info_path

    infos = [part_info_path(tmp_path / "vectors", shard, 2) for shard in (0, 1)]
    assert [json.loads(p.read_text())["card"]["bm25_avgdl"] for p in infos] == [2.3, 2.3]


def _read(model, text):
    [document], [sequence] = model.encoder.analyse([text])
    return [sequence], [document.positions]


def test_query_side_is_count_times_idf(words_checkpoint):
    from csplade_pyserini.model.encoder import CspladeModel

    model = CspladeModel.from_spec(f"csplade:{words_checkpoint}", cache=False)
    idf = {"cell": 2.0, "grow": 0.5, "blood": 0.0}
    assert model.idf_token_vectors(["Cells, cells growing in the blood; protein"], idf) == [{"cell": 120, "grow": 15}]
    with pytest.raises(InputError, match="idf"):
        model.encode(["cells"], kind="query")


def test_objective_masks_other_relevant_documents_and_pulls_towards_bm25():
    from csplade_pyserini.train.word_channel import (
        CorpusFeatures,
        Group,
        WordChannelObjective,
    )

    torch.manual_seed(0)
    terms = [["a", "b"], ["a", "c", "c"], ["b", "d"], ["d"]]
    positions = [[0, 1], [0, 1, -1], [0, 1], [0]]
    features = CorpusFeatures(["d0", "d1", "d2", "d3"], terms, positions, torch.randn(7, 4).half())
    card = ModelCard(**WORDS, bm25_avgdl=2.0)
    head = TermFrequencyHead(4, 3)
    queries = torch.zeros(2, len(features.vocabulary))
    queries[0, features.vocabulary["a"]] = 1.0
    queries[1, features.vocabulary["d"]] = 1.0
    groups = [Group(0, [0], {0, 1}, [1, 2]), Group(1, [3], {3}, [0])]
    objective = WordChannelObjective(head, card, scale=1.0, reg=0.5)
    parts = objective(features, queries, groups, negatives=2, rng=random.Random(0))
    # at g = 0 the scores are BM25's. The batch's documents, drawn as the objective draws them: query 0's
    # positive, 2 of its negatives, query 1's positive and its one negative (d0 again)
    rng = random.Random(0)
    docs = [rng.choice([0]), *rng.sample([1, 2], 2), rng.choice([3]), *rng.sample([0], 1)]
    row, term, weight, logs = features.document_weights(None, card, torch.tensor(docs))
    scores = torch.zeros(2, len(docs)).index_add(1, row, queries[:, term] * weight)
    # query 0 counts neither d1 (judged relevant) nor the second copy of its own positive among its negatives
    kept0 = [j for j, d in enumerate(docs) if j == 0 or d not in (0, 1)]
    logits0, logits1 = scores[0, kept0], scores[1]
    want = (-(logits0[0] - torch.logsumexp(logits0, 0)) - (logits1[3] - torch.logsumexp(logits1, 0))) / 2
    assert float(parts["infonce"]) == pytest.approx(float(want), rel=1e-5)
    assert float(parts["reg"]) == 0.0 and float(parts["loss"]) == pytest.approx(float(want), rel=1e-5)
    torch.nn.init.normal_(head.out.weight)
    parts = objective(features, queries, groups, negatives=2, rng=random.Random(0))
    assert float(parts["reg"]) > 0 and float(parts["loss"]) > float(parts["infonce"])


def test_idf_and_exact_ranking_of_corpus_features():
    from csplade_pyserini.train.word_channel import CorpusFeatures

    features = CorpusFeatures(["d0", "d1", "d2"], [["cell", "blood"], ["cell"], ["grow", "grow"]],
                              [[0, 0], [0], [0, 0]], torch.zeros(5, 2).half())
    assert features.idf[features.vocabulary["cell"]].item() == pytest.approx(math.log(3 / 2))
    card = ModelCard(**WORDS, bm25_avgdl=2.0)
    run = features.rank(None, card, {"q": "Cells and blood"}, WordAnalyzer())
    assert list(run["q"]) == ["d0", "d1"]  # d0 holds both words


def test_the_feature_cache_is_reused_only_for_the_same_documents_and_model(words_checkpoint, tmp_path, monkeypatch):
    from csplade_pyserini.datasets import Document
    from csplade_pyserini.model.encoder import CspladeModel
    from csplade_pyserini.train.word_channel import CorpusFeatures

    encoder = CspladeModel.from_spec(f"csplade:{words_checkpoint}", cache=False).encoder
    documents = [Document("d1", "", "cells grow"), Document("d2", "", "blood cells")]
    cache = tmp_path / "c.pt"
    first = CorpusFeatures.build(encoder, documents, cache)
    calls = []
    original = type(encoder).occurrence_states
    monkeypatch.setattr(type(encoder), "occurrence_states", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    again = CorpusFeatures.build(encoder, documents, cache)
    assert calls == [] and torch.equal(again.states, first.states)
    changed = CorpusFeatures.build(encoder, [Document("d1", "", "cells grow"), Document("d2", "", "red blood")], cache)
    assert calls == [1] and "red" in changed.vocabulary




@pytest.fixture(scope="module")
def joined_checkpoint(words_checkpoint, tmp_path_factory):
    """``words_checkpoint`` with a random LM-head channel beside it (context map on layer 1, logit bias)."""
    import shutil

    from csplade_pyserini.model.context import ContextHead
    from csplade_pyserini.model.logit_bias import save_logit_bias

    folder = tmp_path_factory.mktemp("joined") / "ckpt"
    shutil.copytree(words_checkpoint, folder)
    torch.manual_seed(5)
    context = ContextHead(32)
    torch.nn.init.normal_(context.map.weight, std=0.2)
    card = ModelCard.load(folder)
    vocab = json.loads((folder / "config.json").read_text())["vocab_size"]
    card.replace(expansion=True, context_layer=1, context_head=context.save(folder), query_top_k=6, doc_top_k=12,
                 logit_bias=save_logit_bias(torch.full((vocab,), 1.0), folder), expansion_weight=0.25,
                 quant_scale=1000.0).save(folder)
    return folder


def test_expansion_adds_the_lm_head_channels_terms_at_the_cards_weight(words_checkpoint, joined_checkpoint, one_thread):
    """Documents: the word channel's impacts unchanged, plus ``lm_`` + each vocabulary term the LM-head channel
    (a model of its own card) weighs, ``round(weight x quant_scale x expansion_weight)``. Queries: the words'
    count x idf, plus the LM-head channel's query terms the index holds at ``round(30 x weight)``."""
    from csplade_pyserini.model.encoder import EXPANSION_PREFIX, CspladeModel
    from csplade_pyserini.vectors.quantize import quantize_weight

    joined = CspladeModel.from_spec(f"csplade:{joined_checkpoint}", cache=False)
    words = CspladeModel.from_spec(f"csplade:{words_checkpoint},quant_scale=1000", cache=False)
    lm_head = CspladeModel.from_card(joined.card.expansion_card(), joined_checkpoint)
    texts = ["Cells grow in blood.", "The protein binds DNA in mice and men."]
    vectors, _ = joined.encode_documents(texts)
    for vector, alone, (ids, weights) in zip(vectors, words.encode_documents(texts)[0],
                                             lm_head.encode_weights(texts, "doc")):
        assert {t: w for t, w in vector.items() if not t.startswith(EXPANSION_PREFIX)} == alone
        want = {EXPANSION_PREFIX + lm_head.term_map.terms[i]: quantize_weight(float(w), 1000.0 * 0.25)
                for i, w in zip(ids.tolist(), weights.tolist())}
        assert {t: w for t, w in vector.items() if t.startswith(EXPANSION_PREFIX)} == {t: w for t, w in want.items() if w}
        assert 0 < len(want) <= 12
    [(ids, weights)] = lm_head.encode_weights(["cells growing"], "query")
    pieces = {EXPANSION_PREFIX + lm_head.term_map.terms[i]: quantize_weight(float(w), 30.0)
              for i, w in zip(ids.tolist(), weights.tolist())}
    held = sorted(pieces)[:3]
    idf = {"cell": 2.0, "grow": 0.5, **{t: 1.0 for t in held}}
    assert joined.idf_token_vectors(["cells growing"], idf) == [{"cell": 60, "grow": 15, **{t: pieces[t] for t in held}}]
    assert joined.term_fingerprint() != words.term_fingerprint()
    pinned = joined.with_card(bm25_avgdl=3.0, doc_top_k=4)  # a changed card reaches the channel beside
    assert pinned.expansion.card.doc_top_k == 4 and pinned.expansion.encoder.model is joined.expansion.encoder.model
