"""Training-data readers: MS MARCO triples (text or ids), Tevatron JSONL, BEIR train splits with a run
file for hard negatives, and teacher scores for distillation.

Every reader validates as it goes and raises :class:`~csplade_pyserini.errors.InputError` naming the
file, the 1-based line and the field of the first problem (malformed line, unknown id, empty query or
passage, bytes that are not UTF-8), because a training job that dies hours in on line 31,415,926 of a
triples file must say exactly where. Paths are checked when the reader is CALLED; streaming readers
(triples, Tevatron) then check each line as it is consumed, so that a 40M-line file never sits in
memory.

All readers produce :class:`TrainingExample` (a query, its positives and its negatives as
:class:`Passage`), and :func:`make_groups` turns one example into the ``[positive] + negatives`` group
that :class:`~csplade_pyserini.train.losses.InfoNCELoss` expects, reproducibly from a seeded RNG.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Mapping

from csplade_pyserini.datasets import beir_file, join_title, load_qrels, read_corpus, read_queries
from csplade_pyserini.runs.format import read_run as read_trec_run  # the one TREC line parser
from csplade_pyserini.textio import read_jsonl, read_lines
from csplade_pyserini.errors import InputError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Passage:
    """A training passage; ``text`` already includes the title when the source has one."""

    docid: str
    text: str


@dataclass
class TrainingExample:
    """One query with its relevant passages and (hard) negative passages."""

    query_id: str
    query: str
    positives: list[Passage]
    negatives: list[Passage] = field(default_factory=list)


# --- helpers ---------------------------------------------------------------------------------------
def text_id(text: str) -> str:
    """A stable id for data that has none (text triples): ``h`` + 16 hex digits of SHA-1.

    Content-derived, so that the same query or passage on different lines gets the same id and
    :func:`group_by_query` can merge lines of the same query.
    """
    return "h" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def _existing(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} does not exist", path=path)
    if path.is_dir():
        raise InputError(f"{what} is a folder, expected a file", path=path)
    return path


def _nonempty(value: str, what: str, path: Path, line: int, field_name: str) -> str:
    value = value.strip()
    if not value:
        raise InputError(f"empty {what}", path=path, line=line, field=field_name)
    return value


def load_collection(path: str | Path) -> dict[str, str]:
    """``docid -> text`` from a ``pid<TAB>text`` TSV (MS MARCO ``collection.tsv``), a BEIR
    ``corpus.jsonl`` or a folder holding one; titles are prepended to the text. Empty documents,
    duplicate ids and bad bytes are errors (reuses ``datasets.read_corpus``)."""
    return {doc.docid: doc.contents for doc in read_corpus(path)}


def load_query_texts(path: str | Path) -> dict[str, str]:
    """``qid -> text`` from ``qid<TAB>text`` or BEIR ``queries.jsonl`` (reuses ``datasets.read_queries``)."""
    return read_queries(_existing(path, "queries file"))


# --- MS MARCO triples ------------------------------------------------------------------------------
def read_text_triples(path: str | Path) -> Iterator[TrainingExample]:
    """MS MARCO text triples ``query<TAB>positive<TAB>negative`` (``.tsv`` or ``.tsv.gz``).

    One example per line (one positive, one negative), streamed. The file carries no ids, so ids are
    :func:`text_id` hashes of the texts; :func:`group_by_query` merges lines of the same query when
    more than one negative per query is wanted. Blank lines are skipped.
    """
    path = _existing(path, "triples file")
    return _text_triples(path)


def _text_triples(path: Path) -> Iterator[TrainingExample]:
    for number, line in read_lines(path):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 3:
            raise InputError(f"expected 'query<TAB>positive<TAB>negative', got {len(parts)} tab-separated fields",
                             path=path, line=number)
        query = _nonempty(parts[0], "query", path, number, "query")
        positive = _nonempty(parts[1], "positive passage", path, number, "positive")
        negative = _nonempty(parts[2], "negative passage", path, number, "negative")
        yield TrainingExample(text_id(query), query, [Passage(text_id(positive), positive)],
                              [Passage(text_id(negative), negative)])


def read_id_triples(path: str | Path, collection: str | Path | Mapping[str, str],
                    queries: str | Path | Mapping[str, str]) -> Iterator[TrainingExample]:
    """MS MARCO id triples ``qid<TAB>pid_pos<TAB>pid_neg`` resolved against a collection and queries.

    ``collection`` is a ``pid<TAB>text`` file (or BEIR corpus) or an already loaded ``{pid: text}``
    mapping (load the 8.8M MS MARCO passages once with :func:`load_collection` and reuse it);
    ``queries`` likewise (``qid<TAB>text``). The collection and queries are read when this is called;
    the triples are streamed, one example per line. An id missing from the collection or queries is an
    InputError naming the triples file, the line and the column.
    """
    path = _existing(path, "triples file")
    if isinstance(collection, Mapping):
        passages, collection_name = collection, "the collection"
    else:
        passages, collection_name = load_collection(collection), str(collection)
    if isinstance(queries, Mapping):
        query_texts, queries_name = queries, "the queries"
    else:
        query_texts, queries_name = load_query_texts(queries), str(queries)
    return _id_triples(path, passages, collection_name, query_texts, queries_name)


def _id_triples(path: Path, passages: Mapping[str, str], collection_name: str, queries: Mapping[str, str],
                queries_name: str) -> Iterator[TrainingExample]:
    for number, line in read_lines(path):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 3:
            raise InputError(f"expected 'qid<TAB>pid_pos<TAB>pid_neg', got {len(parts)} columns",
                             path=path, line=number)
        qid, pos, neg = parts
        if qid not in queries:
            raise InputError(f"query id {qid!r} is not in {queries_name}", path=path, line=number, field="qid")
        for pid, column in ((pos, "pid_pos"), (neg, "pid_neg")):
            if pid not in passages:
                raise InputError(f"passage id {pid!r} is not in {collection_name}", path=path, line=number,
                                 field=column)
        yield TrainingExample(qid, queries[qid], [Passage(pos, passages[pos])], [Passage(neg, passages[neg])])


def group_by_query(examples: Iterable[TrainingExample]) -> list[TrainingExample]:
    """Merge examples that share a ``query_id`` (triples list one negative per line).

    First-seen order is kept for queries and passages; duplicate passages are dropped, and so is a
    negative that is also a positive of the same query (contradictory data would train the model to
    push a relevant passage away). Holds everything in memory.
    """
    merged: dict[str, TrainingExample] = {}
    for example in examples:
        target = merged.get(example.query_id)
        if target is None:
            target = merged[example.query_id] = TrainingExample(example.query_id, example.query, [], [])
        target.positives.extend(p for p in example.positives if p not in target.positives)
        target.negatives.extend(p for p in example.negatives if p not in target.negatives)
    for example in merged.values():
        positive_ids = {p.docid for p in example.positives}
        example.negatives = [p for p in example.negatives if p.docid not in positive_ids]
    return list(merged.values())


# --- Tevatron --------------------------------------------------------------------------------------
def read_tevatron(path: str | Path) -> Iterator[TrainingExample]:
    """Tevatron training JSONL (``.jsonl`` or ``.jsonl.gz``), one example per line, streamed::

        {"query_id": "3", "query": "...", "positive_passages": [{"docid": "7", "title": "", "text": "..."}],
         "negative_passages": [...]}

    ``query_id`` is optional (a :func:`text_id` hash of the query otherwise); ``title`` is optional
    and prepended to the text; ``negative_passages`` may be missing or empty (in-batch negatives
    only). At least one positive is required; every passage needs a ``docid`` and a non-empty text.
    """
    path = _existing(path, "Tevatron file")
    return _tevatron(path)


def _tevatron_passages(record: dict, key: str, path: Path, number: int) -> list[Passage]:
    items = record.get(key, [])
    if not isinstance(items, list):
        raise InputError("expected a list of passages", path=path, line=number, field=key)
    passages = []
    for i, item in enumerate(items):
        where = f"{key}[{i}]"
        if not isinstance(item, dict):
            raise InputError("expected a passage object", path=path, line=number, field=where)
        docid = item.get("docid")
        if docid is None or isinstance(docid, (dict, list, bool)) or not str(docid).strip():
            raise InputError("missing or empty passage id", path=path, line=number, field=f"{where}.docid")
        text, title = item.get("text"), item.get("title") or ""
        if not isinstance(text, str) or not isinstance(title, str):
            raise InputError("passage text and title must be strings", path=path, line=number,
                             field=f"{where}.text")
        contents = _nonempty(join_title(title, text), f"passage {str(docid).strip()!r}", path, number,
                             f"{where}.text")
        passages.append(Passage(str(docid).strip(), contents))
    return passages


def _tevatron(path: Path) -> Iterator[TrainingExample]:
    for number, record in read_jsonl(path):
        query = record.get("query")
        if not isinstance(query, str):
            raise InputError("missing query text (a string)", path=path, line=number, field="query")
        query = _nonempty(query, "query", path, number, "query")
        qid = record.get("query_id")
        if qid is None:
            qid = text_id(query)
        elif isinstance(qid, (dict, list, bool)) or not str(qid).strip():
            raise InputError("query id must be a non-empty string or number", path=path, line=number,
                             field="query_id")
        positives = _tevatron_passages(record, "positive_passages", path, number)
        if not positives:
            raise InputError("no positive passage", path=path, line=number, field="positive_passages")
        negatives = _tevatron_passages(record, "negative_passages", path, number)
        yield TrainingExample(str(qid).strip(), query, positives, negatives)


# --- BEIR train split + run file -------------------------------------------------------------------
def _locate(path: Path, *columns: str) -> int | None:
    """Line of ``path`` whose first whitespace-separated columns contain ``columns`` (error reports)."""
    for number, line in read_lines(path):
        parts = line.split()
        if parts[:1] == [columns[0]] and all(c in parts[1:3] for c in columns[1:]):
            return number
    return None


def read_run(path: str | Path, queries: set[str] | None = None) -> dict[str, list[tuple[str, float, int]]]:
    """TREC run ``qid Q0 docid rank score tag`` -> ``{qid: [(docid, score, line), ...]}`` best first.

    Read by the one TREC run parser (``runs.format``) and ordered as ``trec_eval`` ranks
    (``runs.format.trec_order``), not by the rank column, which tools fill inconsistently. A docid listed
    twice for a query keeps its first line. ``queries`` restricts the result to those query ids (other
    lines are still validated).
    """
    from csplade_pyserini.runs.format import trec_order

    rows: dict[str, list] = {}
    seen: set[tuple[str, str]] = set()
    for hit in read_trec_run(_existing(path, "run file")):
        if (queries is not None and hit.qid not in queries) or (hit.qid, hit.docid) in seen:
            continue
        seen.add((hit.qid, hit.docid))
        rows.setdefault(hit.qid, []).append(hit)
    return {qid: [(h.docid, h.score, h.line) for h in sorted(hits, key=lambda h: trec_order(h.score, h.docid))]
            for qid, hits in rows.items()}


def read_beir_train(folder: str | Path, run: str | Path | None = None, n_negatives: int | None = 15,
                    split: str = "train", min_relevance: int = 1) -> list[TrainingExample]:
    """Training examples from a BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``).

    Positives are the documents judged ``>= min_relevance`` in the qrels (queries with none are
    skipped); examples follow the qrels order. Hard negatives come from ``run`` (a TREC run, e.g. BM25
    over the same corpus): the ``n_negatives`` best-scored documents that are not positives of the
    query (``None``: all of them). Without a run, ``negatives`` is empty. A query or document id of the
    qrels missing from the queries or the corpus, or a docid of the run missing from the corpus, is an
    InputError with file and line. A query with fewer run negatives than asked is logged, not an error
    (:func:`make_groups` samples with replacement).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("BEIR folder does not exist", path=folder)
    if n_negatives is not None and n_negatives < 0:
        raise ValueError(f"n_negatives must be non-negative, got {n_negatives}")
    queries_path = beir_file(folder, "queries")
    qrels_path = beir_file(folder, "qrels", split)
    corpus = load_collection(folder)
    queries = load_query_texts(queries_path)
    qrels = load_qrels(qrels_path)

    examples: list[TrainingExample] = []
    for qid, judged in qrels.items():
        positive_ids = [docid for docid, rel in judged.items() if rel >= min_relevance]
        if not positive_ids:
            continue
        if qid not in queries:
            raise InputError(f"query id {qid!r} is not in {queries_path}", path=qrels_path,
                             line=_locate(qrels_path, qid), field="query-id")
        for docid in positive_ids:
            if docid not in corpus:
                raise InputError(f"document id {docid!r} is not in the corpus", path=qrels_path,
                                 line=_locate(qrels_path, qid, docid), field="corpus-id")
        examples.append(TrainingExample(qid, queries[qid], [Passage(d, corpus[d]) for d in positive_ids], []))

    if run is not None:
        ranked = read_run(run, {e.query_id for e in examples})
        short = 0
        for example in examples:
            positives = {p.docid for p in example.positives}
            for docid, _, number in ranked.get(example.query_id, []):
                if docid not in corpus:
                    raise InputError(f"document id {docid!r} is not in the corpus of {folder}", path=run,
                                     line=number, field="docid")
                if docid in positives or (n_negatives is not None and len(example.negatives) >= n_negatives):
                    continue
                example.negatives.append(Passage(docid, corpus[docid]))
            short += n_negatives is not None and len(example.negatives) < n_negatives
        if short:
            logger.warning("%d of %d queries have fewer than %d negatives in %s", short, len(examples),
                           n_negatives, run)
    return examples


# --- teacher scores --------------------------------------------------------------------------------
def read_teacher_scores(path: str | Path) -> dict[str, dict[str, float]]:
    """Teacher (cross-encoder) scores ``qid pid score``, whitespace separated -> ``{qid: {pid: score}}``.

    A line without exactly three columns, a score that is not a finite number, or a (qid, pid) pair
    given twice is an InputError with file and line. Blank lines are skipped; ``.gz`` is accepted.
    """
    path = _existing(path, "teacher scores file")
    scores: dict[str, dict[str, float]] = {}
    first: dict[tuple[str, str], int] = {}
    for number, line in read_lines(path):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 3:
            raise InputError(f"expected 'qid pid score', got {len(parts)} columns", path=path, line=number)
        qid, pid, text = parts
        try:
            score = float(text)
        except ValueError:
            raise InputError(f"score {text!r} is not a number", path=path, line=number, field="score") from None
        if not math.isfinite(score):
            raise InputError(f"score {text!r} is not finite", path=path, line=number, field="score")
        if (qid, pid) in first:
            raise InputError(f"duplicate score for query {qid!r} passage {pid!r} (first on line "
                             f"{first[qid, pid]})", path=path, line=number, field="pid")
        first[qid, pid] = number
        scores.setdefault(qid, {})[pid] = score
    return scores


# --- groups ----------------------------------------------------------------------------------------
def make_groups(example: TrainingExample, n_negatives: int, rng: random.Random) -> list[Passage]:
    """``[positive] + n_negatives negatives`` for one query, the layout ``info_nce`` expects.

    The positive is drawn from the example's positives; negatives are drawn without replacement when
    there are enough. With fewer than ``n_negatives``, every negative is used once (shuffled) and the
    rest is drawn WITH replacement, so that every group has the same size (``info_nce`` needs equal
    groups). Only ``rng`` is used: the same seed gives the same groups.
    """
    if n_negatives < 0:
        raise ValueError(f"n_negatives must be non-negative, got {n_negatives}")
    if not example.positives:
        raise InputError(f"query {example.query_id!r} has no positive passage", field="positives")
    positive = rng.choice(example.positives)
    if n_negatives == 0:
        return [positive]
    negatives = example.negatives
    if not negatives:
        raise InputError(f"query {example.query_id!r} has no negative passages to draw {n_negatives} from",
                         field="negatives")
    if len(negatives) >= n_negatives:
        chosen = rng.sample(negatives, n_negatives)
    else:
        chosen = rng.sample(negatives, len(negatives)) + rng.choices(negatives, k=n_negatives - len(negatives))
    return [positive, *chosen]


# --- from options ----------------------------------------------------------------------------------
def load_examples(data_args) -> list[TrainingExample]:
    """Training examples from ``--data`` in the format given (or guessed from the path)."""
    if not data_args.data:
        raise InputError("training data is required (--data)", field="data")
    path = Path(data_args.data)
    fmt = data_args.data_format
    if fmt == "auto":
        if path.is_dir():
            fmt = "beir"
        elif ".jsonl" in path.suffixes:
            fmt = "tevatron"
        elif data_args.collection:
            fmt = "id-triples"
        else:
            fmt = "triples"
    if fmt == "beir":
        if data_args.negatives and not data_args.run:
            raise InputError("BEIR training data needs a run with hard negatives (--run, from `train "
                             "mine-negatives`), or --negatives 0 for in-batch negatives only", field="run")
        # every run negative is kept (best first); the run's depth and --skip-top-negatives select among them
        examples = read_beir_train(path, data_args.run, n_negatives=None, split=data_args.split)
    elif fmt == "tevatron":
        examples = list(read_tevatron(path))
    elif fmt == "triples":
        examples = group_by_query(read_text_triples(path))
    else:
        if not data_args.collection or not data_args.queries:
            raise InputError("id triples need --collection and --queries", field="collection")
        examples = group_by_query(read_id_triples(path, data_args.collection, data_args.queries))
    if data_args.max_examples:
        examples = examples[:data_args.max_examples]
    return examples


# --- a run's data: examples, filtered negatives, pseudo-queries, held-out validation queries -----------
PSEUDO_PREFIX = "pseudo:"  # the query ids of title -> text pseudo-queries


@dataclass
class TrainingData:
    examples: list[TrainingExample]
    queries: dict[str, str]  # every query text by id (training, pseudo and validation)
    docs: dict[str, str]  # every document text by id (the whole corpus for a BEIR folder)
    teacher: dict[str, dict[str, float]] | None
    positives: dict[str, set[str]]  # every judged-relevant document of a query (false-negative masking)
    validation: list[str]  # held-out query ids
    validation_qrels: dict[str, dict[str, int]]


def load_training_data(data_args, seed: int, objective: str) -> TrainingData:
    """Examples with their negatives filtered, pseudo-queries, and the held-out validation queries."""
    from csplade_pyserini.train.validation import holdout_queries

    examples = load_examples(data_args)
    folder = Path(data_args.data) if data_args.data and Path(data_args.data).is_dir() else None
    docs = {e.docid: e.text for ex in examples for e in [*ex.positives, *ex.negatives]}
    positives: dict[str, set[str]] = {}
    for ex in examples:
        positives.setdefault(ex.query_id, set()).update(p.docid for p in ex.positives)
    corpus = None
    if folder is not None:
        corpus = list(read_corpus(folder))
        docs = {d.docid: d.contents for d in corpus}
    validation: list[str] = []
    validation_qrels: dict[str, dict[str, int]] = {}
    if data_args.validation_queries:
        source = Path(data_args.validation_data) if data_args.validation_data else folder
        if source is None:
            raise InputError("validation needs a BEIR folder (--validation-data, or --data as a folder); "
                             "or pass --validation-queries 0", field="validation_data")
        validation_qrels = load_qrels(beir_file(source, "qrels", data_args.validation_split))
        validation = holdout_queries(validation_qrels, data_args.validation_queries, seed)
        if source == folder:
            held = set(validation)
            before = len(examples)
            examples = [e for e in examples if e.query_id not in held]
            logger.info("%d validation queries held out of training (%d training queries left)",
                        before - len(examples), len(examples))
    teacher = None
    if data_args.teacher_scores:
        teacher = read_teacher_scores(data_args.teacher_scores)
    elif objective != "cl":
        raise InputError(f"objective {objective} needs teacher scores (--teacher-scores, from `train score-teacher`)",
                         field="teacher_scores")
    examples = filter_negatives(examples, data_args, teacher, required=objective != "cl")
    queries = {e.query_id: e.query for e in examples}
    if validation:
        source = Path(data_args.validation_data) if data_args.validation_data else folder
        texts = read_queries(beir_file(source, "queries"))
        queries.update({q: texts[q] for q in validation})
    if data_args.pseudo_queries:
        if corpus is None:
            raise InputError("pseudo-queries need a BEIR folder as --data", field="pseudo_queries")
        pseudo = pseudo_query_examples(corpus, data_args, seed)
        examples.extend(pseudo)
        queries.update({e.query_id: e.query for e in pseudo})
        for e in pseudo:
            positives[e.query_id] = {p.docid for p in e.positives}
    if not examples:
        raise InputError("no usable training example", field="data")
    return TrainingData(examples, queries, docs, teacher, positives, validation, validation_qrels)


def filter_negatives(examples: list[TrainingExample], data_args, teacher, required: bool) -> list[TrainingExample]:
    """Drop likely false negatives: the top ``--skip-top-negatives`` candidates, and (with a teacher and
    ``--teacher-margin``) every candidate the teacher scores above ``positive - margin``. With a teacher
    required (kd, clkd), candidates without a teacher score are dropped too."""
    kept, dropped, skipped_queries = [], 0, 0
    for e in examples:
        negatives = e.negatives[data_args.skip_top_negatives:data_args.skip_top_negatives + data_args.negative_depth]
        positives = e.positives
        if teacher is not None:
            row = teacher.get(e.query_id, {})
            if required:
                positives = [p for p in positives if p.docid in row]
                negatives = [n for n in negatives if n.docid in row]
            if data_args.teacher_margin is not None and positives:
                floor = min(row.get(p.docid, float("inf")) for p in positives) - data_args.teacher_margin
                before = len(negatives)
                negatives = [n for n in negatives if row.get(n.docid, float("-inf")) < floor]
                dropped += before - len(negatives)
        if not positives or (data_args.negatives and not negatives):
            skipped_queries += 1
            continue
        kept.append(TrainingExample(e.query_id, e.query, positives, negatives))
    if dropped or skipped_queries:
        logger.info("negatives: %d dropped by the teacher margin; %d queries without positives or negatives skipped",
                    dropped, skipped_queries)
    return kept


def pseudo_query_examples(corpus, data_args, seed: int) -> list[TrainingExample]:
    """Title -> text pseudo-queries: each titled document's title is a query whose positive is the
    document; negatives are the documents sharing the most title words (a cheap lexical ranking)."""
    from collections import Counter, defaultdict

    titled = [d for d in corpus if d.title and d.text]
    words = {d.docid: {w for w in d.title.lower().split() if len(w) > 3} for d in titled}
    frequency = Counter(w for ws in words.values() for w in ws)
    postings: dict[str, list[str]] = defaultdict(list)
    for d in titled:
        for w in words[d.docid]:
            if frequency[w] <= 200:
                postings[w].append(d.docid)
    contents = {d.docid: d.contents for d in corpus}
    rng = random.Random(f"pseudo:{seed}")
    out = []
    for d in titled:
        shared = Counter(o for w in words[d.docid] for o in postings[w] if o != d.docid)
        ranked = [o for o, _ in shared.most_common(data_args.negative_depth)]
        if len(ranked) < data_args.negatives:
            ranked += rng.sample(list(contents), data_args.negatives)
        negatives = [Passage(o, contents[o]) for o in ranked if o != d.docid]
        out.append(TrainingExample(f"{PSEUDO_PREFIX}{d.docid}", d.title, [Passage(d.docid, d.contents)], negatives))
    logger.info("%d title -> text pseudo-queries", len(out))
    return out
