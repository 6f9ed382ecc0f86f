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
    refused: bool
    citations_ok: float | None  # share of citations whose passage holds evidence or an answer
    latency_ms: float
    retrieved: tuple[str, ...] = ()  # chunk ids, for the report of failures
    answer: str = ""

    def as_json(self) -> dict:
        return {"id": self.id, "hit_rank": self.hit_rank, "answer_ok": self.answer_ok,
                "refused": self.refused, "citations_ok": self.citations_ok,
                "latency_ms": round(self.latency_ms, 2)}


def judge(question: Question, answer: Answer, latency_ms: float, k: int = 5) -> Outcome:
    passages = [h.chunk.text for h in answer.hits]
    scored = question.answerable and bool(question.evidence)
    citations_ok = None
    if answer.citations:
        good = [contains_any(c.text, question.evidence + question.answers) for c in answer.citations]
        citations_ok = sum(good) / len(good)
    return Outcome(
        id=question.id, lang=question.lang, answerable=question.answerable, retrieval_scored=scored,
        hit_rank=hit_rank(passages[:k], question.evidence) if scored else None,
        ndcg=ndcg(passages, question.evidence, k) if scored else 0.0,
        answer_ok=(not answer.refused and contains_any(answer.answer, question.answers))
        if question.answerable else None,
        refused=answer.refused, citations_ok=citations_ok, latency_ms=latency_ms,
        retrieved=tuple(h.chunk.chunk_id for h in answer.hits), answer=answer.answer,
    )


def _mean(values) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def summarise(outcomes: list[Outcome]) -> dict:
    """Every metric of METRICS over these outcomes (None where no question applies)."""
    scored = [o for o in outcomes if o.retrieval_scored]
    answerable = [o for o in outcomes if o.answerable]
    refused = [o for o in outcomes if o.refused]
    should_refuse = [o for o in outcomes if not o.answerable]
    cited = [o.citations_ok for o in outcomes if o.citations_ok is not None]
    latencies = [o.latency_ms for o in outcomes]
    out = {f"hit@{k}": _mean(o.hit_rank is not None and o.hit_rank <= k for o in scored) for k in (1, 3, 5)}
    out["mrr"] = _mean(1.0 / o.hit_rank if o.hit_rank else 0.0 for o in scored)
    out["ndcg@5"] = _mean(o.ndcg for o in scored)
    out["answer_match"] = _mean(bool(o.answer_ok) for o in answerable)
    out["citation_precision"] = _mean(cited)
    out["refusal_precision"] = _mean(not o.answerable for o in refused)
    out["refusal_recall"] = _mean(o.refused for o in should_refuse)
    out["latency_p50_ms"] = _percentile(latencies, 50)
    out["latency_p95_ms"] = _percentile(latencies, 95)
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}


def run(answerer, questions: QuestionSet, top_k: int = 5, progress: bool = False) -> list[Outcome]:
    """Every question through the chat's own answer path, history included."""
    import time

    from tqdm import tqdm

    outcomes = []
    for q in tqdm(questions.questions, desc="Evaluating", unit="q", disable=not progress):
        started = time.perf_counter()
        answer = answerer.answer(q.question, q.history, top_k=top_k)
        outcomes.append(judge(q, answer, (time.perf_counter() - started) * 1e3, top_k))
    return outcomes


def report(outcomes: list[Outcome]) -> dict:
    langs = sorted({o.lang for o in outcomes})
    return {"overall": summarise(outcomes),
            "by_lang": {lang: summarise([o for o in outcomes if o.lang == lang]) for lang in langs}}


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
