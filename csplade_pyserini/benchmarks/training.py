"""The CPU training recipe end to end, and one table of what it produced.

    python -m csplade_pyserini.benchmarks.training                       # every run, SciFact + DL19 pool
    python -m csplade_pyserini.benchmarks.training --runs causal-cl --collections scifact

Steps (each skipped when its output exists, so an interrupted benchmark resumes where it stopped):
BM25 hard negatives for the SciFact train split, splade-tiny teacher scores (for ``kd``/``clkd`` runs), one
adaptation phase shared by every run that uses it, the contrastive phase of each run, then the main job's
pipeline on each collection for BM25, splade-tiny, the untrained backbone and every trained
checkpoint. Each pipeline step runs in its own process (its peak RSS is its own); training time and
peak memory come from the checkpoints' ``train_log.jsonl``. The stability table compares the first
contrastive steps with and without the adaptation phase (the ``*-noadapt`` runs).

Results: ``eval/results/bench-training.{md,json}``; per-step reports in ``eval/results/bench-training/``.
A row whose report already existed says when it was measured.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import statistics
from dataclasses import dataclass
from pathlib import Path

from csplade_pyserini.atomic import atomic_file
from csplade_pyserini.benchmarks._subprocess import run_measured
from csplade_pyserini.benchmarks._tables import cell
from csplade_pyserini.cli import run_cli
from csplade_pyserini.paths import EVAL_DIR, RUNS_DIR, shared_path

logger = logging.getLogger(__name__)
RESULTS = EVAL_DIR / "results"
RECIPE = Path(__file__).resolve().parent.parent / "configs" / "cpu-smollm2.yaml"


@dataclass(frozen=True)
class RunPlan:
    """One trained model of the benchmark: attention variant, objective, with or without adaptation, and
    the training command (``contrastive``: LoRA; ``bias``: the frozen model's logit bias only)."""

    name: str
    variant: str
    objective: str = "cl"
    adapt: bool = True
    command: str = "contrastive"


# Names match the CPU conditions of the 2CR matrices (runs/train/<variant>-<objective>[-noadapt]/final);
# <variant>-bias is the recipe's bias phase (the default model is echo-bias/best).
PLANS = {p.name: p for p in [
    *(RunPlan(f"{variant}-{objective}{'' if adapt else '-noadapt'}", variant, objective, adapt)
      for variant in ("causal", "echo", "bidirectional") for objective in ("cl", "kd", "clkd")
      for adapt in (True, False)),
    *(RunPlan(f"{variant}-bias", variant, "cl", False, "bias") for variant in ("causal", "echo", "bidirectional")),
]}
DEFAULT_RUNS = "causal-bias,echo-bias,bidirectional-bias,causal-cl-noadapt,causal-clkd-noadapt"


def _python(label: str, args: list[str]) -> dict:
    logger.info("%s: python %s", label, " ".join(args))
    proc = run_measured(args)
    if proc["returncode"] != 0:
        raise SystemExit(f"{label} failed with exit code {proc['returncode']}")
    return proc


class Benchmark:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.work = Path(args.work)
        self.data = Path(args.data)
        self.reports = RESULTS / args.name
        self.work.mkdir(parents=True, exist_ok=True)
        self.reports.mkdir(parents=True, exist_ok=True)

    # --- training -----------------------------------------------------------------------------------
    def negatives(self) -> Path:
        out = self.work / "scifact-train.bm25.trec"
        if not out.exists():
            _python("mine-negatives", ["-m", "csplade_pyserini.train", "mine-negatives", "--data", str(self.data),
                                       "--output", str(out), "--threads", str(self.args.threads)])
        return out

    def teacher(self, run: Path) -> Path:
        out = self.work / "scifact-train.splade-tiny.scores"
        if not out.exists():
            _python("score-teacher", ["-m", "csplade_pyserini.train", "score-teacher", "--teacher", self.args.splade,
                                      "--run", str(run), "--data", str(self.data), "--top-k", "8",
                                      "--output", str(out), "--threads", str(self.args.threads)])
        return out

    def common(self, variant: str) -> list[str]:
        return ["--config", self.args.config, "--dtype", self.args.dtype, "--variant", variant,
                "--threads", str(self.args.threads)]

    def adapter(self) -> Path:
        """One adaptation for every variant: the recipe's CLM + ReLU phase reads text with causal attention
        whatever variant the contrastive phase uses (as in CSPLADE, where the LM is adapted once)."""
        out = self.work / "adapt-causal"
        if not (out / "final").exists():
            _python("adapt", ["-m", "csplade_pyserini.train", "adapt", *self.common("causal"), "--data", str(self.data),
                              "--output-dir", str(out)])
        return out / "final"

    @staticmethod
    def model_of(out: Path) -> Path:
        """A finished run's model: ``best`` (the recipe's --save-best, chosen on held-out training queries)
        when the run kept one, else ``final``."""
        return out / "best" if (out / "best").exists() else out / "final"

    def train(self, plan: RunPlan) -> Path:
        out = self.work / plan.name
        done = out / "final"
        if done.exists():
            return self.model_of(out)
        if self.args.existing_only:
            raise SystemExit(f"{plan.name} has not been trained ({done} is missing) and --existing-only is given")
        negatives = self.negatives()
        args = ["-m", "csplade_pyserini.train", plan.command, *self.common(plan.variant), "--data", str(self.data),
                "--run", str(negatives), "--objective", plan.objective, "--eval-data", str(self.data),
                "--output-dir", str(out)]
        if plan.adapt:
            args += ["--init-adapter", str(self.adapter())]
        if plan.objective != "cl":
            args += ["--teacher-scores", str(self.teacher(negatives))]
        _python(plan.name, args)
        return self.model_of(out)

    # --- evaluation ---------------------------------------------------------------------------------
    def evaluate(self, collection: str, label: str, extra: list[str]) -> list[dict]:
        report = self.reports / collection / f"{label}.json"
        if not report.exists() and self.args.existing_only:
            logger.warning("no report for %s on %s (--existing-only): left out of the table", label, collection)
            return []
        measured_process = report.with_suffix(".proc.json")
        if report.exists():
            proc = json.loads(measured_process.read_text()) if measured_process.exists() else {}
        else:
            report.parent.mkdir(parents=True, exist_ok=True)
            proc = _python(f"{collection} {label}", [
                "-m", "csplade_pyserini.pipeline", "--collection", collection, "--threads", str(self.args.threads),
                "--report", str(report), *extra])
            with atomic_file(measured_process) as handle:
                json.dump(proc, handle)
        data = json.loads(report.read_text())
        measured = dt.datetime.fromtimestamp(report.stat().st_mtime, dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
        return [{**row, **proc, "label": data["label"], "measured": measured, "key": label} for row in data["rows"]]


def train_summary(checkpoint: Path, adapter: Path | None) -> dict:
    """Training time and peak memory of a checkpoint's run, its adaptation phase included."""
    from csplade_pyserini.training.loop import LOG_NAME, read_log

    phases = [read_log(folder.parent / LOG_NAME) for folder in (checkpoint, adapter) if folder is not None]
    return {"train_s": sum(p[-1]["elapsed"] for p in phases),
            "train_peak_rss_mb": max(r.get("peak_rss_mb", 0) for p in phases for r in p),
            "steps": "+".join(str(p[-1]["step"]) for p in reversed(phases))}


def extra_train_summary(spec: str) -> dict | None:
    """Training time and memory of an ``--extra`` model trained by hand (``csplade:RUN/best`` and the like),
    read from the run's log; ``None`` for a model with no training log (an untrained ablation)."""
    from csplade_pyserini.model.spec import parse_spec
    from csplade_pyserini.training.loop import LOG_NAME

    model, _ = parse_spec(spec)
    if model is None or not (Path(model).parent / LOG_NAME).exists():
        return None
    return train_summary(Path(model), None)


def stability(log: Path, first: int) -> dict:
    """Loss and share of all-zero query/document vectors over the first ``first`` contrastive steps."""
    from csplade_pyserini.training.loop import read_log

    steps = read_log(log, event="train")[:first]
    evals = {r["step"]: r.get("ndcg@10") for r in read_log(log, event="eval")}
    losses = [r["loss"] for r in steps]
    return {"steps": len(steps), "loss_first": losses[0], "loss_last": losses[-1],
            "loss_mean": statistics.fmean(losses), "loss_max": max(losses),
            "zero_share_mean": statistics.fmean(r.get("zero_share", 0.0) for r in steps),
            "zero_share_max": max(r.get("zero_share", 0.0) for r in steps),
            "grad_norm_max": max(r.get("grad_norm", 0.0) for r in steps),
            "nnz_q_last": steps[-1].get("nnz_q"), "nnz_d_last": steps[-1].get("nnz_d"),
            "curve": [round(x, 4) for x in losses], "evals": evals}


def write_tables(rows: list[dict], collections: list[str], stable: dict[str, dict], path: Path) -> str:
    """One row per system: effectiveness on each collection, then size and cost."""
    systems: dict[str, dict] = {}
    for row in rows:
        entry = systems.setdefault(row["key"], {"system": row["system"], "train": row.get("train")})
        entry[row["collection"]] = row
    header = ["system"]
    for c in collections:
        header += [f"{c} nDCG@10", f"{c} R@100" if c == "scifact" else f"{c} R@1K"]
    header += ["terms/doc", "terms/query", "index MB", "encode docs/s", "train s (steps)", "train peak RSS MB",
               "eval peak RSS MB", "measured"]
    lines = [f"# CPU training recipe: every system on {', '.join(collections)}", "",
             "| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for entry in systems.values():
        cells = [entry["system"]]
        for c in collections:
            scores = entry.get(c, {}).get("scores", {})
            recall = scores.get("R@100") if c == "scifact" else scores.get("R(rel=2)@1000", scores.get("R@1000"))
            cells += [cell(scores.get("nDCG@10"), ".4f"), cell(recall, ".4f")]
        first = entry.get(collections[0]) or next(v for k, v in entry.items() if isinstance(v, dict) and "scores" in v)
        train = entry.get("train") or {}
        cells += [cell(first.get("terms_per_doc"), ".1f"), cell(first.get("terms_per_query"), ".1f"),
                  cell(first.get("index_mb"), ".1f"), cell(first.get("docs_per_s"), ".2f"),
                  cell(train.get("train_s"), ".0f") + (f" ({train['steps']})" if train else ""),
                  cell(train.get("train_peak_rss_mb"), ".0f"),
                  cell(max((entry[c].get("peak_rss_mb", 0) for c in collections if c in entry), default=None), ".0f"),
                  first.get("measured", "-")]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Size and speed columns are from the {collections[0]} run.", ""]
    if stable:
        lines += ["## Early contrastive training with and without the adaptation phase", "",
                  "| run | steps | loss step 1 | loss last | mean loss | max loss | mean all-zero share | "
                  "max all-zero share | max grad norm | nnz/query last | nnz/doc last |", "|---" * 11 + "|"]
        for name, s in stable.items():
            lines.append(f"| {name} | {s['steps']} | {s['loss_first']:.3f} | {s['loss_last']:.3f} | "
                         f"{s['loss_mean']:.3f} | {s['loss_max']:.3f} | {s['zero_share_mean']:.3f} | "
                         f"{s['zero_share_max']:.3f} | {s['grad_norm_max']:.2f} | {cell(s['nnz_q_last'], '.0f')} | "
                         f"{cell(s['nnz_d_last'], '.0f')} |")
        lines += ["", "Loss curves (first steps):", ""]
        lines += [f"- {name}: {' '.join(format(x, '.3f') for x in s['curve'])}" for name, s in stable.items()]
        lines += ["", "In-training nDCG@10 on each run's evaluation slice (eval_split, eval_queries and eval_docs in "
                  "its training_args.json; a run with save_best is evaluated above with its best model):", ""]
        lines += [f"- {name}: " + (", ".join(f"step {k}: {v:.3f}" for k, v in sorted(s["evals"].items())) or "none")
                  for name, s in stable.items()]
    text = "\n".join(lines) + "\n"
    with atomic_file(path) as handle:
        handle.write(text)
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m csplade_pyserini.benchmarks.training", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default=DEFAULT_RUNS, help=f"comma-separated, from: {', '.join(PLANS)}")
    parser.add_argument("--collections", default="scifact,dl19-pool")
    parser.add_argument("--config", default=str(RECIPE), help="training recipe (YAML)")
    parser.add_argument("--data", default=str(shared_path("data", "beir", "scifact")), help="BEIR training folder")
    parser.add_argument("--splade", default=str(shared_path("models", "splade-tiny")), help="baseline and teacher")
    parser.add_argument("--work", default=str(RUNS_DIR / "train"), help="checkpoints and training data")
    parser.add_argument("--dtype", default="auto", help="training dtype (auto: bf16 where the CPU has it)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-baselines", action="store_true", help="trained models only")
    parser.add_argument("--zero-shot-systems", default=None,
                        help="systems (bm25, splade-tiny, untrained-causal, extra names, run names) evaluated on the "
                             "collections after the first (default: all)")
    parser.add_argument("--extra", action="append", default=[], metavar="NAME=SPEC",
                        help="another csplade spec to evaluate beside the runs (e.g. an ablation, or a run trained by "
                             "hand with other flags: its training time and memory are read from its log)")
    parser.add_argument("--existing-only", action="store_true",
                        help="train nothing and run no new evaluation: tabulate the reports that exist")
    parser.add_argument("--stability-steps", type=int, default=20)
    parser.add_argument("--stability-from", default=None,
                        help="comma-separated run folders (e.g. stopped early) whose first steps join the stability table")
    parser.add_argument("--name", default="bench-training", help="results file stem")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    unknown = [r for r in args.runs.split(",") if r and r not in PLANS]
    if unknown:
        raise SystemExit(f"unknown runs {unknown}; choose from {', '.join(PLANS)}")
    plans = [PLANS[r] for r in args.runs.split(",") if r]
    collections = [c for c in args.collections.split(",") if c]
    bench = Benchmark(args)
    checkpoints = {plan.name: bench.train(plan) for plan in plans}

    stable = {}
    for plan in plans:
        if plan.variant == "causal" and plan.objective == "cl" and plan.command == "contrastive":
            stable[plan.name] = stability(checkpoints[plan.name].parent / "train_log.jsonl", args.stability_steps)
    for folder in filter(None, (args.stability_from or "").split(",")):
        stable[Path(folder).name] = stability(Path(folder) / "train_log.jsonl", args.stability_steps)

    systems: list[tuple[str, list[str], dict | None]] = []
    if not args.no_baselines:
        systems += [("bm25", ["--no-csplade"], None),
                    ("splade-tiny", ["--no-bm25", "--no-csplade", "--splade", args.splade], None),
                    ("untrained-causal", ["--no-bm25", "--encoder", "csplade:smollm2,variant=causal"], None)]
    for plan in plans:
        adapter = bench.adapter() if plan.adapt else None
        systems.append((plan.name, ["--no-bm25", "--encoder", f"csplade:{checkpoints[plan.name]}"],
                        train_summary(checkpoints[plan.name], adapter)))
    for item in args.extra:
        name, _, spec = item.partition("=")
        if not spec:
            raise SystemExit(f"--extra wants NAME=SPEC, got {item!r}")
        systems.append((name, ["--no-bm25", "--encoder", spec], extra_train_summary(spec)))
    zero_shot = set(args.zero_shot_systems.split(",")) if args.zero_shot_systems else {key for key, _, _ in systems}
    rows, text = [], None
    for position, collection in enumerate(collections):
        for key, extra, train in systems:
            if position > 0 and key not in zero_shot:
                continue
            for row in bench.evaluate(collection, key, extra):
                rows.append({**row, "collection": collection, "train": train})
            with atomic_file(RESULTS / f"{args.name}.json") as handle:
                json.dump({"rows": rows, "stability": stable}, handle, indent=2)
            text = write_tables(rows, collections, stable, RESULTS / f"{args.name}.md")
    print(text or write_tables(rows, collections, stable, RESULTS / f"{args.name}.md"))
    return 0


if __name__ == "__main__":
    run_cli(main)
