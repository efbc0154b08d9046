"""The zero-shot suite: every system through the main job's pipeline, on collections it was not trained on.

    python -m benchmarks.zero_shot                       # make bench-zero-shot
    python -m benchmarks.zero_shot --systems bm25,default --collections cranfield,cisi
    python -m benchmarks.zero_shot --candidate mine=csplade:runs/train/words/model/best

Collections (from ``../shared/data`` or ``--shared-data``): the DL19 pool, Cranfield, CISI, MEDLINE and the
Climate-FEVER sentences, zero-shot for every model trained here, and SciFact test and NFCorpus test. A
collection a system was trained or tuned on (its card's ``notes.trained_on``; MS MARCO for splade-tiny, hence
the DL19 pool) is marked ``*`` and left out of that system's zero-shot mean. Each (system, collection) runs
``python -m csplade_pyserini.pipeline`` in its own process (real encoder, Anserini index, Lucene search,
ir-measures) and keeps its report, so an interrupted suite resumes where it stopped. The tables give nDCG@10
and R@100 (R(rel=2)@1K on the DL19 pool), the zero-shot mean, each system's paired difference from BM25 per
collection (95% bootstrap interval, randomisation-test p), encoding docs/s and index size; a plot beside them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from csplade_pyserini.atomic import atomic_dir, atomic_file
from benchmarks.measured import run_measured
from benchmarks.report import RESULTS, cell, write_report
from csplade_pyserini.cli import run_cli
from csplade_pyserini.paths import ENCODE_DIR, shared_path

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Collection:
    folder: str  # under the shared data folder
    topics: str | None = None  # a Pyserini topics name, where the folder holds no queries/qrels
    measure: str = "R@100"  # the recall column


COLLECTIONS = {
    "dl19-pool": Collection("msmarco-dl19-mini", "dl19-passage", "R(rel=2)@1000"),
    "cranfield": Collection("classic/cranfield"),
    "cisi": Collection("classic/cisi"),
    "medline": Collection("classic/medline"),
    "climate-fever": Collection("climate-fever-sentences"),
    "scifact": Collection("beir/scifact"),
    "nfcorpus": Collection("beir/nfcorpus"),
}
ZERO_SHOT = ("dl19-pool", "cranfield", "cisi", "medline", "climate-fever")
BASELINES = ("bm25", "splade-tiny", "minilm")


@dataclass(frozen=True)
class System:
    name: str
    args: tuple[str, ...]  # pipeline arguments
    trained_on: tuple[str, ...]  # collections of the suite it was trained or tuned on
    label: str


def csplade_system(name: str, spec: str) -> System:
    """A csplade spec; the collections it was trained on come from its card's ``notes.trained_on``."""
    from csplade_pyserini.model.spec import card_from_spec

    card, _ = card_from_spec(spec)
    trained = card.notes.get("trained_on", []) if isinstance(card.notes, dict) else []
    return System(name, ("--no-bm25", "--encoder", spec), tuple(t for t in trained if t in COLLECTIONS),
                  f"{name} (`{spec}`)")


def baseline_system(name: str, splade_dir: Path | None) -> System:
    if name == "bm25":
        return System("bm25", ("--no-csplade",), (), "BM25 (Pyserini, flat)")
    if name == "splade-tiny":
        if splade_dir is None:
            raise SystemExit("splade-tiny needs --splade DIR (../shared/models/splade-tiny)")
        # a SPLADE trained on MS MARCO: the DL19 pool's passages and query style are its training domain
        return System("splade-tiny", ("--no-bm25", "--no-csplade", "--splade", str(splade_dir)), ("dl19-pool",),
                      "splade-tiny (MS MARCO-trained SPLADE)")
    if name == "minilm":
        # all-MiniLM-L6-v2's billion training pairs include MS MARCO: the DL19 pool is in its domain
        return System("minilm", ("--no-bm25", "--no-csplade", "--dense", "minilm"), ("dl19-pool",),
                      "all-MiniLM-L6-v2 (dense, FAISS flat)")
    raise SystemExit(f"unknown baseline {name!r}")


def prepared_folder(name: str, data_root: Path, work: Path) -> Path:
    """The collection's folder; where its document ids hold whitespace (the Climate-FEVER sentences are
    ``Article title:N``), a copy under ``work`` with each whitespace run made ``_`` in corpus and qrels, since a
    TREC run cannot hold such an id. Two ids that would become one are refused."""
    import re

    from csplade_pyserini.datasets import beir_file
    from csplade_pyserini.errors import InputError
    from csplade_pyserini.textio import json_object, read_lines

    source = data_root / COLLECTIONS[name].folder
    corpus = source / "corpus.jsonl"
    if not corpus.exists():
        return source
    ids = [json_object(line, corpus, number).get("_id", "") for number, line in read_lines(corpus)]
    if not any(re.search(r"\s", str(i)) for i in ids):
        return source
    target = work / name
    if (target / "corpus.jsonl").exists():
        return target
    fix = {i: re.sub(r"\s+", "_", str(i)) for i in ids}
    if len(set(fix.values())) != len(fix):
        raise InputError("two document ids become one when their whitespace is replaced", path=corpus)
    with atomic_dir(target) as tmp:
        with open(tmp / "corpus.jsonl", "w", encoding="utf-8") as out:
            for number, line in read_lines(corpus):
                row = json_object(line, corpus, number)
                out.write(json.dumps({**row, "_id": fix[row["_id"]]}, ensure_ascii=False) + "\n")
        (tmp / "queries.jsonl").write_bytes(beir_file(source, "queries").read_bytes())
        (tmp / "qrels").mkdir()
        for qrels in sorted((source / "qrels").glob("*.tsv")):
            with open(tmp / "qrels" / qrels.name, "w", encoding="utf-8") as out:
                for number, line in read_lines(qrels):
                    parts = line.split("\t")
                    if number > 1 and len(parts) >= 3:
                        parts[1] = fix.get(parts[1], parts[1])
                    out.write("\t".join(parts) + "\n")
    return target


def measure(args, system: System, collection: str, folder: Path) -> dict | None:
    """The pipeline's report for one (system, collection), run now unless it exists."""
    report = RESULTS / args.name / collection / f"{system.name}.json"
    process = report.with_suffix(".proc.json")
    if not report.exists() or args.rerun:
        if args.measured_only:
            return None
        report.parent.mkdir(parents=True, exist_ok=True)
        spec = COLLECTIONS[collection]
        command = ["-m", "csplade_pyserini.pipeline", "--collection", collection, "--data", str(folder),
                   "--allow-empty", "--threads", str(args.threads), "--report", str(report), *system.args]
        if spec.topics:
            command += ["--topics", spec.topics]
        logger.info("%s on %s: python %s", system.name, collection, " ".join(command))
        proc = run_measured(command, env={"OMP_NUM_THREADS": str(args.threads)})
        if proc["returncode"] != 0:
            raise SystemExit(f"{system.name} on {collection} failed with exit code {proc['returncode']}")
        proc["measured"] = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
        proc["load_average"] = os.getloadavg()
        proc["threads"] = args.threads
        with atomic_file(process) as handle:
            json.dump(proc, handle)
    data = json.loads(report.read_text())
    row = data["rows"][0]
    return {**row, "process": json.loads(process.read_text()) if process.exists() else {},
            "label": data["label"], "topics": data["topics"]}


def per_query(row: dict, qrels_source: Path | str, measure_name: str) -> dict[str, float]:
    from csplade_pyserini.evaluate.measures import evaluate_run, measures_for

    measures = [m for m in measures_for(row["topics"]) if str(m) == measure_name]
    _, rows = evaluate_run(row["run"], qrels_source, measures, per_query=True)
    return {q: v[measure_name] for q, v in rows.items()}


def qrels_source(folder: Path, collection: str):
    spec = COLLECTIONS[collection]
    return spec.topics if spec.topics else folder / "qrels" / "test.tsv"


def summarise(results: dict[str, dict[str, dict]], systems: list[System], folders: dict[str, Path]) -> dict:
    """Scores, zero-shot means and paired differences from BM25, per system."""
    from csplade_pyserini.evaluate.significance import paired_comparison

    out = {}
    for system in systems:
        rows = results.get(system.name, {})
        entry = {"label": system.label, "trained_on": list(system.trained_on), "collections": {}}
        for collection, row in rows.items():
            recall = COLLECTIONS[collection].measure
            item = {"nDCG@10": row["scores"]["nDCG@10"], "recall": row["scores"].get(recall), "recall_measure": recall,
                    "in_domain": collection in system.trained_on, "docs_per_s": row.get("docs_per_s"),
                    "index_mb": row.get("index_mb"), "measured": row["process"].get("measured"),
                    "threads": row["process"].get("threads"),
                    "load_average": row["process"].get("load_average")}
            bm25 = results.get("bm25", {}).get(collection)
            if bm25 is not None and system.name != "bm25":
                source = qrels_source(folders[collection], collection)
                item["vs_bm25"] = paired_comparison(per_query(bm25, source, "nDCG@10"),
                                                    per_query(row, source, "nDCG@10")).as_dict()
            entry["collections"][collection] = item
        zero = [v["nDCG@10"] for c, v in entry["collections"].items() if c in ZERO_SHOT and not v["in_domain"]]
        expected = [c for c in ZERO_SHOT if c not in system.trained_on]
        entry["zero_shot_mean"] = sum(zero) / len(zero) if zero and len(zero) == len(expected) else None
        entry["zero_shot_collections"] = [c for c in ZERO_SHOT if c in entry["collections"] and c not in system.trained_on]
        everywhere = [entry["collections"].get(c, {}).get("nDCG@10") for c in ZERO_SHOT]
        entry["five_collection_mean"] = sum(everywhere) / len(everywhere) if all(v is not None for v in everywhere) else None
        out[system.name] = entry
    return out


def write_tables(summary: dict, collections: list[str], args) -> str:
    def score(entry, collection, key="nDCG@10"):
        item = entry["collections"].get(collection)
        if item is None or item.get(key) is None:
            return "-"
        return f"{item[key]:.4f}" + ("*" if item["in_domain"] else "")

    lines = [f"# Zero-shot suite (tabulated {dt.date.today()})",
             "", "`python -m benchmarks.zero_shot` (`make bench-zero-shot`). nDCG@10; `*` = trained "
             "or tuned on that collection (left out of the zero-shot mean). Zero-shot mean: over "
             f"{', '.join(ZERO_SHOT)} minus a system's in-domain ones; all-five mean: over the five, whatever the "
             "system was trained on.", ""]
    header = "| system | " + " | ".join(collections) + " | zero-shot mean | all-five mean |"
    lines += [header, "|---" * (len(collections) + 3) + "|"]
    for entry in summary.values():
        lines.append(f"| {entry['label']} | " + " | ".join(score(entry, c) for c in collections)
                     + f" | {cell(entry['zero_shot_mean'], '.4f')} | {cell(entry['five_collection_mean'], '.4f')} |")
    lines += ["", "Recall: R@100, and R(rel=2)@1K on the DL19 pool.", "",
              "| system | " + " | ".join(collections) + " |", "|---" * (len(collections) + 1) + "|"]
    for entry in summary.values():
        lines.append(f"| {entry['label']} | " + " | ".join(score(entry, c, "recall") for c in collections) + " |")
    lines += ["", "nDCG@10 minus BM25's on the same queries: mean difference [95% bootstrap interval], paired "
              "randomisation-test p.", "", "| system | " + " | ".join(collections) + " |",
              "|---" * (len(collections) + 1) + "|"]
    for name, entry in summary.items():
        if name == "bm25":
            continue
        cells = []
        for c in collections:
            vs = entry["collections"].get(c, {}).get("vs_bm25")
            cells.append("-" if vs is None else f"{vs['mean_difference']:+.4f} [{vs['ci_low']:+.4f}, {vs['ci_high']:+.4f}], "
                                                f"p {vs['p_value']:.3f}")
        lines.append(f"| {entry['label']} | " + " | ".join(cells) + " |")
    lines += ["", "Encoding speed (documents/s, the pipeline's encode stage, with the torch threads of its process) and "
              "index size (MB). Speeds measured beside another busy process (see the load averages) are not clean "
              "timings.", "",
              "| system | " + " | ".join(collections) + " |", "|---" * (len(collections) + 1) + "|"]
    for entry in summary.values():
        cells = []
        for c in collections:
            item = entry["collections"].get(c)
            cells.append("-" if item is None else f"{cell(item['docs_per_s'], '.1f')} docs/s ({cell(item['threads'], 'd')} "
                         f"threads), {cell(item['index_mb'], '.1f')} MB")
        lines.append(f"| {entry['label']} | " + " | ".join(cells) + " |")
    loads = sorted({tuple(round(x, 2) for x in i["load_average"]) for e in summary.values()
                    for i in e["collections"].values() if i.get("load_average")})
    lines += ["", f"Load averages (1, 5, 15 min) when each process ended: {', '.join(map(str, loads)) or 'not recorded'}.", ""]
    return "\n".join(lines)


def plot(summary: dict, collections: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary)
    width = 0.8 / max(1, len(names))
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(collections) + 2), 4))
    for i, name in enumerate(names):
        values = [summary[name]["collections"].get(c, {}).get("nDCG@10") or 0 for c in collections]
        bars = ax.bar([x + i * width for x in range(len(collections))], values, width, label=summary[name]["label"][:48])
        for bar, c in zip(bars, collections):
            if summary[name]["collections"].get(c, {}).get("in_domain"):
                bar.set_hatch("//")
    ax.set_xticks([x + width * (len(names) - 1) / 2 for x in range(len(collections))], collections, rotation=20)
    ax.set_ylabel("nDCG@10 (hatched: in-domain)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.zero_shot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--systems", default="bm25,splade-tiny,minilm,default",
                        help="comma-separated: bm25, splade-tiny, minilm (all-MiniLM-L6-v2, dense), default (the "
                             "packaged model), and --candidate names")
    parser.add_argument("--candidate", action="append", default=[], metavar="NAME=SPEC",
                        help="another csplade spec to measure, e.g. pure=csplade:runs/train/cpu-recipe/pure/best")
    parser.add_argument("--collections", default=",".join(COLLECTIONS), help="comma-separated, of " + ", ".join(COLLECTIONS))
    parser.add_argument("--shared-data", default=None, help="the folder holding the collections (default ../shared/data)")
    parser.add_argument("--splade", default=None, help="splade-tiny's folder (default ../shared/models/splade-tiny)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--name", default="bench-zero-shot", help="report name under eval/results")
    parser.add_argument("--rerun", action="store_true", help="measure again even where a report exists")
    parser.add_argument("--measured-only", action="store_true", help="tabulate what was measured, run nothing")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    data_root = Path(args.shared_data) if args.shared_data else shared_path("data")
    if data_root is None or not data_root.exists():
        raise SystemExit("no collections: pass --shared-data (the folder holding beir/, classic/, ...)")
    collections = [c.strip() for c in args.collections.split(",") if c.strip()]
    unknown = [c for c in collections if c not in COLLECTIONS]
    if unknown:
        raise SystemExit(f"unknown collection(s) {unknown}; known: {', '.join(COLLECTIONS)}")
    candidates = dict(item.split("=", 1) for item in args.candidate)
    splade = Path(args.splade) if args.splade else shared_path("models", "splade-tiny")
    systems = []
    for name in [s.strip() for s in args.systems.split(",") if s.strip()] + [c for c in candidates]:
        if any(s.name == name for s in systems):
            continue
        if name in BASELINES:
            systems.append(baseline_system(name, splade))
        elif name == "default":
            systems.append(csplade_system("default", "csplade"))
        elif name in candidates:
            systems.append(csplade_system(name, candidates[name]))
        else:
            raise SystemExit(f"unknown system {name!r}: bm25, splade-tiny, minilm, default or a --candidate NAME=SPEC")
    work = ENCODE_DIR / "zero-shot-data"
    folders = {c: prepared_folder(c, data_root, work) for c in collections}
    results: dict[str, dict[str, dict]] = {}
    for collection in collections:
        for system in systems:
            row = measure(args, system, collection, folders[collection])
            if row is not None:
                results.setdefault(system.name, {})[collection] = row
    summary = summarise(results, systems, folders)
    text = write_tables(summary, collections, args)
    plot(summary, collections, RESULTS / f"{args.name}.png")
    write_report(args.name, {"collections": collections, "zero_shot": list(ZERO_SHOT), "systems": summary}, text)
    return 0


if __name__ == "__main__":
    run_cli(main)
