"""Evaluation: question sets (JSON Lines), per-question judging, metrics, baselines diffs and floors."""

from __future__ import annotations

import json
import math
import re
import statistics
import time
import unicodedata
from dataclasses import dataclass, field, replace
from pathlib import Path

from assistant.errors import EvaluationError
from assistant.types import Answer, Turn

METRICS = (
    "hit@1",
    "hit@3",
    "hit@5",
    "mrr",
    "ndcg@5",
    "answer_match",
    "shown_match",
    "confident_precision",
    "false_answer_rate",
    "near_topic_false_answer_rate",
    "uncertain_rate",
    "answerable_not_found",
    "citation_precision",
    "refusal_precision",
    "refusal_recall",
    "near_topic_refusal_recall",
    "short_answer_precision",
    "short_answer_coverage",
    "latency_p50_ms",
    "latency_p95_ms",
)
LOWER_IS_BETTER = (
    "latency_p50_ms",
    "latency_p95_ms",
    "false_answer_rate",
    "near_topic_false_answer_rate",
    "answerable_not_found",
)
SPLITS = ("dev", "test")
TYPES = ("when", "who", "where", "which", "how_many", "how_far", "why", "how", "what", "overview")
# What a baseline diff compares per question. short_answer: a short answer given must be right (as
# short_answer_precision judges it), and one must be given where the question expects one.
CHECKS = ("answer_ok", "hit@1", "refusal", "short_answer")


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
    split: str = ""  # "dev", "test" or "" (in no split: only `--split all` runs it)
    type: str = ""  # one of TYPES, or "" when untyped
    short: tuple[str, ...] = ()  # acceptable exact short answers, for one-span answers
    near_topic: bool = False  # unanswerable, but about the corpus's subject: the hard refusals


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


def _strings(obj: dict, key: str) -> tuple[str, ...]:
    value = obj.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{key!r} must be a list of strings")
    return tuple(value)


def _question(obj) -> Question:
    if not isinstance(obj, dict):
        raise TypeError("expected a JSON object")
    for key in ("id", "question"):
        if not isinstance(obj.get(key), str) or not obj[key].strip():
            raise KeyError(f"missing or empty {key!r}")
    history = obj.get("history") or []
    if not isinstance(history, list) or not all(
        isinstance(t, dict) and t.get("role") in {"user", "assistant"} and isinstance(t.get("content"), str)
        for t in history
    ):
        raise TypeError("'history' must be a list of {role: user|assistant, content: str}")
    answerable = obj.get("answerable", True)
    if not isinstance(answerable, bool):
        raise TypeError("'answerable' must be true or false")
    split = obj.get("split", "")
    if split not in ("",) + SPLITS:
        raise ValueError(f"'split' must be one of {', '.join(SPLITS)}, not {split!r}")
    kind = obj.get("type", "")
    if kind not in ("",) + TYPES:
        raise ValueError(f"'type' must be one of {', '.join(TYPES)}, not {kind!r}")
    short = _strings(obj, "short")
    if not all(s.strip() for s in short):
        raise ValueError("'short' must not contain empty strings")
    near_topic = obj.get("near_topic", False)
    if not isinstance(near_topic, bool):
        raise TypeError("'near_topic' must be true or false")
    if near_topic and answerable:
        raise ValueError("'near_topic' applies to unanswerable questions only")
    return Question(
        id=obj["id"],
        lang=str(obj.get("lang") or "en"),
        question=obj["question"],
        history=tuple(Turn(t["role"], t["content"]) for t in history),
        answers=_strings(obj, "answers"),
        evidence=_strings(obj, "evidence"),
        answerable=answerable,
        source=str(obj.get("source") or ""),
        split=split,
        type=kind,
        short=short,
        near_topic=near_topic,
    )


def select(questions: QuestionSet, split: str) -> QuestionSet:
    """The questions of one split ("dev", "test"), or all of them ("all")."""
    if split == "all":
        return questions
    chosen = tuple(q for q in questions.questions if q.split == split)
    if not chosen:
        unsplit = sum(not q.split for q in questions.questions)
        raise EvaluationError(
            f"No question is in the {split!r} split ({unsplit} of the {len(questions.questions)} "
            'have no "split" field): give questions a split or use --split all.'
        )
    return replace(questions, questions=chosen)


def fold(text: str) -> str:
    """For matching: NFKC, case-folded, with all white space removed (Thai spacing is free)."""
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", text).casefold())


def contains_any(text: str, needles) -> bool:
    folded = fold(text)
    return any(fold(n) and fold(n) in folded for n in needles)


def short_match(text: str, accepted) -> bool:
    """A short answer is right when, folded, it equals, contains or is contained in an accepted string:
    "ปี 1995" and "1995" both match an accepted "1995"; an empty answer matches nothing."""
    folded = fold(text)
    return bool(folded) and any(a and (a in folded or folded in a) for a in map(fold, accepted))


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
    question: str = ""
    split: str = ""
    type: str = ""
    near_topic: bool = False
    short_answer: str | None = None  # the answer's short answer text, when it carries one
    short_answer_ok: bool | None = None  # None: no short answer given
    short_expected: bool = False  # answerable, with a `short` list: counts for short_answer_coverage
    status: str | None = None  # "answered", "uncertain" or "not_found" (None: a retrieval-only configuration)
    confidence: float | None = None
    shown_ok: bool | None = None  # answerable, and the text shown (answered or uncertain) holds an answer

    @property
    def refusal_ok(self) -> bool | None:
        """Refused exactly when the question is unanswerable (None for retrieval-only configurations)."""
        return None if self.refused is None else self.refused == (not self.answerable)

    def as_json(self) -> dict:
        return {
            "id": self.id,
            "split": self.split,
            "type": self.type,
            "lang": self.lang,
            "answerable": self.answerable,
            "near_topic": self.near_topic,
            "hit_rank": self.hit_rank,
            "answer_ok": self.answer_ok,
            "refused": self.refused,
            "short_answer": self.short_answer,
            "short_answer_ok": self.short_answer_ok,
            "citations_ok": self.citations_ok,
            "status": self.status,
            "confidence": self.confidence,
            "shown_ok": self.shown_ok,
            "latency_ms": round(self.latency_ms, 2),
        }


def judge(question: Question, answer: Answer, latency_ms: float, k: int = 5, answers: bool = True) -> Outcome:
    """Score one answer; with `answers=False` (a retrieval-only baseline) only retrieval counts."""
    passages = [h.chunk.text for h in answer.hits]
    scored = question.answerable and bool(question.evidence)
    citations_ok = None
    # The citations of a stated answer: an uncertain reply's closest quotes are offered as no more than that.
    if answer.citations and answers and answer.status == "answered":
        good = [contains_any(c.text, question.evidence + question.answers) for c in answer.citations]
        citations_ok = sum(good) / len(good)
    short = ((answer.short_answer or {}).get("text") or None) if answers else None
    return Outcome(
        id=question.id,
        lang=question.lang,
        answerable=question.answerable,
        retrieval_scored=scored,
        hit_rank=hit_rank(passages[:k], question.evidence) if scored else None,
        ndcg=ndcg(passages, question.evidence, k) if scored else 0.0,
        answer_ok=(answer.status == "answered" and contains_any(answer.answer, question.answers))
        if question.answerable and answers
        else None,
        # Anything but a confident answer declines to state one: "uncertain" shows quotes under a caveat.
        refused=answer.status != "answered" if answers else None,
        status=answer.status if answers else None,
        confidence=answer.confidence if answers else None,
        shown_ok=(answer.status != "not_found" and contains_any(answer.answer, question.answers))
        if question.answerable and answers
        else None,
        citations_ok=citations_ok,
        latency_ms=latency_ms,
        retrieved=tuple(h.chunk.chunk_id for h in answer.hits),
        answer=answer.answer,
        question=question.question,
        split=question.split,
        type=question.type,
        near_topic=question.near_topic,
        short_answer=short,
        # An unanswerable question accepts nothing, so a short answer to it is wrong.
        short_answer_ok=None
        if short is None
        else question.answerable and short_match(short, question.short or question.answers),
        short_expected=question.answerable and bool(question.short),
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
    out["shown_match"] = _mean(bool(o.shown_ok) for o in answerable)
    confident = [o for o in outcomes if o.status == "answered"]
    out["confident_precision"] = _mean(o.answerable and bool(o.answer_ok) for o in confident)
    out["false_answer_rate"] = _mean(o.status == "answered" for o in should_refuse)
    out["near_topic_false_answer_rate"] = _mean(o.status == "answered" for o in should_refuse if o.near_topic)
    out["uncertain_rate"] = _mean(o.status == "uncertain" for o in outcomes if o.status is not None)
    out["answerable_not_found"] = _mean(o.status == "not_found" for o in answerable)
    out["citation_precision"] = _mean(cited)
    out["refusal_precision"] = _mean(not o.answerable for o in refused)
    out["refusal_recall"] = _mean(o.refused for o in should_refuse)
    out["near_topic_refusal_recall"] = _mean(o.refused for o in should_refuse if o.near_topic)
    out["short_answer_precision"] = _mean(o.short_answer_ok for o in outcomes if o.short_answer_ok is not None)
    out["short_answer_coverage"] = _mean(bool(o.short_answer_ok) for o in answerable if o.short_expected)
    out["latency_p50_ms"] = percentile(latencies, 50)
    out["latency_p95_ms"] = percentile(latencies, 95)
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}


def run(
    answerer,
    questions: QuestionSet,
    top_k: int = 5,
    progress: bool = False,
    desc: str = "Evaluating",
    warmup: bool = True,
    answers: bool = True,
) -> list[Outcome]:
    """Every question through the chat's own answer path, history included; with `answers=False` (a
    pipeline that only retrieves, such as `baselines.LlamaIndexDefaults`) only retrieval is scored.

    With `warmup`, the first question is asked once more before the timed run and not scored: the
    first, cold answer (lazy loads, allocations) took 1.2 s against ~25 ms warm (eval/results.json),
    and in any group of 20 questions or fewer (a question type, a small split) one outlier is the p95.
    """
    from tqdm import tqdm

    if warmup and questions.questions:
        first = questions.questions[0]
        answerer.answer(first.question, first.history, top_k=top_k)
    outcomes = []
    for q in tqdm(questions.questions, desc=desc, unit="q", disable=not progress):
        started = time.perf_counter()
        answer = answerer.answer(q.question, q.history, top_k=top_k)
        outcomes.append(judge(q, answer, (time.perf_counter() - started) * 1e3, top_k, answers))
    return outcomes


def report(outcomes: list[Outcome]) -> dict:
    """The metrics overall, per language and per question type (types with their question count)."""
    langs = sorted({o.lang for o in outcomes})
    types = [t for t in TYPES if any(o.type == t for o in outcomes)]
    return {
        "overall": summarise(outcomes),
        "by_lang": {lang: summarise([o for o in outcomes if o.lang == lang]) for lang in langs},
        "by_type": {
            t: {"n": sum(o.type == t for o in outcomes), **summarise([o for o in outcomes if o.type == t])}
            for t in types
        },
        "reliability": reliability(outcomes),
    }


def reliability(outcomes: list[Outcome]) -> list[dict]:
    """Confidence bins against the share of replies whose shown quote holds an accepted answer (never, for
    an unanswerable question): calibrated confidences sit on the diagonal."""
    import numpy as np

    from assistant.decision import reliability as bins

    rated = [o for o in outcomes if o.confidence is not None]
    if not rated:
        return []
    confidence = np.array([o.confidence for o in rated])
    right = np.array([bool(o.shown_ok) for o in rated])
    return bins(confidence, right)


def document(
    outcomes: list[Outcome],
    result: dict,
    questions: QuestionSet,
    split: str,
    config: dict,
    compare: dict | None = None,
    baseline: dict | None = None,
) -> dict:
    """The JSON results file of `assistant eval --json`: what `--baseline` reads back."""
    out = {
        "n": len(outcomes),
        "skipped": len(questions.skipped),
        "split": split,
        "config": {**config, "split": split},
        **result,
        "questions": [o.as_json() for o in outcomes],
    }
    if compare is not None:
        out["compare"] = compare
    if baseline is not None:
        out["baseline"] = baseline
    return out


def load_results(path: Path) -> dict:
    """A results file written by `assistant eval --json`, checked enough to diff against."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise EvaluationError(f"Cannot read the baseline {path}: {error}") from None
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("questions"), list)
        or not all(isinstance(q, dict) and isinstance(q.get("id"), str) for q in data["questions"])
    ):
        raise EvaluationError(
            f"{path} is not a results file of `assistant eval --json` "
            '(it needs a "questions" list of objects with an "id").'
        )
    return data


def _checks(o: Outcome, record: dict | None) -> dict[str, tuple[bool, bool]]:
    """(before, after) per check that applies to both runs of this question."""
    if record is None:
        return {}
    pairs = {}
    if isinstance(record.get("answer_ok"), bool) and o.answer_ok is not None:
        pairs["answer_ok"] = (record["answer_ok"], o.answer_ok)
    if o.retrieval_scored:  # the old file's hit_rank None means "not in the top k" for a scored question
        pairs["hit@1"] = (record.get("hit_rank") == 1, o.hit_rank == 1)
    if isinstance(record.get("refused"), bool) and o.refusal_ok is not None:
        pairs["refusal"] = (record["refused"] == (not o.answerable), o.refusal_ok)
    if o.refused is not None and (o.short_expected or o.short_answer or record.get("short_answer")):
        pairs["short_answer"] = (
            record.get("short_answer_ok") is True if record.get("short_answer") else not o.short_expected,
            o.short_answer_ok is True if o.short_answer else not o.short_expected,
        )
    return pairs


def diff(previous: dict, outcomes: list[Outcome], result: dict) -> dict:
    """Per question (keyed by id) against a previous results file: which checks were fixed, which
    regressed, how many stayed; and each metric's change, overall and per language."""
    before = {q["id"]: q for q in previous["questions"]}
    counts = {c: {"fixed": 0, "regressed": 0, "unchanged": 0} for c in CHECKS}
    changed = {"fixed": [], "regressed": []}
    for o in outcomes:
        moved = {"fixed": [], "regressed": []}
        for check, (was, now) in _checks(o, before.get(o.id)).items():
            kind = "unchanged" if was == now else "fixed" if now else "regressed"
            counts[check][kind] += 1
            if kind != "unchanged":
                moved[kind].append(check)
        for kind, checks in moved.items():
            if checks:
                changed[kind].append({"id": o.id, "question": o.question, "checks": checks})

    def deltas(old: dict, new: dict) -> dict:
        out = {}
        for metric in METRICS:
            if metric in old or metric in new:
                a, b = old.get(metric), new.get(metric)
                out[metric] = {
                    "before": a,
                    "after": b,
                    "delta": round(b - a, 4) if a is not None and b is not None else None,
                }
        return out

    ids = {o.id for o in outcomes}
    return {
        "split": previous.get("split", "all"),
        "compared": sum(o.id in before for o in outcomes),
        "new": sorted(ids - before.keys()),
        "dropped": sorted(before.keys() - ids),
        "checks": counts,
        **changed,
        "metrics": {
            "overall": deltas(previous.get("overall") or {}, result["overall"]),
            "by_lang": {
                lang: deltas((previous.get("by_lang") or {}).get(lang) or {}, values)
                for lang, values in result["by_lang"].items()
            },
        },
    }


@dataclass(frozen=True)
class Floor:
    metric: str
    value: float
    lang: str = ""  # "" for the overall figure

    @property
    def name(self) -> str:
        return f"{self.lang}:{self.metric}" if self.lang else self.metric


def parse_floor(text: str) -> Floor:
    """`METRIC=VALUE` or `LANG:METRIC=VALUE`, e.g. `hit@1=0.8`, `en:answer_match=0.75`."""
    name, sep, value = text.partition("=")
    if not sep:
        raise ValueError(f"{text!r} is not METRIC=VALUE (e.g. hit@1=0.8 or en:hit@1=0.7)")
    lang, _, metric = name.strip().rpartition(":")
    metric, lang = metric.strip(), lang.strip()
    if metric in LOWER_IS_BETTER:
        raise ValueError(f"{metric} is a latency, lower is better: a floor applies to quality metrics only")
    quality = [m for m in METRICS if m not in LOWER_IS_BETTER]
    if metric not in quality:
        raise ValueError(f"unknown metric {metric!r}; choose from {', '.join(quality)}")
    if lang and not re.fullmatch(r"[a-z]{2,3}", lang):
        raise ValueError(f"{lang!r} is not a language code such as th or en")
    try:
        floor = float(value)
    except ValueError:
        raise ValueError(f"{value.strip()!r} is not a number") from None
    if not 0.0 <= floor <= 1.0:
        raise ValueError(f"{text.strip()} is outside 0–1")
    return Floor(metric, floor, lang)


def below(result: dict, floors) -> list[str]:
    """One line per floor the results do not reach; a metric no question applies to fails too."""
    failures = []
    for floor in floors:
        values = result["by_lang"].get(floor.lang, {}) if floor.lang else result["overall"]
        value = values.get(floor.metric)
        if value is None:
            failures.append(
                f"{floor.name} has no value (no {floor.lang + ' ' if floor.lang else ''}"
                f"question it applies to), floor {floor.value:.3f}"
            )
        elif value < floor.value:
            failures.append(f"{floor.name} = {value:.3f} < {floor.value:.3f}")
    return failures


def decision_examples(answerer, questions: QuestionSet, progress: bool = False) -> list:
    """The answer-decision model's training examples: each question's draft answer (before any decision)
    with its label, whether the quote it would show holds an accepted answer."""
    from tqdm import tqdm

    from assistant.decision import Example

    examples = []
    for q in tqdm(questions.questions, desc="Drafting answers", unit="q", disable=not progress):
        draft = answerer.draft(q.question, q.history)
        if draft.evidence is None:
            continue
        answers = q.answers if q.answerable else ()
        examples.append(
            Example(
                id=q.id,
                lang=q.lang,
                answerable=q.answerable,
                evidence=draft.evidence,
                label=bool(answers) and contains_any(draft.text, answers),
            )
        )
    return examples
