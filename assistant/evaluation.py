"""Evaluation: question sets (JSON Lines, CSV), per-question judging, metrics, baselines diffs and floors."""

from __future__ import annotations

import csv
import io
import json
import math
import re
import statistics
import time
import unicodedata
from dataclasses import dataclass, field, fields, replace
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
# The known values of `type` and `source`: adding one is a one-line change here. An unknown `type` keeps
# its question, untyped, with a warning (a set written elsewhere must not silently lose questions).
TYPES = ("when", "who", "where", "which", "how_many", "how_far", "why", "how", "what", "overview")
SOURCES = ("document", "notes", "glossary", "feedback", "none")
FORMATS = ("jsonl", "csv")
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


FIELDS = tuple(f.name for f in fields(Question))
LIST_FIELDS = ("answers", "evidence", "short")  # several values: a JSON list, or `a | b` in a CSV cell
BOOL_FIELDS = ("answerable", "near_topic")


@dataclass(frozen=True)
class QuestionSet:
    questions: tuple[Question, ...]
    skipped: tuple[str, ...] = field(default=())  # "line N: reason" per malformed line
    warnings: tuple[str, ...] = field(default=())  # one per distinct problem; the questions are kept
    lines: int = 0  # non-blank lines (JSON Lines) or data rows (CSV) read

    @property
    def clean(self) -> bool:
        """Nothing skipped and nothing warned about: what `--strict` requires."""
        return not self.skipped and not self.warnings


def question_format(path: Path, fmt: str | None = None) -> str:
    """The format asked for, else the file's extension: `.csv` is CSV, anything else JSON Lines."""
    if fmt:
        if fmt not in FORMATS:
            raise EvaluationError(f"Unknown question format {fmt!r}: choose from {', '.join(FORMATS)}.")
        return fmt
    return "csv" if path.suffix.lower() == ".csv" else "jsonl"


def load_questions(path: Path, fmt: str | None = None) -> QuestionSet:
    """Questions from a JSON Lines or CSV file (`fmt`, else by extension). A malformed line (bad JSON,
    no question) is skipped and reported with its line number; a value the format does not know (a
    `type`, a `source`, a field) keeps its question and is warned about once per distinct value."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # spreadsheets and Notepad write a BOM
    except UnicodeDecodeError as error:
        raise EvaluationError(
            f"{path} is not UTF-8 text ({error.reason} at byte {error.start}): save it as UTF-8 "
            '(in a spreadsheet: "CSV UTF-8").'
        ) from None
    except OSError as error:
        raise EvaluationError(f"Cannot read the questions {path}: {error.strerror or error}.") from None
    records = _csv_records(text, path) if question_format(path, fmt) == "csv" else _jsonl_records(text)
    return _load(records)


def _jsonl_records(text: str):
    """(line number, JSON object or the error that kept it from being one) per non-blank line."""
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except ValueError as error:
            yield number, error


def _csv_delimiter(header: str) -> str:
    """Comma, or the semicolon or tab a spreadsheet in another locale writes, judged by the header."""
    return max(",;\t", key=header.count) if header.strip() else ","


def _csv_records(text: str, path: Path):
    """(line number, the row as the JSON Lines object it stands for, or an error) per non-blank row."""
    header_line = text.lstrip("\r\n").split("\n", 1)[0]
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_csv_delimiter(header_line))
    header, start = None, 1
    for row in _csv_rows(reader, path):
        number, start = start, reader.line_num + 1  # a quoted cell may span lines: its row starts here
        if not any(cell.strip() for cell in row):
            continue
        if header is None:
            header = [cell.strip().lower() for cell in row]
            missing = [name for name in ("id", "question") if name not in header]
            if missing:
                raise EvaluationError(
                    f"{path} line {number}: the header names no {' or '.join(repr(m) for m in missing)} column. "
                    f"The first row must name the fields, e.g. {','.join(TEMPLATE_FIELDS)} "
                    "(`assistant eval --template csv` prints one)."
                )
            continue
        if len(row) > len(header) and any(cell.strip() for cell in row[len(header) :]):
            yield number, ValueError(f"{len(row)} cells but the header names {len(header)} columns")
            continue
        try:
            yield number, _csv_object(dict(zip(header, row)))
        except ValueError as error:
            yield number, error


def _csv_rows(reader, path: Path):
    """The reader's rows; what the csv module cannot read at all (a cell over its size limit) ends the
    file with a message, as it leaves no row boundary to go on from."""
    try:
        yield from reader
    except csv.Error as error:
        raise EvaluationError(
            f"{path} line {reader.line_num}: {error}. Is it a CSV file? Save it from the spreadsheet as CSV UTF-8."
        ) from None


def _csv_object(row: dict[str, str]) -> dict:
    """A CSV row as the object a JSON line would hold: `a | b` lists, JSON history, yes/no booleans;
    an empty cell is an absent field."""
    obj = {}
    for key, value in row.items():
        value = value.strip()
        if not key or not value:
            continue
        if key in LIST_FIELDS:
            obj[key] = _csv_list(key, value)
        elif key == "history":
            try:
                obj[key] = json.loads(value)
            except ValueError:
                raise ValueError(
                    "'history' must be JSON in its cell, e.g. "
                    '[{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]'
                ) from None
        elif key in BOOL_FIELDS:
            obj[key] = _csv_bool(key, value)
        else:
            obj[key] = value
    return obj


def _csv_list(key: str, value: str) -> list[str]:
    if value.startswith("["):  # a JSON list, for a value that itself holds a "|"
        try:
            items = json.loads(value)
        except ValueError:
            items = None
        if isinstance(items, list):
            return items
    return [item.strip() for item in value.split("|") if item.strip()]


def _csv_bool(key: str, value: str) -> bool:
    folded = value.casefold()
    if folded in ("true", "yes", "y", "1"):
        return True
    if folded in ("false", "no", "n", "0"):
        return False
    raise ValueError(f"{key!r} must be true or false (or yes/no, 1/0), not {value!r}")


def _load(records) -> QuestionSet:
    """Questions from (line number, object or error) pairs, with the warnings their values earn."""
    questions, skipped, lines = [], [], 0
    unknown: dict[tuple[str, str], list[int]] = {}  # (what, value) -> line numbers
    first_line: dict[str, int] = {}
    for number, obj in records:
        lines += 1
        try:
            if isinstance(obj, Exception):
                raise obj
            question, problems = _question_and_problems(obj)
        except (ValueError, TypeError, KeyError) as error:
            reason = error.args[0] if isinstance(error, KeyError) and error.args else error
            skipped.append(f"line {number}: {reason}")
            continue
        for problem in problems:
            unknown.setdefault(problem, []).append(number)
        if question.id in first_line:
            unknown.setdefault(("id", question.id), []).append(number)
        first_line.setdefault(question.id, number)
        questions.append(question)
    warnings = [_warning(what, value, numbers, first_line) for (what, value), numbers in unknown.items()]
    return QuestionSet(tuple(questions), tuple(skipped), tuple(warnings), lines)


def _warning(what: str, value: str, numbers: list[int], first_line: dict[str, int]) -> str:
    shown = ", ".join(map(str, numbers[:5])) + (f" and {len(numbers) - 5} more" if len(numbers) > 5 else "")
    where = f"line{'s' if len(numbers) > 1 else ''} {shown}"
    if what == "type":
        return (
            f"type {value!r} is not one of {', '.join(TYPES)}: {len(numbers)} question"
            f"{'s' if len(numbers) > 1 else ''} kept, untyped ({where})"
        )
    if what == "source":
        return f"source {value!r} is not one of {', '.join(SOURCES)}: kept as given ({where})"
    if what == "id":
        return f"id {value!r} is used again ({where}; first on line {first_line[value]}): results by id mix them"
    return f"field {value!r} is not one of {', '.join(FIELDS)}: ignored ({where})"


def _strings(obj: dict, key: str) -> tuple[str, ...]:
    value = obj.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{key!r} must be a list of strings")
    return tuple(value)


def _type_name(value) -> str:
    """`How many`, `how-many` and `HOW_MANY` all name how_many."""
    return re.sub(r"[\s-]+", "_", str(value).strip().casefold()) if value is not None else ""


def _question_and_problems(obj) -> tuple[Question, list[tuple[str, str]]]:
    """The question of one JSON object, and its values the format does not know as (what, value)."""
    if not isinstance(obj, dict):
        raise TypeError("expected a JSON object")
    for key in ("id", "question"):
        if not isinstance(obj.get(key), str) or not obj[key].strip():
            raise KeyError(f"missing or empty {key!r}")
    problems = [("field", key) for key in obj if key not in FIELDS]
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
    split = split.strip().casefold() if isinstance(split, str) else split
    if split not in ("",) + SPLITS:
        raise ValueError(f"'split' must be one of {', '.join(SPLITS)}, not {split!r}")
    kind = _type_name(obj.get("type"))
    if kind not in ("",) + TYPES:
        problems.append(("type", kind))  # one warning for `yes_no` and `Yes-No` alike
        kind = ""
    source = str(obj.get("source") or "").strip()
    if source and source not in SOURCES:
        problems.append(("source", source))
    short = _strings(obj, "short")
    if not all(s.strip() for s in short):
        raise ValueError("'short' must not contain empty strings")
    near_topic = obj.get("near_topic", False)
    if not isinstance(near_topic, bool):
        raise TypeError("'near_topic' must be true or false")
    if near_topic and answerable:
        raise ValueError("'near_topic' applies to unanswerable questions only")
    question = Question(
        id=obj["id"].strip(),
        lang=str(obj.get("lang") or "").strip().casefold() or _language(obj["question"]),
        question=obj["question"],
        history=tuple(Turn(t["role"], t["content"]) for t in history),
        answers=_strings(obj, "answers"),
        evidence=_strings(obj, "evidence"),
        answerable=answerable,
        source=source,
        split=split,
        type=kind,
        short=short,
        near_topic=near_topic,
    )
    return question, problems


def _language(text: str) -> str:
    """A question without `lang`: Thai when it holds Thai script, else English."""
    return "th" if re.search("[\u0e00-\u0e7f]", text) else "en"


# The template's columns (every field, in the order a person fills them in) and its three examples: a
# Thai question, an English one, an unanswerable one. A test runs them: all three pass.
TEMPLATE_FIELDS = (
    "id",
    "lang",
    "question",
    "answers",
    "evidence",
    "short",
    "answerable",
    "near_topic",
    "type",
    "split",
    "source",
    "history",
)
TEMPLATE_QUESTIONS = (
    {
        "id": "th-1",
        "lang": "th",
        "question": "บราซิลยุติการเจรจาอะไร",
        "answers": ["เขตการค้าเสรีแห่งอเมริกา", "FTAA"],
        "evidence": ["บราซิลยุติการเจรจาจัดทำเขตการค้าเสรีแห่งอเมริกา"],
        "answerable": True,
        "type": "what",
        "source": "document",
    },
    {
        "id": "en-1",
        "lang": "en",
        "question": "Where is LAN Chile's South American hub?",
        "answers": ["Lima", "กรุงลิมา"],
        "evidence": ["มีศูนย์กลางในอเมริกาใต้อยู่ที่กรุงลิมาของเปรู"],
        "short": ["Lima", "กรุงลิมา"],
        "answerable": True,
        "type": "where",
        "source": "document",
    },
    {
        "id": "none-1",
        "lang": "en",
        "question": "What is the population of Mexico?",
        "answerable": False,
        "near_topic": True,
        "type": "how_many",
        "source": "none",
    },
)


def template(fmt: str) -> str:
    """A question set to start from, in `fmt`: the CSV header names every field; the examples are
    TEMPLATE_QUESTIONS."""
    if fmt == "jsonl":
        return "".join(json.dumps(q, ensure_ascii=False) + "\n" for q in TEMPLATE_QUESTIONS)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(TEMPLATE_FIELDS)
    for q in TEMPLATE_QUESTIONS:
        writer.writerow([_csv_cell(q.get(name)) for name in TEMPLATE_FIELDS])
    return out.getvalue()


def _csv_cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return " | ".join(value)
    return str(value)


def loaded_line(split: str, ran: int, questions: QuestionSet) -> str:
    """What ran of what was read: `Split: test, 3 of 4 questions from 5 lines (1 line skipped, 1 warning).`"""
    notes = [
        f"{n} {word}{'s' if n != 1 else ''}{tail}"
        for n, word, tail in (
            (len(questions.skipped), "line", " skipped"),
            (len(questions.warnings), "warning", ""),
        )
        if n
    ]
    return (
        f"Split: {split}, {ran} of {len(questions.questions)} questions from {questions.lines} "
        f"line{'s' if questions.lines != 1 else ''}" + (f" ({', '.join(notes)})." if notes else ".")
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


@dataclass(frozen=True)
class Failure:
    """One check a question failed: what it expected and what the pipeline gave, in words."""

    check: str  # one of CHECKS
    expected: str
    answered: str


def failures(question: Question, outcome: Outcome) -> tuple[Failure, ...]:
    """The checks this question failed, in CHECKS order: no accepted answer in the answer, the evidence
    not in the first passage, refused when it should answer (or the reverse), a wrong short answer. The
    terminal's failure table, the JUnit file and the HTML report's failed questions all count these."""
    q, o = question, outcome
    given = answer_text(o)
    out = []
    if o.answer_ok is False:
        out.append(Failure("answer_ok", f"an answer holding one of: {' | '.join(q.answers) or '(none given)'}", given))
    if o.retrieval_scored and o.hit_rank != 1:
        found = f"at rank {o.hit_rank}" if o.hit_rank else f"in none of the {len(o.retrieved)} passages retrieved"
        first = f"; the first passage was {o.retrieved[0]}" if o.retrieved else ""
        out.append(Failure("hit@1", f"the first passage holding one of: {' | '.join(q.evidence)}", found + first))
    if o.refusal_ok is False:
        if q.answerable:
            out.append(Failure("refusal", "a confident answer (the question is answerable)", given))
        else:
            out.append(Failure("refusal", "uncertain or not_found (the documents do not answer this)", given))
    if o.short_answer_ok is False:
        accepted = " | ".join(q.short or q.answers)
        expected = f"a short answer matching one of: {accepted}" if q.answerable else "no short answer (unanswerable)"
        out.append(Failure("short_answer", expected, o.short_answer or ""))
    return tuple(out)


def answer_text(outcome: Outcome) -> str:
    """The answer as shown, after its status when that is not a confident answer: `not_found: …`."""
    if outcome.status in (None, "answered"):
        return outcome.answer
    return f"{outcome.status}: {outcome.answer}"


def failed(questions: QuestionSet, outcomes: list[Outcome]) -> list[tuple[Question, Outcome, tuple[Failure, ...]]]:
    """The questions that failed a check, in run order, with their failures (`questions` are the ones
    that ran, in the order of `outcomes`)."""
    pairs = ((q, o, failures(q, o)) for q, o in zip(questions.questions, outcomes, strict=True))
    return [(q, o, f) for q, o, f in pairs if f]


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
        "lines": questions.lines,
        "skipped": len(questions.skipped),
        "warnings": list(questions.warnings),
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
        raise ValueError(f"for {metric} lower is better: a floor applies to the metrics where higher is better")
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
