"""Reproduction reports: a Markdown page, an HTML page in the look of Pyserini's 2CR pages, and plots.

Rows are the matrix's conditions (grouped as in the YAML), columns its topics and metrics. A cell shows
the measured score and its verdict when the condition ran here, else the expected score (``†`` marks
published figures, ``()`` a reference measured earlier). Every condition has a collapsible block with
the exact commands (index, run, evaluation), skip reasons and index statistics. The plots put nDCG@10
against index size and against query latency for every condition that ran.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from csplade_pyserini.atomic import atomic_file
from csplade_pyserini.repro.matrix import Condition, Matrix
from csplade_pyserini.repro.runner import (FAIL, OK, OKISH, PUBLISHED, QUICK, SKIPPED, Job, compare,
                                           format_command)

STAT_COLUMNS = [("index_mb", "index MB", "{:.1f}"), ("terms_per_doc", "terms/doc", "{:.1f}"),
                ("terms_per_query", "terms/query", "{:.1f}"), ("postings_per_query", "postings/query", "{:.0f}"),
                ("query_encode_ms", "encode ms/q", "{:.1f}"), ("search_ms", "search ms/q", "{:.1f}"),
                ("latency_ms", "latency ms/q", "{:.1f}")]
MAX_MD_COLUMNS = 12


def _entry(results: dict, condition: str, topic: str) -> tuple[dict | None, bool]:
    """The measured entry of a cell (full run first, else QUICK) and whether it is QUICK."""
    full = results.get("results", {}).get(condition, {}).get(topic)
    if full and full.get("scores"):
        return full, False
    quick = results.get("quick", {}).get(condition, {}).get(topic)
    if quick and quick.get("scores"):
        return quick, True
    return full, False


def _latency(stats: dict) -> float | None:
    if stats.get("search_ms") is None:
        return None
    return float(stats.get("query_encode_ms") or 0.0) + float(stats["search_ms"])


def _verdict(entry: dict, quick: bool, expectation, metric: str) -> str:
    """Judged against the matrix as it is now (expectations filled later apply without a rerun)."""
    expected = expectation.scores.get(metric) if expectation else None
    return compare(entry["scores"][metric], expected, bool(expectation and expectation.published), quick)


def _cell(entry: dict | None, quick: bool, expectation, metric: str) -> tuple[str, str]:
    """(text, status) for one metric of one cell."""
    expected = expectation.scores.get(metric) if expectation else None
    published = bool(expectation and expectation.published)
    if entry and entry.get("scores") and metric in entry["scores"]:
        return f"{entry['scores'][metric]:.4f}", _verdict(entry, quick, expectation, metric)
    if expected is not None:
        return (f"{expected:.4f}†" if published else f"({expected:.4f})"), "expected"
    return "–", ""


def _job_map(jobs: list[Job]) -> dict[tuple[str, str], Job]:
    return {(j.condition.name, j.column.key): j for j in jobs}


def _columns(matrix: Matrix, compact: bool) -> list[tuple[str, str]]:
    cols = []
    for topic in matrix.topics:
        metrics = list(topic.metrics)
        for metric in (metrics[:1] if compact else metrics):
            cols.append((topic.key, metric))
    return cols


def _condition_summary(matrix: Matrix, condition: Condition, results: dict, jobs: dict) -> str:
    tally: dict[str, int] = {}
    for expectation in condition.topics:
        entry, quick = _entry(results, condition.name, expectation.topic)
        job = jobs.get((condition.name, expectation.topic))
        if entry and entry.get("scores"):
            for metric in entry["scores"]:
                status = _verdict(entry, quick, expectation, metric)
                tally[status] = tally.get(status, 0) + 1
        elif (entry and entry.get("state") == SKIPPED) or (job and job.mode == "skip"):
            tally["skipped"] = tally.get("skipped", 0) + 1
        elif entry and entry.get("state") == "ERROR":
            tally["error"] = tally.get("error", 0) + 1
        else:
            tally["not run"] = tally.get("not run", 0) + 1
    order = [OK, OKISH, FAIL, PUBLISHED, "no reference", QUICK, "error", "skipped", "not run"]
    return ", ".join(f"{tally[k]} {k}" for k in order if tally.get(k))


def _average_cell(matrix: Matrix, condition: Condition, results: dict) -> str:
    if not matrix.average:
        return ""
    metric = matrix.average["metrics"][0]
    values = []
    for key in matrix.average["over"]:
        entry = results.get("results", {}).get(condition.name, {}).get(key) or {}
        if metric not in (entry.get("scores") or {}):
            values = None
            break
        values.append(entry["scores"][metric])
    if values:
        return f"{sum(values) / len(values):.4f}"
    if condition.average and condition.average.scores.get(metric) is not None:
        value = condition.average.scores[metric]
        return f"{value:.4f}†" if condition.average.published else f"({value:.4f})"
    return "–"


def _measured_points(matrix: Matrix, results: dict) -> list[dict[str, Any]]:
    points = []
    for condition in matrix.conditions:
        for topic in matrix.topics:
            entry, quick = _entry(results, condition.name, topic.key)
            if not entry or not entry.get("scores"):
                continue
            metric = "nDCG@10" if "nDCG@10" in topic.metrics else next(iter(topic.metrics))
            stats = dict(entry.get("stats") or {})
            stats["latency_ms"] = _latency(stats)
            points.append({"condition": condition.name, "display": condition.display, "topic": topic.key,
                           "topic_display": topic.display, "metric": metric, "score": entry["scores"][metric],
                           "quick": quick, "stats": stats})
    return points


# --- Markdown ------------------------------------------------------------------------------------
def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|")


def markdown(matrix: Matrix, jobs: list[Job], results: dict) -> str:
    jobmap = _job_map(jobs)
    compact = sum(len(t.metrics) for t in matrix.topics) > MAX_MD_COLUMNS
    cols = _columns(matrix, compact)
    lines = [f"# Reproductions: {matrix.title}", ""]
    if matrix.description:
        lines += [matrix.description, ""]
    lines += [f"Matrix: `{Path(matrix.source).name}`; results: {results.get('updated', 'none measured yet')}.", "",
              "Cells: measured score (verdict) where the condition ran here; otherwise the expected score, "
              "`†` = published figure (paper or Pyserini regression, not reproduced here), `(x)` = reference "
              "measured earlier, `–` = none. OK = equal to 4 decimals; OKish = higher, or lower by at most "
              "0.0002; FAIL otherwise. QUICK = `--quick` subset (judged documents + a sample), never compared.", ""]
    if compact:
        lines += [f"Only the first metric of each topic is shown here ({', '.join(dict.fromkeys(c[1] for c in cols))}); "
                  "the details below list all of them.", ""]
    header = ["condition"] + [f"{matrix.column(k).display} {m}" for k, m in cols]
    if matrix.average:
        header.append(f"{matrix.average['display']} {matrix.average['metrics'][0]}")
    header.append("status")
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    group = None
    for condition in matrix.conditions:
        if condition.group and condition.group != group:
            group = condition.group
            lines.append(f"| **{_md_escape(group)}** |" + " |" * (len(header) - 1))
        cells = [f"[{_md_escape(condition.display)}](#{condition.name})"]
        for key, metric in cols:
            expectation = condition.expectation(key)
            entry, quick = _entry(results, condition.name, key)
            if expectation is None:
                cells.append("")
                continue
            text, status = _cell(entry, quick, expectation, metric)
            job = jobmap.get((condition.name, key))
            if status == "expected" or not status:
                if job and job.mode == "skip":
                    text = "skipped" if text == "–" else f"{text} skipped"
            else:
                text += f" {status}"
            cells.append(text)
        if matrix.average:
            cells.append(_average_cell(matrix, condition, results))
        cells.append(_condition_summary(matrix, condition, results, jobmap))
        lines.append("| " + " | ".join(cells) + " |")

    points = [p for p in _measured_points(matrix, results)]
    if points:
        lines += ["", "## Index statistics (conditions that ran)", "",
                  "| condition | topic | " + " | ".join(c[1] for c in STAT_COLUMNS) + " |",
                  "|" + "---|" * (len(STAT_COLUMNS) + 2)]
        for p in points:
            stats = p["stats"]
            vals = [fmt.format(stats[k]) if stats.get(k) is not None else "–" for k, _, fmt in STAT_COLUMNS]
            lines.append(f"| {p['condition']}{' (QUICK)' if p['quick'] else ''} | {p['topic']} | " + " | ".join(vals) + " |")
    lines += ["", "## Plots", "", f"![nDCG@10 against index size]({matrix.collection}.effectiveness-vs-index-size.png)", "",
              f"![nDCG@10 against query latency]({matrix.collection}.effectiveness-vs-latency.png)", "",
              "## Conditions", ""]
    for condition in matrix.conditions:
        lines += _markdown_condition(matrix, condition, results, jobmap)
    return "\n".join(lines) + "\n"


def _markdown_condition(matrix: Matrix, condition: Condition, results: dict, jobmap: dict) -> list[str]:
    lines = [f'<a id="{condition.name}"></a>', f"### {condition.name}: {condition.display}", ""]
    if condition.note:
        lines += [condition.note, ""]
    if condition.published and condition.source:
        lines += [f"Published figures: {condition.source}.", ""]
    if condition.requires:
        lines += ["Requires: " + ", ".join(f"`{r}`" for r in condition.requires), ""]
    lines += ["| topic | metric | measured | expected | verdict |", "|---|---|---|---|---|"]
    for expectation in condition.topics:
        column = matrix.column(expectation.topic)
        entry, quick = _entry(results, condition.name, column.key)
        job = jobmap.get((condition.name, column.key))
        for metric in column.metrics:
            expected = expectation.scores.get(metric)
            exp_text = "–" if expected is None else f"{expected:.4f}" + ("†" if expectation.published else "")
            if entry and entry.get("scores"):
                got = entry["scores"][metric]
                verdict = _verdict(entry, quick, expectation, metric)
                if verdict == PUBLISHED and expected is not None:
                    verdict += f" ({got - expected:+.4f})"
                lines.append(f"| {column.display} | {metric} | {got:.4f} | {exp_text} | {verdict} |")
            else:
                state = (entry or {}).get("state")
                verdict = "skipped" if (state == SKIPPED or (job and job.mode == "skip")) else \
                    ("error" if state == "ERROR" else "not run")
                lines.append(f"| {column.display} | {metric} | – | {exp_text} | {verdict} |")
    lines.append("")
    lines += ["<details><summary>Commands</summary>", ""]
    for expectation in condition.topics:
        job = jobmap.get((condition.name, expectation.topic))
        if job is None:
            continue
        column = job.column
        lines.append(f"**{column.display}** (`{column.topic_key}`, corpus `{column.corpus}`)"
                     + (f": skipped here, {_md_escape(job.reason)}" if job.mode == "skip" else ""))
        lines.append("")
        lines.append("```bash")
        if job.mode != "pipeline" and job.index_command:
            lines.append("# build the index")
            lines.append(format_command(job.index_command))
        lines.append(format_command(job.command))
        lines.append(job.eval_command)
        lines.append("```")
        lines.append("")
    lines += ["</details>", ""]
    return lines


# --- HTML ----------------------------------------------------------------------------------------
_HTML_HEAD = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="UTF-8" />
<meta name="viewport" content="width=device-width, initial-scale=1, shrink-to-fit=no" />
<title>csplade-pyserini Reproductions: {title}</title>
<link rel="stylesheet" href="https://cdnjs.cloudflare.com/ajax/libs/mdb-ui-kit/4.0.0/mdb.min.css" />
<style>
body {{ font-family: Roboto, Helvetica, Arial, sans-serif; margin: 2rem; }}
table.table {{ border-collapse: collapse; font-size: 0.9rem; }}
table.table th, table.table td {{ padding: 0.35rem 0.6rem; border-bottom: 1px solid #ddd; text-align: right; white-space: nowrap; }}
table.table td.name, table.table th.name {{ text-align: left; }}
tr th.headertop {{ border-bottom: none; text-align: center; }}
tr.group td {{ text-align: left; font-weight: 600; background: #f4f4f4; }}
tr.hide-table-padding td {{ padding: 0 0.6rem; text-align: left; border-bottom: 2px solid #ccc; }}
blockquote.mycode {{ border-left: 3px solid #ccc; margin-left: 25px; margin-top: 10px; padding-left: 15px; }}
pre {{ white-space: pre-wrap; margin: 0; }}
.OK {{ color: #1b7f1b; }} .OKish {{ color: #1565c0; }} .FAIL {{ color: #c62828; font-weight: 600; }}
.published {{ color: #a66f00; }} .QUICK {{ color: #8e24aa; }} .expected, .skipped, .no-reference {{ color: #888; }}
.summary {{ text-align: left !important; color: #555; }}
summary {{ cursor: pointer; color: #1565c0; }}
</style>
</head>
<body>
<h2>csplade-pyserini Reproductions: {title}</h2>
<p>{description}</p>
<p>Cells show the measured score and its verdict where the condition ran here; otherwise the expected score
(<span class="published">†</span> published figure, not reproduced here; (x) reference measured earlier; – none).
OK = equal to 4 decimals; OKish = higher, or lower by at most 0.0002; FAIL otherwise. QUICK = <code>--quick</code>
subset, never compared. Results updated: {updated}.</p>
"""


def _e(text: Any) -> str:
    return html.escape(str(text))


def html_page(matrix: Matrix, jobs: list[Job], results: dict) -> str:
    jobmap = _job_map(jobs)
    cols = _columns(matrix, compact=False)
    ncols = 2 + len(cols) + (1 if matrix.average else 0) + 1
    out = [_HTML_HEAD.format(title=_e(matrix.title), description=_e(matrix.description),
                             updated=_e(results.get("updated", "none measured yet")))]
    out.append('<div style="overflow-x:auto"><table class="table">')
    out.append("<thead><tr><th></th><th class=\"name\"></th>")
    for topic in matrix.topics:
        out.append(f'<th class="headertop" colspan="{len(topic.metrics)}">{_e(topic.display)}</th>')
    if matrix.average:
        out.append(f'<th class="headertop">{_e(matrix.average["display"])}</th>')
    out.append("<th></th></tr><tr><th></th><th class=\"name\">condition</th>")
    out += [f"<th>{_e(m)}</th>" for _, m in cols]
    if matrix.average:
        out.append(f"<th>{_e(matrix.average['metrics'][0])}</th>")
    out.append("<th class=\"summary\">status</th></tr></thead><tbody>")
    group = None
    for row, condition in enumerate(matrix.conditions, start=1):
        if condition.group and condition.group != group:
            group = condition.group
            out.append(f'<tr class="group"><td colspan="{ncols}">{_e(group)}</td></tr>')
        out.append(f'<!-- Condition: {_e(condition.name)} -->')
        out.append(f'<tr id="{_e(condition.name)}"><td>{row}</td><td class="name">{_e(condition.display_html or condition.display)}</td>')
        for key, metric in cols:
            expectation = condition.expectation(key)
            if expectation is None:
                out.append("<td></td>")
                continue
            entry, quick = _entry(results, condition.name, key)
            text, status = _cell(entry, quick, expectation, metric)
            job = jobmap.get((condition.name, key))
            skipped = bool(job and job.mode == "skip") and status in ("expected", "")
            if skipped:
                text = "skipped" if text == "–" else f"{text} (skipped)"
            css = "skipped" if skipped else status.replace(" ", "-")
            title = status if status and status != "expected" else ("skipped: " + job.reason if job and job.mode == "skip" else "expected")
            out.append(f'<td class="{_e(css)}" title="{_e(title)}">{_e(text)}</td>')
        if matrix.average:
            out.append(f"<td>{_e(_average_cell(matrix, condition, results))}</td>")
        out.append(f'<td class="summary">{_e(_condition_summary(matrix, condition, results, jobmap))}</td></tr>')
        out.append(f'<tr class="hide-table-padding"><td></td><td colspan="{ncols - 1}"><details><summary>'
                   f'commands, notes and statistics</summary>')
        out.append(_html_details(matrix, condition, results, jobmap))
        out.append("</details></td></tr>")
    out.append("</tbody></table></div>")
    out.append(f'<h3>Effectiveness against cost</h3><p><img src="{matrix.collection}.effectiveness-vs-index-size.png" '
               f'alt="nDCG@10 against index size" style="max-width:48%"/> <img src="{matrix.collection}.'
               f'effectiveness-vs-latency.png" alt="nDCG@10 against query latency" style="max-width:48%"/></p>')
    out.append("</body>\n</html>\n")
    return "\n".join(out)


def _html_details(matrix: Matrix, condition: Condition, results: dict, jobmap: dict) -> str:
    parts = []
    if condition.note:
        parts.append(f"<p>{_e(condition.note)}</p>")
    if condition.published and condition.source:
        parts.append(f"<p>Published figures: {_e(condition.source)}.</p>")
    if condition.requires:
        parts.append("<p>Requires: " + ", ".join(f"<code>{_e(r)}</code>" for r in condition.requires) + "</p>")
    for expectation in condition.topics:
        job = jobmap.get((condition.name, expectation.topic))
        if job is None:
            continue
        column = job.column
        entry, quick = _entry(results, condition.name, column.key)
        head = f"<b>{_e(column.display)}</b> (<code>{_e(column.topic_key)}</code>, corpus <code>{_e(column.corpus)}</code>)"
        if job.mode == "skip":
            head += f": <span class=\"skipped\">skipped here, {_e(job.reason)}</span>"
        parts.append(f"<p>{head}</p>")
        stats = dict((entry or {}).get("stats") or {})
        if stats:
            stats["latency_ms"] = _latency(stats)
            shown = [f"{label} {fmt.format(stats[k])}" for k, label, fmt in STAT_COLUMNS if stats.get(k) is not None]
            if shown:
                parts.append(f"<p>{'QUICK subset: ' if quick else ''}{_e(', '.join(shown))}</p>")
        code = ""
        if job.mode != "pipeline" and job.index_command:
            code += "# build the index\n" + format_command(job.index_command) + "\n"
        code += format_command(job.command)
        parts.append(f'Command to generate the run:<blockquote class="mycode"><pre><code>{_e(code)}\n</code></pre></blockquote>')
        parts.append(f'Evaluation command:<blockquote class="mycode"><pre><code>{_e(job.eval_command)}\n</code></pre></blockquote>')
    return "\n".join(parts)


# --- plots ---------------------------------------------------------------------------------------
def plots(matrix: Matrix, results: dict, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = _measured_points(matrix, results)
    written = []
    specs = [("index_mb", "index size (MB)", "effectiveness-vs-index-size"),
             ("latency_ms", "query latency: encode + search (ms/query)", "effectiveness-vs-latency")]
    topics = list(dict.fromkeys(p["topic"] for p in points))
    markers = "os^Dv<>pPX*h"
    for key, label, stem in specs:
        fig, ax = plt.subplots(figsize=(7.5, 5), dpi=110)
        usable = [p for p in points if p["stats"].get(key) is not None and p["stats"][key] > 0]
        metric = usable[0]["metric"] if usable else "nDCG@10"
        for i, topic in enumerate(topics):
            chosen = [p for p in usable if p["topic"] == topic]
            if not chosen:
                continue
            for quick in (False, True):
                sub = [p for p in chosen if p["quick"] == quick]
                if not sub:
                    continue
                ax.scatter([p["stats"][key] for p in sub], [p["score"] for p in sub], s=46,
                           marker=markers[i % len(markers)], facecolors="none" if quick else None,
                           edgecolors=f"C{i % 10}", color=f"C{i % 10}",
                           label=f"{matrix.column(topic).display}{' (QUICK)' if quick else ''}")
            for p in chosen:
                ax.annotate(p["condition"], (p["stats"][key], p["score"]), textcoords="offset points", xytext=(4, 3),
                            fontsize=7)
        if usable:
            values = [p["stats"][key] for p in usable]
            if max(values) / max(min(values), 1e-9) > 30:
                ax.set_xscale("log")
            ax.legend(fontsize=8, loc="best")
        else:
            ax.text(0.5, 0.5, "no measured runs with this statistic yet", ha="center", va="center",
                    transform=ax.transAxes, color="#777")
        ax.set_xlabel(label)
        ax.set_ylabel(metric)
        ax.set_title(f"{matrix.title}: {metric} against {label.split(' (')[0]}", fontsize=10)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = out_dir / f"{matrix.collection}.{stem}.png"
        out_dir.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written


def generate(matrix: Matrix, jobs: list[Job], results: dict, out_dir: Path) -> list[Path]:
    """Write ``<collection>.md``, ``<collection>.html`` and the two PNG plots into ``out_dir``."""
    out_dir = Path(out_dir)
    md_path = out_dir / f"{matrix.collection}.md"
    html_path = out_dir / f"{matrix.collection}.html"
    with atomic_file(md_path) as handle:
        handle.write(markdown(matrix, jobs, results))
    with atomic_file(html_path) as handle:
        handle.write(html_page(matrix, jobs, results))
    return [md_path, html_path, *plots(matrix, results, out_dir)]
