"""Evaluation output built from the results data: Markdown tables, the CSV, the failure table, JUnit XML,
charts and the HTML report."""

from __future__ import annotations

import csv
import re
import socket
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from xml.etree import ElementTree

from assistant.evaluation import METRICS, Outcome, QuestionSet, answer_text, failed, failures

Rows = tuple[list[str], list[list[str]]]  # a head and formatted rows; Markdown and HTML render the same

COMPARE_METRICS = ("hit@1", "hit@3", "mrr", "ndcg@5", "answer_match", "refusal_recall")
TYPE_METRICS = (
    "hit@1",
    "answer_match",
    "citation_precision",
    "short_answer_precision",
    "short_answer_coverage",
    "refusal_recall",
)
CSV_COLUMNS = (
    "id",
    "split",
    "type",
    "lang",
    "answerable",
    "near_topic",
    "hit_rank",
    "answer_ok",
    "refused",
    "short_answer_ok",
    "citations_ok",
    "latency_ms",
    "question",
    "answer",
)


def cell(metric: str, value) -> str:
    if value is None:
        return "–"
    return f"{value:.1f}" if metric.startswith("latency") else f"{value:.3f}"


def delta_cell(metric: str, value) -> str:
    if value is None:
        return "–"
    return f"{value:+.1f}" if metric.startswith("latency") else f"{value:+.3f}"


def markdown(rows: Rows) -> str:
    head, body = rows
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in body])


def html_table(rows: Rows) -> str:
    head, body = rows
    return (
        "<table><tr>"
        + "".join(f"<th>{escape(c)}</th>" for c in head)
        + "</tr>"
        + "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>" for r in body)
        + "</table>"
    )


def metric_rows(result: dict) -> Rows:
    """One row per metric the result holds, a column overall and per language."""
    columns = [("overall", result["overall"])] + list(result["by_lang"].items())
    metrics = [m for m in METRICS if m in result["overall"]]
    return (
        ["metric"] + [name for name, _ in columns],
        [[m] + [cell(m, values.get(m)) for _, values in columns] for m in metrics],
    )


def type_rows(result: dict) -> Rows:
    """One row per question type: its question count and the metrics that tell types apart."""
    return (
        ["type", "questions", *TYPE_METRICS],
        [
            [t, str(values.get("n", "–"))] + [cell(m, values.get(m)) for m in TYPE_METRICS]
            for t, values in (result.get("by_type") or {}).items()
        ],
    )


def compare_rows(compare: dict) -> Rows:
    """One row per configuration: the headline metrics, overall and per language."""
    langs = sorted({lang for r in compare.values() for lang in r["by_lang"]})
    head = ["configuration", *COMPARE_METRICS] + [f"{lang} hit@1" for lang in langs]
    body = []
    for name, r in compare.items():
        values = [cell(k, r["overall"].get(k)) for k in COMPARE_METRICS]
        body.append([name] + values + [cell("hit@1", r["by_lang"].get(lang, {}).get("hit@1")) for lang in langs])
    return head, body


def side_by_side_rows(results: list[dict]) -> Rows:
    """The splits side by side, each with its baseline (the previous pipeline) before it: the overall
    metrics, then hit@1 and answer_match per language."""
    head, columns = ["metric"], []
    for r in results:
        split = r.get("split", "all")
        if r.get("baseline"):
            head.append(f"{split}: previous")
            columns.append(("before", r))
        head.append(f"{split}: now")
        columns.append(("after", r))

    def value(kind: str, r: dict, metric: str, lang: str | None):
        if kind == "after":
            return (r["by_lang"].get(lang, {}) if lang else r["overall"]).get(metric)
        metrics = r["baseline"]["metrics"]
        found = (metrics.get("by_lang", {}).get(lang, {}) if lang else metrics["overall"]).get(metric)
        return found["before"] if found else None

    langs = sorted({lang for r in results for lang in r["by_lang"]})
    rows = [(m, None) for m in METRICS if any(m in r["overall"] for r in results) and not m.startswith("latency")]
    rows += [(m, lang) for lang in langs for m in ("hit@1", "answer_match")]
    return head, [
        [f"{lang} {m}" if lang else m] + [cell(m, value(kind, r, m, lang)) for kind, r in columns] for m, lang in rows
    ]


def reliability_rows(rows: list[dict]) -> Rows:
    return (
        ["confidence", "replies", "mean confidence", "share right"],
        [[r["bin"], str(r["n"]), f"{r['confidence']:.3f}", f"{r['accuracy']:.3f}"] for r in rows],
    )


def check_rows(diff: dict) -> Rows:
    return (
        ["check", "fixed", "regressed", "unchanged"],
        [[check, str(c["fixed"]), str(c["regressed"]), str(c["unchanged"])] for check, c in diff["checks"].items()],
    )


def delta_rows(diff: dict) -> Rows:
    return (
        ["metric", "before", "after", "delta"],
        [
            [m, cell(m, d["before"]), cell(m, d["after"]), delta_cell(m, d["delta"])]
            for m, d in diff["metrics"]["overall"].items()
        ],
    )


def changed_rows(changes: list[dict]) -> Rows:
    return ["id", "checks", "question"], [[c["id"], ", ".join(c["checks"]), c["question"]] for c in changes]


def table(result: dict) -> str:
    return markdown(metric_rows(result))


def type_table(result: dict) -> str:
    return markdown(type_rows(result))


def compare_table(compare: dict) -> str:
    return markdown(compare_rows(compare))


def side_by_side_table(results: list[dict]) -> str:
    return markdown(side_by_side_rows(results))


def readme_tables(results: dict) -> str:
    """The README's evaluation tables, from a results file (`assistant eval-table eval/results.json`)."""
    parts = [table(results)]
    if results.get("baseline"):
        parts.append(markdown(delta_rows(results["baseline"])))
    if results.get("compare"):
        parts.append(compare_table(results["compare"]))
    if results.get("by_type"):
        parts.append(type_table(results))
    return "\n\n".join(parts)


def diff_text(diff: dict, split: str) -> str:
    """The baseline comparison for the terminal: counts, the regressions and fixes by id, metric deltas."""
    lines = [
        f"Against the baseline: {diff['compared']} questions in both, {len(diff['new'])} new, "
        f"{len(diff['dropped'])} no longer asked."
    ]
    if diff["split"] != split:
        lines.append(
            f"The baseline ran the {diff['split']!r} split and this run {split!r}: "
            "the metric deltas compare different questions."
        )
    lines += ["", markdown(check_rows(diff))]
    for kind in ("regressed", "fixed"):
        if diff[kind]:
            lines += ["", f"{kind.capitalize()} ({len(diff[kind])}):"]
            lines += [f"  {c['id']} ({', '.join(c['checks'])}): {c['question']}" for c in diff[kind]]
    return "\n".join(lines + ["", markdown(delta_rows(diff))])


def _csv_value(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(round(value, 4))
    return str(value)


def write_csv(path: Path, outcomes: list[Outcome]) -> None:
    """One row per question, the columns of CSV_COLUMNS; empty where a value does not apply."""
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(CSV_COLUMNS)
        for o in outcomes:
            writer.writerow([_csv_value(getattr(o, name)) for name in CSV_COLUMNS])


def _clip(text: str, limit: int = 60) -> str:
    """One line of at most `limit` characters (then an ellipsis), safe in a Markdown cell."""
    text = " ".join(text.split())
    text = text if len(text) <= limit else text[:limit] + "…"
    return text.replace("|", "\\|")


def failure_rows(questions: QuestionSet, outcomes: list[Outcome], limit: int) -> Rows:
    """The first `limit` failed questions: id, language, the checks failed, the start of the question and
    of the answer."""
    rows = [
        [
            _clip(q.id, 20),
            q.lang,
            ", ".join(f.check for f in checks),
            _clip(q.question),
            _clip(answer_text(o)),
        ]
        for q, o, checks in failed(questions, outcomes)[:limit]
    ]
    return ["id", "lang", "failed", "question", "answer"], rows


def failure_table(questions: QuestionSet, outcomes: list[Outcome], limit: int = 20) -> str:
    """The failed questions at a glance, for the end of a terminal run ("" when none failed)."""
    count = len(failed(questions, outcomes))
    if not count or limit <= 0:
        return ""
    shown = "" if count <= limit else f", the first {limit} shown"
    title = f"Failed questions: {count} of {len(outcomes)}{shown}."
    head, rows = failure_rows(questions, outcomes, limit)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]  # text columns: left-aligned
    return title + "\n\n" + "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


_NOT_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")  # characters XML 1.0 cannot hold


def _xml(text: str) -> str:
    return _NOT_XML.sub("", text)


def write_junit(path: Path, questions: QuestionSet, outcomes: list[Outcome], name: str, split: str = "all") -> None:
    """The run as JUnit XML, which GitLab, Jenkins and GitHub test reporters read: one test case per question
    (class `split.type`, name `id: question`), a failure naming each failed check with what it expected
    and what was answered; a line of the set that was skipped as malformed is a skipped test case.
    `questions` are the ones that ran, in the order of `outcomes`; their warnings go to system-err."""
    checked = [(q, o, failures(q, o)) for q, o in zip(questions.questions, outcomes, strict=True)]
    seconds = sum(o.latency_ms for o in outcomes) / 1e3
    suite = ElementTree.Element(
        "testsuite",
        name=_xml(name),
        tests=str(len(outcomes) + len(questions.skipped)),
        failures=str(sum(bool(checks) for _, _, checks in checked)),
        errors="0",
        skipped=str(len(questions.skipped)),
        time=f"{seconds:.3f}",
        timestamp=datetime.now(UTC).replace(microsecond=0, tzinfo=None).isoformat(),
        hostname=socket.gethostname(),
    )
    properties = ElementTree.SubElement(suite, "properties")
    for key, value in (("split", split), ("lines", str(questions.lines))):
        ElementTree.SubElement(properties, "property", name=key, value=value)
    for q, o, checks in checked:
        case = ElementTree.SubElement(
            suite,
            "testcase",
            classname=f"{q.split or 'unsplit'}.{q.type or 'untyped'}",
            name=_xml(f"{q.id}: {' '.join(q.question.split())}"),
            time=f"{o.latency_ms / 1e3:.3f}",
        )
        if checks:
            failure = ElementTree.SubElement(
                case,
                "failure",
                message=_xml(f"failed: {', '.join(f.check for f in checks)}"),
                type=checks[0].check,
            )
            failure.text = _xml(
                "\n\n".join(f"{f.check}\n  expected: {f.expected}\n  answered: {f.answered}" for f in checks)
            )
        out = [f"answer: {answer_text(o)}"]
        if o.short_answer:
            out.append(f"short answer: {o.short_answer}")
        if o.retrieved:
            out.append(f"passages: {', '.join(o.retrieved)}")
        ElementTree.SubElement(case, "system-out").text = _xml("\n".join(out))
    for problem in questions.skipped:
        line, _, reason = problem.partition(": ")
        case = ElementTree.SubElement(suite, "testcase", classname="malformed", name=_xml(line), time="0")
        ElementTree.SubElement(case, "skipped", message=_xml(reason))
    ElementTree.SubElement(suite, "system-out").text = ""
    ElementTree.SubElement(suite, "system-err").text = _xml("\n".join(questions.warnings))
    root = ElementTree.Element(
        "testsuites",
        name="assistant eval",
        tests=suite.get("tests"),
        failures=suite.get("failures"),
        errors="0",
        skipped=suite.get("skipped"),
        time=suite.get("time"),
    )
    root.append(suite)
    ElementTree.indent(root)
    xml = ElementTree.tostring(root, encoding="unicode")
    path.write_text(f'<?xml version="1.0" encoding="UTF-8"?>\n{xml}\n', encoding="utf-8")


def _chart(groups: dict[str, dict], metrics: tuple[str, ...], title: str) -> str:
    """A grouped bar chart (one group per metric, one bar per series) as a base64 PNG."""
    import base64
    import io

    import matplotlib

    matplotlib.use("Agg")  # no display here; draws to memory
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 3.6), dpi=110)
    width = 0.8 / max(len(groups), 1)
    for i, (name, values) in enumerate(groups.items()):
        xs = [m + i * width for m in range(len(metrics))]
        ys = [values.get(m) or 0.0 for m in metrics]
        bars = ax.bar(xs, ys, width, label=name)
        ax.bar_label(bars, labels=[f"{y:.2f}" for y in ys], fontsize=7, padding=1)
    ax.set_xticks([m + width * (len(groups) - 1) / 2 for m in range(len(metrics))], metrics)
    ax.set_ylim(0, 1.1)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def _baseline_html(diff: dict, split: str) -> str:
    parts = [
        f"<h2>Against the baseline</h2><p>{diff['compared']} questions in both, {len(diff['new'])} new, "
        f"{len(diff['dropped'])} no longer asked.</p>"
    ]
    if diff["split"] != split:
        parts.append(
            f"<p>The baseline ran the {escape(diff['split'])} split and this run {escape(split)}: "
            "the metric deltas compare different questions.</p>"
        )
    parts.append(html_table(check_rows(diff)))
    for kind in ("regressed", "fixed"):
        parts.append(f"<h3>{kind.capitalize()} ({len(diff[kind])})</h3>")
        if diff[kind]:
            parts.append(html_table(changed_rows(diff[kind])))
    parts.append("<h3>Metric changes</h3>" + html_table(delta_rows(diff)))
    return "".join(parts)


def write_html(
    path: Path, results: dict, questions: QuestionSet, outcomes: list[Outcome], chunk_texts: dict[str, str]
) -> None:
    """A self-contained HTML page from the results data: tables, charts (embedded PNG), the baseline
    comparison and the failed questions. `questions` are the ones that ran, in the order of `outcomes`."""
    quality = (
        "hit@1",
        "hit@3",
        "mrr",
        "ndcg@5",
        "answer_match",
        "shown_match",
        "confident_precision",
        "citation_precision",
    )
    compare, split = results.get("compare"), results.get("split", "all")
    charts = [_chart({"overall": results["overall"], **results["by_lang"]}, quality, "This pipeline, per language")]
    if compare:
        retrieval = ("hit@1", "hit@3", "hit@5", "mrr", "ndcg@5")
        charts.append(_chart({n: r["overall"] for n, r in compare.items()}, retrieval, "Configurations, all questions"))
        for lang in sorted(results["by_lang"]):
            charts.append(
                _chart(
                    {n: r["by_lang"][lang] for n, r in compare.items()}, retrieval, f"Configurations, {lang} questions"
                )
            )
    failed_rows = []
    for q, o, _ in failed(questions, outcomes):
        retrieved = "".join(
            f"<li><code>{escape(c)}</code> {escape(chunk_texts.get(c, '')[:160])}…</li>" for c in o.retrieved[:3]
        )
        failed_rows.append(
            f"<tr><td>{escape(q.id)}</td><td>{escape(q.lang)}</td><td>{escape(q.type or '–')}</td>"
            f"<td>{escape(q.question)}</td><td>{escape(' / '.join(q.evidence) or '(unanswerable)')}</td>"
            f"<td>{o.hit_rank or '–'}</td><td>{escape(o.answer)}</td>"
            f"<td>{escape(o.short_answer or '–')}</td><td><ol>{retrieved}</ol></td></tr>"
        )
    by_type = "<h2>By question type</h2>" + html_table(type_rows(results)) if results.get("by_type") else ""
    calibration = (
        "<h2>Reliability of the confidence</h2><p>Replies grouped by their confidence, against the share whose "
        "shown quote holds an accepted answer.</p>" + html_table(reliability_rows(results["reliability"]))
        if results.get("reliability")
        else ""
    )
    side_by_side = "<h2>Configurations side by side</h2>" + html_table(compare_rows(compare)) if compare else ""
    baseline = _baseline_html(results["baseline"], split) if results.get("baseline") else ""
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Evaluation report</title><style>
body{{font-family:"Noto Sans Thai","Loma",system-ui,sans-serif;margin:2rem;max-width:80rem;color:#222}}
table{{border-collapse:collapse;margin:1rem 0}}td,th{{border:1px solid #ccc;padding:.3rem .5rem;vertical-align:top}}
th{{background:#f3f3f3}}td{{font-size:.9rem}}img{{max-width:100%}}ol{{margin:0;padding-left:1.2rem}}
</style></head><body>
<h1>Evaluation report</h1>
<p>Split: {escape(split)}. {len(outcomes)} questions, {results.get("skipped", 0)} malformed lines skipped,
{len(results.get("warnings", []))} warnings.</p>
<h2>Metrics</h2>{html_table(metric_rows(results))}
{by_type}
{calibration}
{side_by_side}
{baseline}
<h2>Charts</h2>{"".join(f'<img alt="chart" src="data:image/png;base64,{c}">' for c in charts)}
<h2>Failed questions ({len(failed_rows)})</h2>
<table><tr><th>id</th><th>lang</th><th>type</th><th>question</th><th>evidence</th><th>rank</th><th>answer</th>
<th>short answer</th><th>retrieved (top 3)</th></tr>{"".join(failed_rows)}</table>
</body></html>"""
    path.write_text(page, encoding="utf-8")
