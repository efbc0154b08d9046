"""Plan, execute, evaluate and compare the conditions of a reproduction matrix (Pyserini 2CR style).

For every (condition, topic column) the runner decides how it can run here:

* ``pipeline``: the corpus ships with ``../shared`` (SciFact, the DL19 pool) and the condition has a
  pipeline command: encode + index + search end to end, the run taken from the pipeline's JSON report;
* ``search``: the index named by the condition exists (or, with ``--allow-download``, is a Pyserini
  prebuilt index that Pyserini may fetch);
* ``skip``: anything else (no documents here, a checkpoint that does not exist): reported as SKIPPED
  with the reason, never as a pass.

Runs are judged with ir-measures (the numbers trec_eval prints) and compared with the expected scores
to four decimals: OK when equal after rounding, OKish when higher or lower by at most 0.0002, FAIL
otherwise. Published figures (papers, Pyserini's regressions) are compared but only the difference is
reported; missing expectations give "no reference"; ``--quick`` results are labelled QUICK and never
compared.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, Callable

from csplade_pyserini.atomic import atomic_file
from csplade_pyserini.cli import default_threads
from csplade_pyserini.datasets import LOCAL_COLLECTIONS, local_collection
from csplade_pyserini.paths import shared_dir
from csplade_pyserini.repro.matrix import Condition, Expectation, Matrix, TopicColumn, render

OK, OKISH, FAIL = "OK", "OKish", "FAIL"
PUBLISHED, NO_REFERENCE, QUICK = "published", "no reference", "QUICK"
SKIPPED, ERROR, NOT_EVALUATED = "SKIPPED", "ERROR", "not evaluated"
TOLERANCE_UNITS = 2  # 0.0002, in units of the fourth decimal

_COLOURS = {OK: "", OKISH: "\033[94m", FAIL: "\033[91m", PUBLISHED: "\033[93m", QUICK: "\033[95m",
            SKIPPED: "\033[90m", ERROR: "\033[91m", NO_REFERENCE: "\033[90m"}

STAT_KEYS = ("index_mb", "terms_per_doc", "terms_per_query", "postings_per_query", "query_encode_ms", "search_ms",
             "docs_per_s", "encode_s", "model_load_s")


@dataclass
class Settings:
    output: Path = Path("eval/repro")
    threads: int = field(default_factory=default_threads)
    batch_size: int = 64
    device: str = "cpu"
    quick: bool = False
    allow_download: bool = False
    rerun: bool = False
    dry_run: bool = False
    skip_eval: bool = False
    display_commands: bool = False
    colour: bool = False


@dataclass
class Job:
    condition: Condition
    column: TopicColumn
    expectation: Expectation | None
    mode: str  # pipeline | build (index command, then search) | search | skip
    command: str
    reason: str
    run: Path
    report: Path | None
    index: str
    index_command: str
    eval_command: str
    quick: bool


# --- comparison --------------------------------------------------------------------------------
def _units(value: float) -> int:
    """The value in units of 0.0001 after rounding half up (0.65434 -> 6543, 0.65435 -> 6544)."""
    return int(Decimal(repr(float(value))).quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP).scaleb(4))


def compare(score: float, expected: float | None, published: bool = False, quick: bool = False) -> str:
    """Pyserini's verdict on one number: OK / OKish / FAIL, or published / no reference / QUICK."""
    if expected is None:
        return NO_REFERENCE
    if quick:
        return QUICK
    if published:
        return PUBLISHED
    got, want = _units(score), _units(expected)
    if got == want:
        return OK
    if got > want or want - got <= TOLERANCE_UNITS:
        return OKISH
    return FAIL


def verdict_text(metric: str, score: float, expected: float | None, status: str, source: str = "") -> str:
    line = f"{metric:7}: {score:.4f} [{status}]"
    if status in (OKISH, FAIL):
        line += f" expected {expected:.4f}"
    elif status == PUBLISHED:
        line += f" expected {expected:.4f}, difference {score - expected:+.4f}" + (f" ({source})" if source else "")
    elif status == QUICK:
        line += " QUICK subset, not compared" + (f" (full-collection expectation {expected:.4f})"
                                                  if expected is not None else "")
    return line


# --- planning ----------------------------------------------------------------------------------
def _python(command: str) -> list[str]:
    parts = shlex.split(command)
    if parts and parts[0] == "python":
        parts[0] = sys.executable
    return parts


def template_values(matrix: Matrix, condition: Condition, column: TopicColumn, settings: Settings) -> dict[str, Any]:
    shared = shared_dir()
    values: dict[str, Any] = {
        "topics": column.topic_key, "eval_key": column.eval_key, "corpus": column.corpus, "name": condition.name,
        "threads": settings.threads, "batch_size": settings.batch_size, "device": settings.device,
        "shared": str(shared) if shared is not None else "../shared",
    }
    defaults = {"index": "index/{corpus}.{name}", "embeddings": "encode/{corpus}.{name}",
                "corpus_dir": "collections/{corpus}", **matrix.defaults}
    values["index"] = render(condition.index or defaults["index"], values)
    values["embeddings"] = render(defaults["embeddings"], values)
    values["corpus_dir"] = render(defaults["corpus_dir"], values)
    return values


def eval_command(run: str | Path, column: TopicColumn) -> str:
    measures = " ".join(shlex.quote(m) for m in column.metrics.values())
    return f"python -m csplade_pyserini.evaluate --run {run} --qrels {column.eval_key} --measures {measures}"


def requirement_met(requirement: str, settings: Settings) -> bool:
    """A path that must exist, or ``hub:OWNER/NAME``: a Hugging Face repository, met when downloads are
    allowed or the repository is already in the local Hugging Face cache."""
    if not requirement.startswith("hub:"):
        return Path(requirement).exists()
    if settings.allow_download:
        return True
    from huggingface_hub import try_to_load_from_cache

    repo = requirement[len("hub:"):]
    return any(isinstance(try_to_load_from_cache(repo, name), str) for name in ("config.json", "adapter_config.json"))


def _is_prebuilt(index: str) -> bool:
    return "/" not in index and os.sep not in index and not index.startswith(".")


def plan(matrix: Matrix, names: list[str] | None, settings: Settings) -> list[Job]:
    """Jobs for the named conditions (all when ``names`` is None), in matrix order per condition."""
    conditions = matrix.conditions if names is None else [matrix.condition(n) for n in names]
    local_names = ", ".join(LOCAL_COLLECTIONS)
    jobs = []
    for condition in conditions:
        for expectation in condition.topics:
            column = matrix.column(expectation.topic)
            values = template_values(matrix, condition, column, settings)
            index = values["index"]
            local = local_collection(column.corpus) is not None
            quick = settings.quick and local and bool(condition.pipeline)
            suffix = ".quick" if quick else ""
            base = settings.output
            run = base / "runs" / f"run.{matrix.collection}.{condition.name}.{column.key}{suffix}.txt"
            report = base / "reports" / f"{matrix.collection}.{condition.name}.{column.key}{suffix}.json"
            values.update(output=run, report=report)
            if local:  # the documents are on this machine: an index command reads them where they are
                values["corpus_dir"] = str(local_collection(column.corpus))
            search_command = render(condition.command, values)
            index_command = render(condition.index_command, values) if condition.index_command else ""
            missing = [r for r in condition.requires if not requirement_met(r, settings)]
            mode, reason, command = "search", "", search_command
            if local and condition.pipeline:
                mode, command = "pipeline", render(condition.pipeline, values) + (" --quick" if quick else "")
            elif Path(index).is_dir():
                mode = "search"
            elif local and index_command:
                mode = "build"
            elif _is_prebuilt(index) and settings.allow_download:
                mode = "search"
            else:
                mode = "skip"
                where = (f"corpus {column.corpus!r} is not available on this machine (documents here only for "
                         f"{local_names})" if not local else
                         f"condition has no pipeline command for the local corpus {column.corpus!r}")
                hint = ("; --allow-download lets Pyserini fetch the prebuilt index" if _is_prebuilt(index)
                        else "; build it with the index command")
                reason = f"{where}, and no index at {index!r}{hint}"
            if missing and mode != "skip":
                mode = "skip"
                reason = f"requires {', '.join(missing)} (not found here)"
            elif missing:
                reason += f"; also requires {', '.join(missing)}"
            jobs.append(Job(condition, column, expectation, mode, command, reason, run,
                            report if mode == "pipeline" else None, index, index_command,
                            eval_command(run, column), quick))
    return jobs


# --- execution ---------------------------------------------------------------------------------
def _folder_mb(path: Path) -> float | None:
    if not path.is_dir():
        return None
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def execute(job: Job, settings: Settings, log: Callable[[str], None]) -> tuple[str, str, dict]:
    """Run the job's command unless its outputs exist; return (state, message, stats)."""
    logs = settings.output / "logs"
    log_path = logs / f"{job.run.stem}.log"
    reuse = not settings.rerun and job.run.exists() and (job.report is None or job.report.exists())
    if not reuse:
        job.run.parent.mkdir(parents=True, exist_ok=True)
        if job.report is not None:
            job.report.parent.mkdir(parents=True, exist_ok=True)
        logs.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        commands = [job.command]
        if job.mode == "build" and not Path(job.index).is_dir():  # "A && B" index commands run in turn
            commands[:0] = [part.strip() for part in job.index_command.split(" && ")]
        with open(log_path, "w", encoding="utf-8") as handle:
            for command in commands:
                handle.write(f"$ {command}\n")
                handle.flush()
                code = subprocess.run(_python(command), stdout=handle, stderr=subprocess.STDOUT,
                                      env={**os.environ, "PYTHONUNBUFFERED": "1"}).returncode
                if code != 0:
                    break
        seconds = time.perf_counter() - start
        if code != 0:
            tail = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
            return ERROR, f"command exited with status {code} after {seconds:.0f} s; log {log_path}:\n" + \
                "\n".join("      | " + t for t in tail), {}
        log(f"    ran in {seconds:.0f} s (log {log_path})")
    else:
        log(f"    reusing existing {'report ' + str(job.report) if job.report else 'run ' + str(job.run)}")
    stats: dict[str, Any] = {}
    if job.mode == "pipeline":
        report = json.loads(job.report.read_text(encoding="utf-8"))
        rows = report.get("rows", [])
        if len(rows) != 1:
            return ERROR, f"pipeline report {job.report} has {len(rows)} rows; a condition must produce one", {}
        row = rows[0]
        source = Path(row["run"])
        if not reuse or not job.run.exists():
            if not source.exists():
                return ERROR, f"the pipeline's run {source} does not exist", {}
            if source.resolve() != job.run.resolve():
                shutil.copyfile(source, job.run)
        stats = {k: row[k] for k in STAT_KEYS if row.get(k) is not None}
        stats["system"] = row.get("system")
        stats["label"] = report.get("label")
        if report.get("quick"):
            stats["quick"] = True
    elif not job.run.exists():
        return ERROR, f"the command did not write its run {job.run}", {}
    else:
        size = _folder_mb(Path(job.index))
        if size is not None:
            stats["index_mb"] = size
    return "done", "", stats


def evaluate(job: Job) -> dict[str, float]:
    from csplade_pyserini.evaluate.measures import evaluate_run
    import ir_measures

    names = list(job.column.metrics)
    measures = [ir_measures.parse_measure(job.column.metrics[n]) for n in names]
    scores = evaluate_run(job.run, job.column.eval_key, measures)
    return {name: scores[str(measure)] for name, measure in zip(names, measures)}


# --- results store -----------------------------------------------------------------------------
def results_path(output: Path, collection: str) -> Path:
    return output / f"results.{collection}.json"


def load_results(output: Path, collection: str) -> dict:
    path = results_path(output, collection)
    if path.exists():
        return json.loads(path.read_text(encoding="utf-8"))
    return {"collection": collection, "results": {}, "quick": {}}


def save_results(output: Path, collection: str, data: dict) -> Path:
    path = results_path(output, collection)
    data["updated"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    with atomic_file(path) as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
    return path


def _record(store: dict, job: Job, entry: dict) -> None:
    section = store.setdefault("quick" if job.quick else "results", {})
    current = section.setdefault(job.condition.name, {}).get(job.column.key)
    if entry["state"] in (SKIPPED, "run") and current and current.get("state") == "evaluated":
        return  # a measured result outlives a later skip (a checkpoint moved away) or --skip-eval run
    section[job.condition.name][job.column.key] = entry


# --- the run -----------------------------------------------------------------------------------
@dataclass
class Outcome:
    counts: dict[str, int]
    results_file: Path | None
    failed: bool


def _colour(text: str, status: str, on: bool) -> str:
    code = _COLOURS.get(status, "")
    return f"{code}{text}\033[0m" if on and code else text


def format_command(command: str) -> str:
    """Pyserini's display: one option group per line."""
    out = command
    for flag in (" --index", " --topics", " --encoder", " --output ", " --report", " --collection", " --threads",
                 " && "):
        out = out.replace(flag, " \\\n  " + flag.strip() + (" " if flag.endswith(" ") else ""))
    return out


def run_matrix(matrix: Matrix, jobs: list[Job], settings: Settings, out: Callable[[str], None] = print) -> Outcome:
    start = time.time()
    counts: dict[str, int] = {}
    store = load_results(settings.output, matrix.collection) if not settings.dry_run else {}
    measured: dict[str, dict[str, dict[str, float]]] = {}

    def count(status: str) -> None:
        counts[status] = counts.get(status, 0) + 1

    current = None
    for job in jobs:
        if job.condition is not current:
            if current is not None:
                _average(matrix, current, measured.get(current.name, {}), settings, out, count)
            current = job.condition
            out(f'# Running condition "{job.condition.name}": {job.condition.display}\n')
        out(f"  - topic_key: {job.column.topic_key} [{job.column.key}, corpus {job.column.corpus}]")
        if settings.dry_run or settings.display_commands:
            prefix = f"# SKIPPED: {job.reason}\n" if job.mode == "skip" else ""
            if job.mode == "build" and not Path(job.index).is_dir():
                prefix += "# build the index\n" + "\n".join(format_command(part.strip())
                                                          for part in job.index_command.split(" && ")) + "\n"
            out(f"\n```bash\n{prefix}{format_command(job.command)}\n```\n")
        if settings.dry_run:
            continue
        if job.mode == "skip":
            out("    " + _colour(f"[{SKIPPED}] {job.reason}", SKIPPED, settings.colour))
            count(SKIPPED)
            _record(store, job, {"state": SKIPPED, "reason": job.reason, "command": job.command})
            continue
        state, message, stats = execute(job, settings, out)
        if state == ERROR:
            out("    " + _colour(f"[{ERROR}] {message}", ERROR, settings.colour))
            count(ERROR)
            _record(store, job, {"state": ERROR, "reason": message.splitlines()[0], "command": job.command})
            continue
        entry: dict[str, Any] = {"state": "run", "command": job.command, "mode": job.mode, "run": str(job.run),
                                 "report": str(job.report) if job.report else None, "stats": stats,
                                 "quick": job.quick, "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        if settings.skip_eval:
            count(NOT_EVALUATED)
            _record(store, job, entry)
            continue
        scores = evaluate(job)
        expected = job.expectation.scores if job.expectation else {}
        published = bool(job.expectation and job.expectation.published)
        verdicts = {}
        for metric, score in scores.items():
            status = compare(score, expected.get(metric), published, job.quick)
            verdicts[metric] = status
            count(status)
            out("    " + _colour(verdict_text(metric, score, expected.get(metric), status,
                                              job.expectation.source if published else ""), status, settings.colour))
        if not job.quick:
            measured.setdefault(job.condition.name, {})[job.column.key] = scores
        entry.update(state="evaluated", scores=scores, verdicts=verdicts,
                     expected={m: expected.get(m) for m in scores}, published=published)
        _record(store, job, entry)
        out("")
    if current is not None and not settings.dry_run:
        _average(matrix, current, measured.get(current.name, {}), settings, out, count)

    results_file = None
    if not settings.dry_run:
        _summary_table(matrix, jobs, store, out)
        results_file = save_results(settings.output, matrix.collection, store)
        order = [OK, OKISH, FAIL, PUBLISHED, NO_REFERENCE, QUICK, NOT_EVALUATED, SKIPPED, ERROR]
        out("\n" + ", ".join(f"{k}: {counts.get(k, 0)}" for k in order))
        out(f"results in {results_file}")
    end = time.time()
    fmt = "%Y-%m-%d %H:%M:%S"
    out(f"\nStart time: {datetime.fromtimestamp(start, tz=timezone.utc).strftime(fmt)}")
    out(f"End time: {datetime.fromtimestamp(end, tz=timezone.utc).strftime(fmt)}")
    out(f"Total elapsed time: {end - start:.0f}s ~{(end - start) / 3600:.1f}hr")
    return Outcome(counts, results_file, counts.get(FAIL, 0) > 0 or counts.get(ERROR, 0) > 0)


def _average(matrix: Matrix, condition: Condition, scores: dict[str, dict[str, float]], settings: Settings,
             out: Callable[[str], None], count: Callable[[str], None]) -> None:
    """Compare the BEIR-13 style mean once every topic it averages over has been measured."""
    if not matrix.average or condition.average is None:
        return
    over = matrix.average["over"]
    if not all(k in scores for k in over):
        return
    out(f"  - {matrix.average['display']} (mean over {len(over)} topics)")
    for metric in matrix.average["metrics"]:
        value = sum(scores[k][metric] for k in over) / len(over)
        expected = condition.average.scores.get(metric)
        status = compare(value, expected, condition.average.published)
        count(status)
        out("    " + _colour(verdict_text(metric, value, expected, status, condition.average.source), status,
                             settings.colour))


def _summary_table(matrix: Matrix, jobs: list[Job], store: dict, out: Callable[[str], None]) -> None:
    """Pyserini's closing table: the conditions just run, the columns that produced numbers."""
    names = list(dict.fromkeys(j.condition.name for j in jobs))
    keys = [t.key for t in matrix.topics
            if any(store.get("results", {}).get(n, {}).get(t.key, {}).get("scores")
                   or store.get("quick", {}).get(n, {}).get(t.key, {}).get("scores") for n in names)]
    if not keys:
        return
    width = 50
    header1 = " " * width + "".join(f"{matrix.column(k).display[:8 * len(matrix.column(k).metrics) - 2]:<{8 * len(matrix.column(k).metrics) + 2}}" for k in keys)
    header2 = " " * width + "".join("".join(f"{m:>8}" for m in matrix.column(k).metrics) + "  " for k in keys)
    out("\n" + header1.rstrip())
    out(header2.rstrip())
    for name in names:
        condition = matrix.condition(name)
        cells = ""
        quick_row = False
        for k in keys:
            entry = store.get("results", {}).get(name, {}).get(k)
            if not (entry and entry.get("scores")):
                entry = store.get("quick", {}).get(name, {}).get(k)
                quick_row = quick_row or bool(entry and entry.get("scores"))
            scores = (entry or {}).get("scores") or {}
            cells += "".join(f"{scores[m]:8.4f}" if m in scores else f"{'-':>8}" for m in matrix.column(k).metrics) + "  "
        label = condition.display + (" (QUICK)" if quick_row else "")
        out(f"{label[:width - 2]:{width}}{cells.rstrip()}")
