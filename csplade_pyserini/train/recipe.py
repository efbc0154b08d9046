"""The CPU recipe in one command: negatives, teacher scores, then training from cached activations.

    python -m csplade_pyserini.train recipe --data ../shared/data/beir/scifact --output-dir runs/cpu-recipe

1. BM25 hard negatives for the training queries (Pyserini, ``mine-negatives``);
2. teacher scores of those candidates and the positives (splade-tiny from ``../shared`` by default,
   ``score-teacher``), used to drop likely false negatives and, with ``clkd``, for distillation;
3. ``contrastive`` with the recipe (``configs/cpu-smollm2.yaml``): the backbone frozen and cached once,
   the heads trained, validated on held-out training queries against the whole corpus.

Every step is skipped when its output is already there (delete it to redo it); a training step that was
killed resumes from its last checkpoint; ``--pure`` also trains
the pure CSPLADE model (LM-head channel only) from the same cache. ``OUTPUT_DIR/recipe.json`` records
each step's wall time and the process's peak memory.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import time
from pathlib import Path

from csplade_pyserini.errors import InputError
from csplade_pyserini.paths import shared_path

logger = logging.getLogger(__name__)

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "cpu-smollm2.yaml"
PURE_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "cpu-smollm2-pure.yaml"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m csplade_pyserini.train recipe", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="BEIR folder with a train split (e.g. ../shared/data/beir/scifact)")
    parser.add_argument("--output-dir", required=True, help="folder for the run (negatives, teacher, cache, model)")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="training recipe (YAML)")
    parser.add_argument("--teacher", default=None, help="teacher for negative filtering and distillation "
                        "(default: ../shared/models/splade-tiny; 'none' to go without)")
    parser.add_argument("--pure", action="store_true", help="also train the pure CSPLADE model from the same cache")
    parser.add_argument("--pure-config", default=str(PURE_CONFIG), help="its recipe")
    parser.add_argument("--threads", type=int, default=None, help="torch / Lucene threads (default: all cores)")
    parser.add_argument("extra", nargs=argparse.REMAINDER,
                        help="after --, options passed to contrastive (override the recipe)")
    return parser


def main(argv: list[str] | None = None) -> int:
    from csplade_pyserini.cli import set_threads
    from csplade_pyserini.train.config import parse_arguments
    from csplade_pyserini.train.contrastive import run_contrastive
    from csplade_pyserini.train.mining import mine_negatives
    from csplade_pyserini.train.teachers import score_teacher

    args = build_parser().parse_args(argv)
    threads = set_threads(args.threads)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    extra = [a for a in args.extra if a != "--"]
    previous = json.loads((out / "recipe.json").read_text()).get("steps", {}) if (out / "recipe.json").exists() else {}
    record: dict = {"threads": threads, "steps": {}}
    begin = time.perf_counter()

    def step(name: str, target: Path, action) -> None:
        start = time.perf_counter()
        if target.exists():
            logger.info("recipe: %s already in %s (delete it to redo)", name, target)
            # a resumed recipe keeps the measurement of the run that made the output
            record["steps"][name] = previous.get(name) or {"skipped": True}
            return
        action()
        record["steps"][name] = {"seconds": round(time.perf_counter() - start, 1), "peak_rss_mb": round(peak_rss_mb())}
        logger.info("recipe: %s done in %.0f s", name, time.perf_counter() - start)

    negatives = out / "negatives.bm25.trec"
    step("negatives", negatives, lambda: mine_negatives(args.data, negatives, hits=100, threads=threads))
    teacher_path = args.teacher or (str(shared_path("models", "splade-tiny")) if shared_path("models", "splade-tiny")
                                    else None)
    teacher_scores = None
    if teacher_path and teacher_path != "none":
        if not Path(teacher_path).exists():
            raise InputError("teacher model folder does not exist", path=teacher_path, field="teacher")
        teacher_scores = out / "teacher.txt"
        step("teacher", teacher_scores, lambda: score_teacher(teacher_path, negatives, teacher_scores, data=args.data))

    runs = [("model", args.config)] + ([("pure", args.pure_config)] if args.pure else [])
    for name, config in runs:
        target = out / name
        options = ["--config", config, "--data", args.data, "--run", str(negatives), "--output-dir", str(target),
                   "--cache-dir", str(out / "cache"), "--threads", str(threads)]
        if teacher_scores is not None:
            options += ["--teacher-scores", str(teacher_scores)]
        if any(target.glob("checkpoint-*")):  # a killed run of this recipe: continue it
            options += ["--resume-from-checkpoint", "latest"]
        elif target.exists():  # killed before its first checkpoint: the recipe's own folder, begun again
            options += ["--overwrite-output-dir"]

        def train(options=options + extra) -> None:
            run_contrastive(*parse_arguments("contrastive", options))

        step(f"train {name}", target / "final", train)
    record["seconds"] = round(time.perf_counter() - begin, 1)
    record["seconds_all_steps"] = round(sum(s.get("seconds", 0) for s in record["steps"].values()), 1)
    record["peak_rss_mb"] = round(peak_rss_mb())
    (out / "recipe.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    logger.info("recipe finished in %.0f s (peak RSS %.0f MB); model: %s/model/best", record["seconds"],
                record["peak_rss_mb"], out)
    return 0
