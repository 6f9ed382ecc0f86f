"""Evaluation: question sets (JSON Lines), retrieval and answer metrics, per language."""

from __future__ import annotations

import json
import math
import re
import statistics
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from assistant.types import Answer, Turn

METRICS = ("hit@1", "hit@3", "hit@5", "mrr", "ndcg@5", "answer_match", "citation_precision",
           "refusal_precision", "refusal_recall", "latency_p50_ms", "latency_p95_ms")


@dataclass(frozen=True)
class Question:
    id: str
    lang: str
    question: str
    history: tuple[Turn, ...] = ()
    answers: tuple[str, ...] = ()
    evidence: tuple[str, ...] = ()
    answerable: bool = True
    source: str = ""


@dataclass(frozen=True)
class QuestionSet:
    questions: tuple[Question, ...]
    skipped: tuple[str, ...] = field(default=())  # "line N: reason" per malformed line


def load_questions(path: Path) -> QuestionSet:
    """Questions from a JSON Lines file; malformed lines are reported and skipped, not fatal."""
    questions, skipped = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            questions.append(_question(json.loads(line)))
        except (ValueError, TypeError, KeyError) as error:
            skipped.append(f"line {number}: {error}")
    return QuestionSet(tuple(questions), tuple(skipped))


def _question(obj) -> Question:
    if not isinstance(obj, dict):
        raise TypeError("expected a JSON object")
    for key in ("id", "question"):
        if not isinstance(obj.get(key), str) or not obj[key].strip():
            raise KeyError(f"missing or empty {key!r}")
    lists = {}
    for key in ("answers", "evidence"):
        value = obj.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise TypeError(f"{key!r} must be a list of strings")
        lists[key] = tuple(value)
    history = obj.get("history") or []
    if not isinstance(history, list) or not all(
            isinstance(t, dict) and t.get("role") in {"user", "assistant"} and isinstance(t.get("content"), str)
            for t in history):
        raise TypeError("'history' must be a list of {role: user|assistant, content: str}")
    answerable = obj.get("answerable", True)
    if not isinstance(answerable, bool):
        raise TypeError("'answerable' must be true or false")
    return Question(id=obj["id"], lang=str(obj.get("lang") or "en"), question=obj["question"],
                    history=tuple(Turn(t["role"], t["content"]) for t in history),
                    answers=lists["answers"], evidence=lists["evidence"], answerable=answerable,
                    source=str(obj.get("source") or ""))


def fold(text: str) -> str:
    """For matching: NFKC, case-folded, with all white space removed (Thai spacing is free)."""
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", text).casefold())


def contains_any(text: str, needles) -> bool:
    folded = fold(text)
    return any(fold(n) and fold(n) in folded for n in needles)


def hit_rank(passages: list[str], evidence) -> int | None:
    """1-based rank of the first passage containing an evidence string."""
    for rank, passage in enumerate(passages, start=1):
        if contains_any(passage, evidence):
            return rank
    return None


def ndcg(passages: list[str], evidence, k: int = 5) -> float:
    """Binary-relevance nDCG@k; the ideal ranking puts every relevant retrieved passage first."""
    gains = [1.0 if contains_any(p, evidence) else 0.0 for p in passages[:k]]
    dcg = sum(g / math.log2(i + 2) for i, g in enumerate(gains))
    ideal = sum(1.0 / math.log2(i + 2) for i in range(int(sum(gains))))
    return dcg / ideal if ideal else 0.0


@dataclass(frozen=True)
class Outcome:
    id: str
    lang: str
    answerable: bool
    retrieval_scored: bool
    hit_rank: int | None
    ndcg: float
    answer_ok: bool | None
    refused: bool | None  # None: the configuration does not answer, it only retrieves
    citations_ok: float | None  # share of citations whose passage holds evidence or an answer
    latency_ms: float
    retrieved: tuple[str, ...] = ()  # chunk ids, for the report of failures
    answer: str = ""

    def as_json(self) -> dict:
        return {"id": self.id, "hit_rank": self.hit_rank, "answer_ok": self.answer_ok,
                "refused": self.refused, "citations_ok": self.citations_ok,
                "latency_ms": round(self.latency_ms, 2)}


def judge(question: Question, answer: Answer, latency_ms: float, k: int = 5, answers: bool = True) -> Outcome:
    """Score one answer; with `answers=False` (a retrieval-only baseline) only retrieval counts."""
    passages = [h.chunk.text for h in answer.hits]
    scored = question.answerable and bool(question.evidence)
    citations_ok = None
    if answer.citations and answers:
        good = [contains_any(c.text, question.evidence + question.answers) for c in answer.citations]
        citations_ok = sum(good) / len(good)
    return Outcome(
        id=question.id, lang=question.lang, answerable=question.answerable, retrieval_scored=scored,
        hit_rank=hit_rank(passages[:k], question.evidence) if scored else None,
        ndcg=ndcg(passages, question.evidence, k) if scored else 0.0,
        answer_ok=(not answer.refused and contains_any(answer.answer, question.answers))
        if question.answerable and answers else None,
        refused=answer.refused if answers else None, citations_ok=citations_ok, latency_ms=latency_ms,
        retrieved=tuple(h.chunk.chunk_id for h in answer.hits), answer=answer.answer,
    )


def _mean(values) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile, interpolated between the nearest values (as numpy's default)."""
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def summarise(outcomes: list[Outcome]) -> dict:
    """Every metric of METRICS over these outcomes (None where no question applies)."""
    scored = [o for o in outcomes if o.retrieval_scored]
    answerable = [o for o in outcomes if o.answerable and o.answer_ok is not None]
    refused = [o for o in outcomes if o.refused]
    should_refuse = [o for o in outcomes if not o.answerable and o.refused is not None]
    cited = [o.citations_ok for o in outcomes if o.citations_ok is not None]
    latencies = [o.latency_ms for o in outcomes]
    out = {f"hit@{k}": _mean(o.hit_rank is not None and o.hit_rank <= k for o in scored) for k in (1, 3, 5)}
    out["mrr"] = _mean(1.0 / o.hit_rank if o.hit_rank else 0.0 for o in scored)
    out["ndcg@5"] = _mean(o.ndcg for o in scored)
    out["answer_match"] = _mean(bool(o.answer_ok) for o in answerable)
    out["citation_precision"] = _mean(cited)
    out["refusal_precision"] = _mean(not o.answerable for o in refused)
    out["refusal_recall"] = _mean(o.refused for o in should_refuse)
    out["latency_p50_ms"] = percentile(latencies, 50)
    out["latency_p95_ms"] = percentile(latencies, 95)
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}


def run(answerer, questions: QuestionSet, top_k: int = 5, progress: bool = False,
        desc: str = "Evaluating") -> list[Outcome]:
    """Every question through the chat's own answer path, history included."""
    import time

    from tqdm import tqdm

    answers = getattr(answerer, "answers", True)
    outcomes = []
    for q in tqdm(questions.questions, desc=desc, unit="q", disable=not progress):
        started = time.perf_counter()
        answer = answerer.answer(q.question, q.history, top_k=top_k)
        outcomes.append(judge(q, answer, (time.perf_counter() - started) * 1e3, top_k, answers))
    return outcomes


class LlamaIndexDefaults:
    """The stack one would otherwise reach for: llama-index's `VectorStoreIndex` with its default
    `SentenceSplitter` over the same files, the same embedding model, plain top-k retrieval.

    It retrieves but does not answer, so only retrieval metrics apply to it.
    """

    answers = False

    def __init__(self, corpus_dir: Path, embed_model):
        from llama_index.core import SimpleDirectoryReader, VectorStoreIndex

        documents = SimpleDirectoryReader(str(corpus_dir), required_exts=[".txt", ".md"],
                                          recursive=True).load_data()
        self.index = VectorStoreIndex.from_documents(documents, embed_model=embed_model)

    def answer(self, question: str, history=(), top_k: int = 5) -> Answer:
        from assistant.thai import language
        from assistant.types import Chunk, Hit

        nodes = self.index.as_retriever(similarity_top_k=top_k).retrieve(question)
        hits = tuple(
            Hit(Chunk(n.node.node_id, "", "", "", 0, 0, 0, n.node.get_content(), ()), n.score or 0.0,
                n.score or 0.0, rank, None)
            for rank, n in enumerate(nodes))
        return Answer(question, "", False, (), language(question), question, hits)


def configurations(answerer, corpus_dir: Path) -> dict:
    """The side-by-side set for --compare: this pipeline, its two halves, and llama-index defaults."""
    from assistant.answering import Answerer
    from assistant.retrieval import Retriever

    index, config = answerer.retriever.index, answerer.config
    pipelines = {
        "hybrid (this pipeline)": answerer,
        "dense only": Answerer(Retriever(index, mode="dense"), config),
        "BM25 only": Answerer(Retriever(index, mode="lexical"), config),
        "llama-index defaults": LlamaIndexDefaults(corpus_dir, index.embed_model),
    }
    other = "int8" if config.embed_precision == "exact" else "exact"
    precise = precision_pipeline(config.with_(corpus_dir=corpus_dir, embed_precision=other))
    if precise is not None:
        pipelines[f"hybrid, {other} embedding precision"] = precise
    return pipelines


def precision_pipeline(config, progress: bool = True):
    """This pipeline at another embedding precision of the default model, on its own index in the cache
    folder (built once, then reused); None for a model without ONNX files."""
    from assistant import embedding, index
    from assistant.answering import Answerer
    from assistant.config import DEFAULT_EMBED_MODEL
    from assistant.retrieval import Retriever

    if config.embed_model != DEFAULT_EMBED_MODEL or config.embed_runtime == "sentence-transformers":
        return None
    config = config.with_(index_dir=config.cache_dir / "eval" / f"index-{config.embed_precision}")
    model = embedding.load(config)
    return Answerer(Retriever(index.open_index(config, model, progress=progress)), config)


def report(outcomes: list[Outcome]) -> dict:
    langs = sorted({o.lang for o in outcomes})
    return {"overall": summarise(outcomes),
            "by_lang": {lang: summarise([o for o in outcomes if o.lang == lang]) for lang in langs}}


def compare_table(compare: dict) -> str:
    """One row per configuration: the headline metrics, overall and per language."""
    keys = ("hit@1", "hit@3", "mrr", "ndcg@5", "answer_match", "refusal_recall", "latency_p50_ms")
    langs = sorted({lang for r in compare.values() for lang in r["by_lang"]})
    head = list(keys) + [f"{lang} hit@1" for lang in langs]
    lines = ["| configuration | " + " | ".join(head) + " |", "|---|" + "---:|" * len(head)]
    for name, r in compare.items():
        values = [r["overall"].get(k) for k in keys] + [r["by_lang"][lang]["hit@1"] for lang in langs]
        lines.append(f"| {name} | " + " | ".join("–" if v is None else f"{v:.1f}" if k == "latency_p50_ms" else f"{v:.3f}"
                                              for k, v in zip(head, values)) + " |")
    return "\n".join(lines)


def table(result: dict) -> str:
    """The metrics as a Markdown table: one row per metric, a column overall and per language."""
    columns = [("overall", result["overall"])] + list(result["by_lang"].items())
    lines = ["| metric | " + " | ".join(name for name, _ in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for metric in METRICS:
        cells = []
        for _, values in columns:
            value = values.get(metric)
            cells.append("–" if value is None else f"{value:.1f}" if metric.startswith("latency") else f"{value:.3f}")
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


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


def _html_table(markdown: str) -> str:
    from html import escape

    rows = [r.strip("|").split("|") for r in markdown.splitlines() if not r.startswith("|---")]
    head, body = rows[0], rows[1:]
    return ("<table><tr>" + "".join(f"<th>{escape(c.strip())}</th>" for c in head) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{escape(c.strip())}</td>" for c in r) + "</tr>" for r in body)
            + "</table>")


def write_report(path: Path, result: dict, questions: QuestionSet, outcomes: list[Outcome],
                 chunk_texts: dict[str, str], compare: dict | None = None) -> None:
    """A self-contained HTML page: tables, charts (embedded PNG) and the failed questions."""
    from html import escape

    quality = ("hit@1", "hit@3", "mrr", "ndcg@5", "answer_match", "citation_precision",
               "refusal_precision", "refusal_recall")
    charts = [_chart({"overall": result["overall"], **result["by_lang"]}, quality, "This pipeline, per language")]
    if compare:
        retrieval = ("hit@1", "hit@3", "hit@5", "mrr", "ndcg@5")
        charts.append(_chart({n: r["overall"] for n, r in compare.items()}, retrieval, "Configurations, all questions"))
        for lang in sorted(result["by_lang"]):
            charts.append(_chart({n: r["by_lang"][lang] for n, r in compare.items()}, retrieval,
                                 f"Configurations, {lang} questions"))
    failed = []
    for q, o in zip(questions.questions, outcomes):
        wrong_refusal = o.refused is not None and o.refused == q.answerable
        if (o.retrieval_scored and o.hit_rank != 1) or o.answer_ok is False or wrong_refusal:
            retrieved = "".join(f"<li><code>{escape(c)}</code> {escape(chunk_texts.get(c, '')[:160])}…</li>"
                                for c in o.retrieved[:3])
            failed.append(
                f"<tr><td>{escape(q.id)}</td><td>{escape(q.lang)}</td><td>{escape(q.question)}</td>"
                f"<td>{escape(' / '.join(q.evidence) or '(unanswerable)')}</td><td>{o.hit_rank or '–'}</td>"
                f"<td>{escape(o.answer)}</td><td><ol>{retrieved}</ol></td></tr>")
    html = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Evaluation report</title><style>
body{{font-family:"Noto Sans Thai","Loma",system-ui,sans-serif;margin:2rem;max-width:80rem;color:#222}}
table{{border-collapse:collapse;margin:1rem 0}}td,th{{border:1px solid #ccc;padding:.3rem .5rem;vertical-align:top}}
th{{background:#f3f3f3}}td{{font-size:.9rem}}img{{max-width:100%}}ol{{margin:0;padding-left:1.2rem}}
</style></head><body>
<h1>Evaluation report</h1>
<p>{len(outcomes)} questions, {len(questions.skipped)} malformed lines skipped.</p>
<h2>Metrics</h2>{_html_table(table(result))}
{"<h2>Configurations side by side</h2>" + _html_table(compare_table(compare)) if compare else ""}
<h2>Charts</h2>{"".join(f'<img alt="chart" src="data:image/png;base64,{c}">' for c in charts)}
<h2>Failed questions ({len(failed)})</h2>
<table><tr><th>id</th><th>lang</th><th>question</th><th>evidence</th><th>rank</th><th>answer</th>
<th>retrieved (top 3)</th></tr>{"".join(failed)}</table>
</body></html>"""
    path.write_text(html, encoding="utf-8")
