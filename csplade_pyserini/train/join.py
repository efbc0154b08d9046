"""The word channel with the LM-head channel beside it: one model whose documents carry analysed words and
LM-head vocabulary terms, the second weighed against the first on validation.

    python -m csplade_pyserini.train join --words runs/train/words/model/best --lm-head runs/train/pure/model/best \\
        --data ../shared/data/beir/scifact --data ../shared/data/beir/nfcorpus --output-dir runs/train/default

Both channels come trained (``train words``, ``train pure``); nothing is trained here. Their scores add up in
one impact index: ``score = sum_words idf x impact + w x sum_terms query weight x LM-head weight``, with ``w``
the card's ``expansion_weight`` on the documents' LM-head weights. Each domain's validation queries (the same
held-out train queries or dev split the channel trainers validated on) are ranked against their whole corpus
exactly, with the integer vectors the index would hold at each ``w`` of ``--weights``; the best mean nDCG@10
is kept (``0`` is the word channel alone, kept as it is when nothing beats it). Nothing of the zero-shot
suite's collections is read.
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from csplade_pyserini.errors import InputError
from csplade_pyserini.train.config import option
from csplade_pyserini.train.domains import Domain, parse_options, start_run, validate_domains, write_model

logger = logging.getLogger(__name__)

# What both channels must agree on to share one text's reading; the LM-head card's other fields come along.
SHARED_FIELDS = ("backbone", "adapter", "tokenizer", "variant", "add_bos", "query_prefix", "doc_prefix",
                 "max_query_length", "max_doc_length", "padding_side")
LM_HEAD_FIELDS = ("logit_scale", "logit_bias", "context_layer", "context_head", "query_top_k", "doc_top_k")


@dataclass
class JoinArguments:
    """Every option of ``train join`` (``HfArgumentParser``: each field a flag with its default and help)."""

    words: str = field(metadata=option("the trained word channel (train words' model/best)"))
    lm_head: str = field(metadata=option("the trained LM-head channel (train pure's model/best)"))
    data: list[str] = field(metadata=option("BEIR folders whose validation queries choose the weight (those the "
                                           "channels were trained on)", action="extend"))
    output_dir: str = field(metadata=option("where the joined model (model/best) and the log go"))
    weights: list[float] = field(default_factory=lambda: [0.0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.1],
                                 metadata=option("expansion_weight values tried (0: the word channel alone)"))
    quant_scale: float = field(default=1000.0, metadata=option(
        "integer impact = round(weight x quant_scale): the LM-head weights enter at a small fraction of it"))
    held_out: int = field(default=100, metadata=option("train queries held out to validate a domain without a dev "
                                                      "split (as the channel trainers held them out)"))
    seed: int = field(default=42, metadata=option("the held-out queries' seed (as the channel trainers drew them)"))
    threads: int = field(default=0, metadata=option("torch threads (0: every core)"))
    device: str = field(default="cpu", metadata=option("where the channels encode the validation corpora"))
    overwrite_output_dir: bool = field(default=False, metadata=option(
        "replace the model and log an earlier run left in --output-dir"))


def parse_arguments(argv: list[str] | None) -> JoinArguments:
    return parse_options(JoinArguments, "python -m csplade_pyserini.train join", __doc__, argv)


def joined_card(words, lm_head, quant_scale: float):
    """The word channel's card with the LM-head channel's fields and ``expansion`` on; a field both read the text
    by that differs is refused by name."""
    if not words.is_words or words.expansion:
        raise InputError("--words must name a word channel without expansion (train words' model)", field="words")
    if lm_head.is_words or lm_head.is_dense or lm_head.lexical_head is not None or not lm_head.expansion:
        raise InputError("--lm-head must name an LM-head channel alone (train pure's model)", field="lm_head")
    for name in SHARED_FIELDS:
        if getattr(words, name) != getattr(lm_head, name):
            raise InputError(f"the channels read texts differently: {name} {getattr(words, name)!r} (words) vs "
                             f"{getattr(lm_head, name)!r} (LM head)", field=name)
    card = words.replace(expansion=True, quant_scale=quant_scale, **{n: getattr(lm_head, n) for n in LM_HEAD_FIELDS})
    return card


def scores_by_weight(model, domain: Domain, weights: list[float]) -> dict[float, dict[str, dict[str, float]]]:
    """Each validation query's ten best documents of ``domain``'s corpus at every weight, scored exactly as the
    impact index would (integer vectors; idf ``log(N / df)`` over the indexed words)."""
    import numpy as np
    import scipy.sparse as sp
    from tqdm import tqdm

    from csplade_pyserini.datasets import read_corpus
    from csplade_pyserini.model.encoder import IDF_TOKEN_SCALE

    documents = list(read_corpus(domain.folder))
    texts = [d.contents for d in documents]
    model = model.for_collection(texts)
    with tqdm(total=len(texts), desc=f"encode {domain.name}", unit="doc", dynamic_ncols=True) as progress:
        words, pieces, _ = model.document_channels(texts, progress=progress)
    df = Counter(term for vector in words for term in vector)
    idf = {term: math.log(len(texts) / count) for term, count in df.items()}
    qids = list(domain.validation.queries)
    query_texts = [domain.validation.queries[q] for q in qids]
    query_words = model.encoder.query_vectors(query_texts, idf, IDF_TOKEN_SCALE)
    query_pieces = [model.expansion_impacts(p, IDF_TOKEN_SCALE)
                    for p in model.expansion.encode_weights(query_texts, "query")]

    def matrix(rows: list[dict[str, int]], vocabulary: dict[str, int], grow: bool):
        entries = [(i, vocabulary.setdefault(t, len(vocabulary)) if grow else vocabulary.get(t), w)
                   for i, row in enumerate(rows) for t, w in row.items()]
        entries = [e for e in entries if e[1] is not None]
        i, j, w = zip(*entries) if entries else ((), (), ())
        return i, j, w

    def product(query_rows, doc_rows):
        vocabulary: dict[str, int] = {}
        di, dj, dw = matrix(doc_rows, vocabulary, True)
        qi, qj, qw = matrix(query_rows, vocabulary, False)
        docs = sp.csr_matrix((np.array(dw, dtype=np.float64), (di, dj)), shape=(len(doc_rows), len(vocabulary)))
        queries = sp.csr_matrix((np.array(qw, dtype=np.float64), (qi, qj)), shape=(len(query_rows), len(vocabulary)))
        return (queries @ docs.T).toarray()

    base = product(query_words, words)
    out = {}
    for weight in weights:
        scores = base
        if weight > 0:
            doc_pieces = [model.expansion_impacts(p, model.card.quant_scale * weight) for p in pieces]
            df = Counter(term for vector in doc_pieces for term in vector)  # at this weight: rounding drops terms
            held = [{t: w for t, w in q.items() if 0 < df[t] < len(texts)} for q in query_pieces]  # idf above 0
            scores = base + product(held, doc_pieces)
        top = np.argsort(-scores, axis=1, kind="stable")[:, :10]
        out[weight] = {q: {documents[j].docid: float(scores[row, j]) for j in top[row]} for row, q in enumerate(qids)}
    return out


def join(args: JoinArguments) -> Path:
    """Choose ``expansion_weight`` on validation; write ``OUTPUT_DIR/model/best`` (card + the channels' weight
    files) and the log."""
    from csplade_pyserini.model.card import ModelCard, located

    if not args.weights or any(w < 0 or not math.isfinite(w) for w in args.weights):
        raise InputError(f"--weights must be non-negative numbers, got {args.weights}", field="weights")
    run = start_run(args)
    folders = {"words": Path(args.words), "lm_head": Path(args.lm_head)}
    cards = {name: located(ModelCard.load(folder), folder) for name, folder in folders.items()}
    card = joined_card(cards["words"], cards["lm_head"], args.quant_scale)
    run.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=run.out, prefix=".join-") as staging:  # gone however the run ends
        return _join(args, run, folders, cards, card, Path(staging))


def _join(args: JoinArguments, run, folders: dict[str, Path], cards: dict, card, staging: Path) -> Path:
    """:func:`join` with a staging folder: the channels' weight files beside a card at weight 1, which the
    model scoring every weight loads from."""
    from csplade_pyserini.model.card import WEIGHT_FILES, card_file
    from csplade_pyserini.model.encoder import CspladeModel

    for name in WEIGHT_FILES:
        reference = getattr(card, name)
        if reference:
            shutil.copy2(card_file(reference, folders["words" if name == "tf_head" else "lm_head"], name),
                         staging / reference)
    card.replace(expansion_weight=1.0).save(staging)
    model = CspladeModel.from_card(card.replace(expansion_weight=1.0), staging, args.device)
    ranked = {d.name: scores_by_weight(model, d, args.weights) for d in run.domains}
    curve = []
    for weight in args.weights:
        scores = validate_domains(run.domains, lambda d: ranked[d.name][weight])
        curve.append({"expansion_weight": weight, "validation": {k: round(v, 4) for k, v in scores.items()}})
        logger.info("expansion_weight %g: validation nDCG@10 %s", weight, curve[-1]["validation"])
    best = max(curve, key=lambda e: e["validation"]["mean"])
    seconds = time.perf_counter() - run.begin
    notes = {
        "what": f"{cards['words'].notes.get('what', 'word channel')} Beside it, the LM-head channel: "
                f"{cards['lm_head'].notes.get('what', '')} Its terms are spelled lm_ + the vocabulary entry; its "
                "document weights enter at expansion_weight, its query weights at the idf-token scale.",
        "trained_on": sorted({*cards["words"].notes.get("trained_on", []), *cards["lm_head"].notes.get("trained_on", [])}),
        "channels": {"words": cards["words"].notes, "lm_head": cards["lm_head"].notes},
        "validation": {"selected_on": {d.name: d.validation_source for d in run.domains},
                       "expansion_weight kept": best["expansion_weight"], "ndcg@10": best["validation"],
                       "curve": [(e["expansion_weight"], e["validation"]["mean"]) for e in curve]},
        "join_seconds": round(seconds, 1),
        "made_by": f"python -m csplade_pyserini.train join --words {args.words} --lm-head {args.lm_head} "
                   + " ".join(f"--data {d.folder}" for d in run.domains),
    }
    if best["expansion_weight"] > 0:
        final = card.replace(expansion_weight=best["expansion_weight"], notes=notes,
                             name=f"{cards['words'].name}+{cards['lm_head'].name}")
    else:  # the LM-head channel did not help: the word channel as it came
        final = cards["words"].replace(notes={**cards["words"].notes, "join": notes["validation"]})
    def write_files(folder: Path) -> None:
        for name in WEIGHT_FILES:
            reference = getattr(final, name)
            if reference:
                shutil.copy2(staging / reference, folder / reference)

    target = write_model(run.out, final, write_files, curve)
    logger.info("kept expansion_weight %g (validation nDCG@10 %s) in %s; %.0f s", best["expansion_weight"],
                best["validation"], target, seconds)
    return target


def main(argv: list[str] | None = None) -> int:
    join(parse_arguments(argv))
    return 0
