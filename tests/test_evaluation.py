import csv
import json
import re
import time
from dataclasses import replace
from pathlib import Path
from xml.etree import ElementTree

import pytest

from assistant import corpus, evaluation, report
from assistant.errors import AssistantError
from assistant.types import Answer, Chunk, Citation, Hit

QUESTIONS = Path(__file__).resolve().parent.parent / "eval" / "questions.jsonl"


def test_project_question_set_is_well_formed(config):
    qs = evaluation.load_questions(QUESTIONS)
    assert qs.skipped == () and qs.warnings == ()  # the project's own set passes `--strict`
    questions = qs.questions
    assert len(questions) >= 80
    assert len({q.id for q in questions}) == len(questions)
    assert sum(not q.answerable for q in questions) >= 12
    assert sum(bool(q.history) for q in questions) >= 5
    assert {q.lang for q in questions} == {"th", "en"}
    texts = [d.text for d in corpus.load(config.corpus_dir).documents]
    for q in questions:
        for evidence in q.evidence:  # verbatim, so relevance cannot be faked
            assert any(evidence in t for t in texts), (q.id, evidence)
        assert q.answerable == bool(q.evidence)


def _chunk(text, i=0):
    return Chunk(f"d#{i}", "d", "d.txt", "D", 1, 0, len(text), text, ((0, len(text)),))


def _answer(passages, answer="", refused=False, cited=(), short_answer=None):
    hits = tuple(Hit(_chunk(p, i), 1.0 / (i + 1), 0.9, i, None) for i, p in enumerate(passages))
    citations = tuple(
        Citation(n, f"d#{n}", "d.txt", "D", t, 0, len(t), 0, len(t), 0.9) for n, t in enumerate(cited, start=1)
    )
    status = "not_found" if refused else "answered"
    return Answer("q", answer, refused, citations, "th", "q", hits, short_answer=short_answer, status=status)


def test_ranks_and_ndcg_exact():
    passages = ["ไม่เกี่ยว", "ชิลี และ เปรู", "อื่น", "ชิลีและเปรู อีกครั้ง"]
    assert evaluation.hit_rank(passages, ["ชิลีและเปรู"]) == 2  # spacing does not fool Thai matching
    expected = (1 / 1.584962500721156 + 1 / 2.321928094887362) / (1 + 1 / 1.584962500721156)
    assert evaluation.ndcg(passages, ["ชิลีและเปรู"], k=5) == pytest.approx(expected, abs=1e-4)
    assert evaluation.ndcg(passages, ["ไม่มี"], k=5) == 0.0


def test_summary_metrics_exact():
    q1 = evaluation.Question("a", "th", "?", answers=("เปรู",), evidence=("เปรู",))
    q2 = evaluation.Question("b", "en", "?", answers=("Chile",), evidence=("ชิลี",))
    q3 = evaluation.Question("c", "en", "?", answerable=False)
    q4 = evaluation.Question("d", "th", "?", answers=("x",), evidence=("x",))
    outcomes = [
        evaluation.judge(q1, _answer(["เปรู"], "เปรู [1]", cited=["เปรู", "อื่น"]), 10.0),
        evaluation.judge(q2, _answer(["a", "b", "ชิลี"], "ชิลี [1]", cited=["ชิลี"]), 20.0),
        evaluation.judge(q3, _answer(["a"], "The documents do not contain this.", refused=True), 30.0),
        evaluation.judge(q4, _answer(["y"], "no", refused=True), 40.0),
    ]
    s = evaluation.summarise(outcomes)
    assert s["hit@1"] == pytest.approx(1 / 3, abs=1e-4)
    assert s["hit@3"] == pytest.approx(2 / 3, abs=1e-4)
    assert s["mrr"] == pytest.approx((1 + 1 / 3) / 3, abs=1e-4)
    assert s["answer_match"] == pytest.approx(1 / 3, abs=1e-4)  # q2 answers in Thai, not "Chile"
    assert s["citation_precision"] == pytest.approx(0.75, abs=1e-4)
    assert s["refusal_precision"] == pytest.approx(0.5, abs=1e-4)
    assert s["refusal_recall"] == pytest.approx(1.0, abs=1e-4)
    assert s["latency_p50_ms"] == pytest.approx(25.0, abs=1e-4)
    by_lang = evaluation.report(outcomes)["by_lang"]
    assert by_lang["en"]["refusal_recall"] == 1.0 and by_lang["th"]["refusal_recall"] is None


def test_malformed_lines_are_skipped_and_counted(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text(
        "\n".join(
            [
                json.dumps(
                    {
                        "id": "ok",
                        "lang": "th",
                        "question": "ชิลี?",
                        "answers": ["ชิลี"],
                        "evidence": ["ชิลี"],
                        "extra": "ignored",
                    }
                ),
                "{not json",
                json.dumps({"id": "no-question"}),
                json.dumps({"id": "bad", "question": "x", "answers": "not a list"}),
                json.dumps(["a", "list"]),
                "",
            ]
        ),
        encoding="utf-8",
    )
    qs = evaluation.load_questions(path)
    assert [q.id for q in qs.questions] == ["ok"]
    assert len(qs.skipped) == 4
    assert qs.skipped[0].startswith("line 2:")


def test_project_evaluation_quality_holds(answerer):
    """The held-out split against the committed floors (eval/floors.txt), as `make eval-gate` checks it:
    a change that loses quality fails here."""
    floors = [
        evaluation.parse_floor(line.split("#")[0])
        for line in (QUESTIONS.parent / "floors.txt").read_text(encoding="utf-8").splitlines()
        if line.split("#")[0].strip()
    ]
    test = evaluation.select(evaluation.load_questions(QUESTIONS), "test")
    result = evaluation.report(evaluation.run(answerer, test))
    assert len(floors) >= 10 and evaluation.below(result, floors) == []


def _write(path, rows):
    path.write_text(
        "\n".join(r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8"
    )
    return path


def test_split_type_short_and_near_topic_are_loaded(tmp_path):
    qs = evaluation.load_questions(
        _write(
            tmp_path / "q.jsonl",
            [
                {
                    "id": "a",
                    "lang": "th",
                    "question": "ปีใด?",
                    "answers": ["1991"],
                    "evidence": ["1991"],
                    "split": "dev",
                    "type": "when",
                    "short": ["1991", "ค.ศ. 1991"],
                },
                {
                    "id": "b",
                    "question": "Who?",
                    "answerable": False,
                    "split": "test",
                    "type": "who",
                    "near_topic": True,
                },
                {"id": "c", "question": "What?"},
            ],
        )
    )
    assert qs.skipped == ()
    a, b, c = qs.questions
    assert (a.split, a.type, a.short, a.near_topic) == ("dev", "when", ("1991", "ค.ศ. 1991"), False)
    assert (b.split, b.type, b.short, b.near_topic) == ("test", "who", (), True)
    assert (c.split, c.type, c.short, c.near_topic) == ("", "", (), False)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"split": "train"}, "'split' must be one of dev, test, not 'train'"),
        ({"split": 1}, "'split' must be one of dev, test"),
        ({"short": "1991"}, "'short' must be a list of strings"),
        ({"short": ["1991", 1991]}, "'short' must be a list of strings"),
        ({"short": [" "]}, "'short' must not contain empty strings"),
        ({"near_topic": "yes", "answerable": False}, "'near_topic' must be true or false"),
        ({"near_topic": True}, "'near_topic' applies to unanswerable questions only"),
    ],
)
def test_malformed_new_fields_skip_the_line_with_a_reason(tmp_path, fields, message):
    good = {"id": "ok", "question": "ชิลี?"}
    qs = evaluation.load_questions(_write(tmp_path / "q.jsonl", [good, {"id": "bad", "question": "x", **fields}]))
    assert [q.id for q in qs.questions] == ["ok"]
    assert len(qs.skipped) == 1 and qs.skipped[0].startswith("line 2: ") and message in qs.skipped[0]


def test_split_selection():
    qs = evaluation.QuestionSet(
        tuple(
            evaluation.Question(i, "en", "?", split=s)
            for i, s in [("a", "dev"), ("b", "test"), ("c", ""), ("d", "test")]
        )
    )
    assert [q.id for q in evaluation.select(qs, "test").questions] == ["b", "d"]
    assert [q.id for q in evaluation.select(qs, "dev").questions] == ["a"]
    assert evaluation.select(qs, "all") is qs
    only_dev = evaluation.QuestionSet(qs.questions[:1] + qs.questions[2:3])
    with pytest.raises(AssistantError, match=r"No question is in the 'test' split \(1 of the 2 have no \"split"):
        evaluation.select(only_dev, "test")


def _short(answer: Answer, text: str) -> Answer:
    return replace(answer, short_answer={"text": text, "citation": 1, "start": 0, "end": len(text)})


@pytest.mark.parametrize(
    "text, accepted, ok",
    [
        ("1991", ["1991"], True),
        ("ปี 1991", ["1991"], True),  # contains an accepted string
        ("Lima", ["กรุงลิมา", "lima, peru"], True),  # contained in one, case and spacing folded
        ("ＬＩＭＡ", ["lima"], True),  # NFKC
        ("1992", ["1991"], False),
        ("", ["1991"], False),
        ("1991", [], False),
    ],
)
def test_short_match_rule(text, accepted, ok):
    assert evaluation.short_match(text, accepted) is ok


def test_short_answer_metrics_exact():
    when = evaluation.Question("a", "th", "?", answers=("ในปี 1991",), evidence=("1991",), type="when", short=("1991",))
    who = evaluation.Question(
        "b", "en", "?", answers=("Brescia",), evidence=("Brescia",), type="who", short=("Brescia",)
    )
    where = evaluation.Question("c", "en", "?", answers=("กรุงลิมา",), evidence=("ลิมา",), type="where", short=("Lima",))
    no_short = evaluation.Question("d", "th", "?", answers=("MERCOSUR",), evidence=("MERCOSUR",), type="what")
    unanswerable = evaluation.Question("e", "en", "?", answerable=False, near_topic=True, type="who")
    far = evaluation.Question("f", "en", "?", answerable=False)
    outcomes = [
        evaluation.judge(when, _short(_answer(["1991"], "ในปี 1991 [1]"), "ปี 1991"), 1.0),  # right
        evaluation.judge(who, _short(_answer(["Brescia"], "Brescia [1]"), "Cementos"), 1.0),  # wrong
        evaluation.judge(where, _answer(["ลิมา"], "กรุงลิมา [1]"), 1.0),  # no short answer: not covered
        evaluation.judge(no_short, _short(_answer(["MERCOSUR"], "MERCOSUR [1]"), "mercosur"), 1.0),  # via answers
        evaluation.judge(unanswerable, _short(_answer(["x"], "x [1]"), "x"), 1.0),  # a short answer to nothing
        evaluation.judge(far, _answer(["x"], "ไม่พบ", refused=True), 1.0),
    ]
    assert [o.short_answer_ok for o in outcomes] == [True, False, None, True, False, None]
    s = evaluation.summarise(outcomes)
    assert s["short_answer_precision"] == pytest.approx(2 / 4, abs=1e-4)
    assert s["short_answer_coverage"] == pytest.approx(1 / 3, abs=1e-4)  # a, b, c have `short`; a is right
    assert s["near_topic_refusal_recall"] == 0.0 and s["refusal_recall"] == 0.5
    result = evaluation.report(outcomes)
    assert list(result["by_type"]) == ["when", "who", "where", "what"]  # in TYPES order, untyped left out
    assert result["by_type"]["who"]["n"] == 2
    assert result["by_type"]["who"]["short_answer_precision"] == 0.0
    assert result["by_type"]["when"]["short_answer_coverage"] == 1.0
    assert set(result["overall"]) == set(evaluation.METRICS)


def test_retrieval_only_configurations_have_no_short_answer_metrics():
    q = evaluation.Question("a", "th", "?", answers=("1991",), evidence=("1991",), short=("1991",))
    o = evaluation.judge(q, _short(_answer(["1991"]), "1991"), 1.0, answers=False)
    assert o.short_answer is None and o.short_answer_ok is None
    s = evaluation.summarise([o])
    assert s["short_answer_precision"] is None and s["short_answer_coverage"] is None


class SlowFirstAnswerer:
    """Stands in for a cold pipeline: the first answer takes 300 ms, the rest are instant."""

    def __init__(self):
        self.asked = []

    def answer(self, question, history=(), top_k=5):
        if not self.asked:
            time.sleep(0.3)
        self.asked.append(question)
        return _answer(["ชิลี"], "ชิลี [1]", cited=["ชิลี"])


def test_warm_up_question_is_asked_first_and_left_out_of_latency():
    qs = evaluation.QuestionSet(
        tuple(evaluation.Question(i, "th", f"คำถาม {i}", answers=("ชิลี",), evidence=("ชิลี",)) for i in "abc")
    )
    answerer = SlowFirstAnswerer()
    outcomes = evaluation.run(answerer, qs)
    assert answerer.asked == ["คำถาม a", "คำถาม a", "คำถาม b", "คำถาม c"]
    assert [o.id for o in outcomes] == ["a", "b", "c"]
    assert max(o.latency_ms for o in outcomes) < 100
    cold = evaluation.run(SlowFirstAnswerer(), qs, warmup=False)
    assert cold[0].latency_ms >= 300


def test_baseline_diff_fixed_regressed_unchanged_and_deltas():
    qa = evaluation.Question("a", "th", "คำถาม a", answers=("เปรู",), evidence=("เปรู",))
    qb = evaluation.Question("b", "en", "question b", answers=("Chile",), evidence=("ชิลี",))
    qc = evaluation.Question("c", "en", "question c", answerable=False)
    qn = evaluation.Question("n", "en", "new", answerable=False)
    outcomes = [
        evaluation.judge(qa, _answer(["เปรู"], "เปรู [1]"), 1.0),  # hit@1, answer ok
        evaluation.judge(qb, _answer(["a", "ชิลี"], "ชิลี [1]"), 1.0),  # hit 2, answer not ok
        evaluation.judge(qc, _answer(["a"], "ไม่พบ", refused=True), 1.0),  # refused rightly
        evaluation.judge(qn, _answer(["a"], "ไม่พบ", refused=True), 1.0),
    ]
    result = evaluation.report(outcomes)
    previous = {
        "split": "all",
        "overall": {"hit@1": 1.0, "answer_match": 0.25, "latency_p50_ms": 3.0},
        "by_lang": {"en": {"hit@1": 1.0}},
        "questions": [
            {"id": "a", "hit_rank": None, "answer_ok": False, "refused": False},  # fixed twice
            {"id": "b", "hit_rank": 1, "answer_ok": True, "refused": False},  # regressed twice
            {"id": "c", "hit_rank": None, "answer_ok": None, "refused": False},  # refusal fixed
            {"id": "gone", "hit_rank": 1, "answer_ok": True, "refused": False},
        ],
    }
    d = evaluation.diff(previous, outcomes, result)
    assert d["compared"] == 3 and d["new"] == ["n"] and d["dropped"] == ["gone"]
    assert d["checks"] == {
        "answer_ok": {"fixed": 1, "regressed": 1, "unchanged": 0},
        "hit@1": {"fixed": 1, "regressed": 1, "unchanged": 0},
        "refusal": {"fixed": 1, "regressed": 0, "unchanged": 2},
        "short_answer": {"fixed": 0, "regressed": 0, "unchanged": 0},
    }
    assert d["regressed"] == [{"id": "b", "question": "question b", "checks": ["answer_ok", "hit@1"]}]
    assert [(c["id"], c["checks"]) for c in d["fixed"]] == [("a", ["answer_ok", "hit@1"]), ("c", ["refusal"])]
    overall = d["metrics"]["overall"]
    assert overall["hit@1"] == {"before": 1.0, "after": 0.5, "delta": -0.5}
    assert overall["answer_match"]["delta"] == pytest.approx(0.25)
    assert overall["mrr"] == {"before": None, "after": 0.75, "delta": None}
    assert d["metrics"]["by_lang"]["en"]["hit@1"]["delta"] == -1.0
    text = report.diff_text(d, "all")
    assert "Regressed (1):\n  b (answer_ok, hit@1): question b" in text
    assert "| hit@1 | 1 | 1 | 0 |" in text and "| hit@1 | 1.000 | 0.500 | -0.500 |" in text


def test_baseline_diff_short_answers():
    """A short answer found or lost where one is expected, and a wrong one given, count per question."""
    expected = evaluation.Question("a", "en", "When?", answers=("1991",), evidence=("1991",), short=("1991",))
    lost = evaluation.Question("b", "en", "When?", answers=("1991",), evidence=("1991",), short=("1991",))
    unexpected = evaluation.Question("c", "en", "What?", answerable=False)
    short = {"text": "1991", "citation": 1, "start": 0, "end": 4}
    outcomes = [
        evaluation.judge(expected, _answer(["1991"], "1991 [1]", short_answer=short), 1.0),
        evaluation.judge(lost, _answer(["1991"], "1991 [1]"), 1.0),
        evaluation.judge(unexpected, _answer(["x"], "1991 [1]", short_answer=short), 1.0),
    ]
    previous = {
        "questions": [
            {"id": "a", "hit_rank": 1, "answer_ok": True, "refused": False, "short_answer": None},
            {
                "id": "b",
                "hit_rank": 1,
                "answer_ok": True,
                "refused": False,
                "short_answer": "1991",
                "short_answer_ok": True,
            },
            {"id": "c", "hit_rank": None, "answer_ok": None, "refused": False, "short_answer": None},
        ]
    }
    d = evaluation.diff(previous, outcomes, evaluation.report(outcomes))
    assert d["checks"]["short_answer"] == {"fixed": 1, "regressed": 2, "unchanged": 0}
    assert [(c["id"], c["checks"]) for c in d["regressed"]] == [("b", ["short_answer"]), ("c", ["short_answer"])]


@pytest.mark.parametrize(
    "text, message",
    [
        ("hit@1", "is not METRIC=VALUE"),
        ("bogus=0.5", "unknown metric 'bogus'; choose from hit@1, hit@3"),
        ("en:bogus=0.5", "unknown metric 'bogus'"),
        ("latency_p95_ms=30", "lower is better"),
        ("hit@1=high", "'high' is not a number"),
        ("hit@1=80", "outside 0–1"),
        ("English:hit@1=0.5", "not a language code"),
    ],
)
def test_bad_floors_say_why(text, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        evaluation.parse_floor(text)


def test_floors_below_name_each_failing_metric():
    floors = [
        evaluation.parse_floor(t)
        for t in ("hit@1=0.8", "en:hit@1=0.7", " th : mrr = 0.5", "answer_match=0.5", "fr:hit@1=0.1")
    ]
    assert floors[2] == evaluation.Floor("mrr", 0.5, "th")
    result = {"overall": {"hit@1": 0.75, "answer_match": None}, "by_lang": {"en": {"hit@1": 0.7}, "th": {"mrr": 0.4}}}
    assert evaluation.below(result, floors) == [
        "hit@1 = 0.750 < 0.800",
        "th:mrr = 0.400 < 0.500",
        "answer_match has no value (no question it applies to), floor 0.500",
        "fr:hit@1 has no value (no fr question it applies to), floor 0.100",
    ]


def test_csv_has_one_row_per_question(tmp_path):
    q = evaluation.Question(
        "a", "th", 'ปีใด, "จริง"?', answers=("1991",), evidence=("1991",), split="dev", type="when", short=("1991",)
    )
    r = evaluation.Question("b", "en", "Who won?", answerable=False, near_topic=True, split="test")
    outcomes = [
        evaluation.judge(q, _short(_answer(["1991"], "ปี 1991 [1]", cited=["1991"]), "1991"), 12.345),
        evaluation.judge(r, _answer(["x"], "ไม่พบ", refused=True), 7.0),
    ]
    path = tmp_path / "out.csv"
    report.write_csv(path, outcomes)
    rows = list(csv.DictReader(path.open(encoding="utf-8")))
    assert list(rows[0]) == [
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
    ]
    assert rows[0] == {
        "id": "a",
        "split": "dev",
        "type": "when",
        "lang": "th",
        "answerable": "true",
        "near_topic": "false",
        "hit_rank": "1",
        "answer_ok": "true",
        "refused": "false",
        "short_answer_ok": "true",
        "citations_ok": "1.0",
        "latency_ms": "12.345",
        "question": 'ปีใด, "จริง"?',
        "answer": "ปี 1991 [1]",
    }
    assert rows[1]["hit_rank"] == "" and rows[1]["answer_ok"] == "" and rows[1]["near_topic"] == "true"


def test_report_tables_come_from_the_data():
    result = {
        "overall": {"hit@1": 0.5, "latency_p50_ms": 21.04},
        "by_lang": {"en": {"hit@1": 1.0}},
        "by_type": {"when": {"n": 3, "hit@1": 2 / 3}},
    }
    assert report.table(result) == (
        "| metric | overall | en |\n|---|---:|---:|\n| hit@1 | 0.500 | 1.000 |\n| latency_p50_ms | 21.0 | – |"
    )
    assert report.html_table(report.type_rows(result)).count("<tr>") == 2
    assert "<td>when</td><td>3</td><td>0.667</td>" in report.html_table(report.type_rows(result))


def test_answer_carries_the_new_fields_in_its_json_shape():
    data = _short(_answer(["x"], "x [1]"), "x").to_dict()
    assert data["short_answer"] == {"text": "x", "citation": 1, "start": 0, "end": 1}
    assert data["refusal_reason"] is None and data["answer_language"] == data["language"]  # unset: the question's


def test_real_answerer_runs_a_split_with_types(answerer, tmp_path):
    qs = evaluation.load_questions(
        _write(
            tmp_path / "q.jsonl",
            [
                {
                    "id": "a",
                    "lang": "th",
                    "question": "บราซิลยุติการเจรจาอะไร",
                    "answers": ["FTAA"],
                    "split": "test",
                    "evidence": ["บราซิลยุติการเจรจาจัดทำเขตการค้าเสรีแห่งอเมริกา"],
                    "type": "what",
                },
                {
                    "id": "b",
                    "lang": "en",
                    "question": "Who won the 2022 FIFA World Cup?",
                    "answerable": False,
                    "split": "dev",
                },
                {
                    "id": "c",
                    "lang": "en",
                    "question": "Which country's president visited Mars in 2020?",
                    "answerable": False,
                    "split": "test",
                    "near_topic": True,
                },
            ],
        )
    )
    outcomes = evaluation.run(answerer, evaluation.select(qs, "test"))
    assert [o.id for o in outcomes] == ["a", "c"]
    assert outcomes[0].hit_rank == 1 and outcomes[0].answer_ok is True
    result = evaluation.report(outcomes)
    assert list(result["by_type"]) == ["what"] and result["by_type"]["what"]["hit@1"] == 1.0
    assert result["overall"]["near_topic_refusal_recall"] == 1.0


def test_readme_shows_the_splits_side_by_side_from_the_committed_results():
    from assistant import report

    results = [evaluation.load_results(QUESTIONS.parent / name) for name in ("results.json", "results-dev.json")]
    head, rows = report.side_by_side_rows(results)
    assert head == ["metric", "test: previous", "test: now", "dev: previous", "dev: now"]
    hit = next(r for r in rows if r[0] == "hit@1")
    assert hit[2] == f"{results[0]['overall']['hit@1']:.3f}"
    assert hit[1] == f"{results[0]['baseline']['metrics']['overall']['hit@1']['before']:.3f}"
    readme = (QUESTIONS.parent.parent / "README.md").read_text(encoding="utf-8")
    assert report.side_by_side_table(results) in readme  # regenerate with `assistant eval-table` (both files)


# --- Question sets as people write them: forgiving input, CSV, a template; JUnit and the failure table ---


def test_unknown_type_keeps_the_question_untyped_with_one_warning_per_value(tmp_path):
    qs = evaluation.load_questions(
        _write(
            tmp_path / "q.jsonl",
            [
                {"id": "a", "question": "Is MERCOSUR a customs union?", "type": "yes_no"},
                {"id": "b", "question": "Is ALBA older than UNASUR?", "type": "Yes-No"},
                {
                    "id": "c",
                    "question": "Who won the 2022 FIFA World Cup?",
                    "type": "unanswerable",
                    "answerable": False,
                },
                {"id": "d", "question": "How many members?", "type": "How many", "source": "glossary"},
                {"id": "e", "question": "In short?", "type": "overview", "source": "wiki"},
                "{not json",
                {"id": "f"},
            ],
        )
    )
    assert [(q.id, q.type) for q in qs.questions] == [
        ("a", ""),
        ("b", ""),
        ("c", ""),
        ("d", "how_many"),
        ("e", "overview"),
    ]
    assert qs.lines == 7 and not qs.clean
    assert qs.skipped == (
        "line 6: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
        "line 7: missing or empty 'question'",
    )
    assert len(qs.warnings) == 3
    assert qs.warnings[0].startswith("type 'yes_no' is not one of when, who,") and qs.warnings[0].endswith(
        "2 questions kept, untyped (lines 1, 2)"
    )
    assert qs.warnings[1].startswith("type 'unanswerable'") and qs.warnings[1].endswith("(line 3)")
    assert qs.warnings[2].startswith("source 'wiki' is not one of document, notes, glossary")
    assert (
        evaluation.loaded_line("all", 5, qs)
        == "Split: all, 5 of 5 questions from 7 lines (2 lines skipped, 3 warnings)."
    )


def test_unknown_fields_and_repeated_ids_are_warned_about(tmp_path):
    qs = evaluation.load_questions(
        _write(
            tmp_path / "q.jsonl",
            [
                {"id": "a", "question": "ชิลี?", "answer": "ชิลี"},  # a typo of `answers`: nothing would be judged
                {"id": "a", "question": "เปรู?"},
            ],
        )
    )
    assert [q.lang for q in qs.questions] == ["th", "th"]  # no `lang`: from the script
    assert qs.warnings == (
        "field 'answer' is not one of id, lang, question, history, answers, evidence, answerable, source, split, "
        "type, short, near_topic: ignored (line 1)",
        "id 'a' is used again (line 2; first on line 1): results by id mix them",
    )


EQUIVALENT_JSONL = [
    {
        "id": "a",
        "lang": "th",
        "question": "บราซิลยุติการเจรจาอะไร",
        "answers": ["เขตการค้าเสรีแห่งอเมริกา", "FTAA"],
        "evidence": ["บราซิลยุติการเจรจาจัดทำเขตการค้าเสรีแห่งอเมริกา"],
        "type": "what",
        "split": "test",
    },
    {
        "id": "b",
        "lang": "en",
        "question": "Where is LAN Chile's South American hub?",
        "answers": ["Lima", "กรุงลิมา"],
        "short": ["Lima", "กรุงลิมา"],
        "evidence": ["มีศูนย์กลางในอเมริกาใต้อยู่ที่กรุงลิมาของเปรู"],
        "answerable": True,
        "type": "where",
        "source": "document",
    },
    {
        "id": "c",
        "lang": "en",
        "question": "And who led Cuba?",
        "history": [
            {"role": "user", "content": "Who led Venezuela when ALBA was founded?"},
            {"role": "assistant", "content": "President Hugo Chávez."},
        ],
        "answers": ["Castro", "คาสโตร"],
        "evidence": ["คิวบาซึ่งนำโดยฟิเดล คาสโตร (Fidel Castro)"],
        "type": "who",
    },
    {
        "id": "d",
        "lang": "en",
        "question": "What is the population of Mexico?",
        "answerable": False,
        "near_topic": True,
        "source": "none",
    },
]
# The same four questions as a spreadsheet saves them: a BOM, `|` between answers, the history as JSON
# in its cell (quoted, with its quotes doubled), yes/no and 1/0 booleans, empty cells, CRLF line ends.
EQUIVALENT_CSV = (
    "\ufeffID,Lang,Question,Answers,Evidence,Short,Answerable,Near_topic,Type,Split,Source,History\r\n"
    "a,th,บราซิลยุติการเจรจาอะไร,เขตการค้าเสรีแห่งอเมริกา|FTAA,บราซิลยุติการเจรจาจัดทำเขตการค้าเสรีแห่งอเมริกา,,,,what,test,,\r\n"
    "b,en,Where is LAN Chile's South American hub?,Lima | กรุงลิมา,มีศูนย์กลางในอเมริกาใต้อยู่ที่กรุงลิมาของเปรู,"
    "Lima | กรุงลิมา,yes,,where,,document,\r\n"
    'c,en,And who led Cuba?,Castro | คาสโตร,คิวบาซึ่งนำโดยฟิเดล คาสโตร (Fidel Castro),,1,0,WHO,,,"[{""role"": ""user"", '
    '""content"": ""Who led Venezuela when ALBA was founded?""}, {""role"": ""assistant"", ""content"": '
    '""President Hugo Chávez.""}]"\r\n'
    ",,,,,,,,,,,\r\n"
    "d,en,What is the population of Mexico?,,,,no,TRUE,,,none,\r\n"
)


def test_csv_with_bom_and_bars_gives_the_same_metrics_as_json_lines(answerer, tmp_path):
    (tmp_path / "q.csv").write_bytes(EQUIVALENT_CSV.encode("utf-8"))
    from_csv = evaluation.load_questions(tmp_path / "q.csv")
    from_jsonl = evaluation.load_questions(_write(tmp_path / "q.jsonl", EQUIVALENT_JSONL))
    assert from_csv.clean and from_jsonl.clean and from_csv.lines == 4
    assert from_csv.questions == from_jsonl.questions
    results = [evaluation.report(evaluation.run(answerer, qs)) for qs in (from_csv, from_jsonl)]
    for result in results:
        for values in (result["overall"], *result["by_lang"].values()):
            del values["latency_p50_ms"], values["latency_p95_ms"]
        for values in result["by_type"].values():
            del values["latency_p50_ms"], values["latency_p95_ms"]
    assert results[0] == results[1]
    assert results[0]["overall"]["hit@1"] == 1.0 and results[0]["overall"]["refusal_recall"] == 1.0
    assert list(results[0]["by_type"]) == ["who", "where", "what"]
    # --format csv reads a file whatever its name
    (tmp_path / "sheet.txt").write_bytes(EQUIVALENT_CSV.encode("utf-8"))
    assert evaluation.load_questions(tmp_path / "sheet.txt", "csv").questions == from_jsonl.questions


@pytest.mark.parametrize(
    "text, ids, skipped",
    [
        ("id;question;answers\n1;Chile?;ชิลี|Chile\n", ["1"], []),  # a semicolon locale's spreadsheet
        ("id\tquestion\n1\tChile?\n", ["1"], []),
        (
            'id,question,answerable\n1,"two\nlines",maybe\n2,ok?,no\n',
            ["2"],
            ["line 2: 'answerable' must be true or false (or yes/no, 1/0), not 'maybe'"],
        ),
        ("id,question\n1,\n2,ok?\n", ["2"], ["line 2: missing or empty 'question'"]),
        ("id,question,history\n1,ok?,not json\n", [], ["line 2: 'history' must be JSON in its cell"]),
        ('id,question,answers\n1,ok?,"[""a|b""]"\n', ["1"], []),  # a JSON list holds a literal |
        ("id,question\n1,ok?,extra\n", [], ["line 2: 3 cells but the header names 2 columns"]),
    ],
)
def test_csv_cells_and_malformed_rows(tmp_path, text, ids, skipped):
    qs = evaluation.load_questions(_write(tmp_path / "q.csv", [text]))
    assert [q.id for q in qs.questions] == ids
    assert len(qs.skipped) == len(skipped)
    assert all(got.startswith(want) for got, want in zip(qs.skipped, skipped))
    if "a|b" in text:
        assert qs.questions[0].answers == ("a|b",)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("q.csv", "question,answers\nChile?,ชิลี\n", "the header names no 'id' column"),
        ("q.csv", "ไอดี,คำถาม\n", "no 'id' or 'question' column"),
        ("q.csv", "id,question\n1,ชิลี?\n".encode("cp874"), 'save it as UTF-8 (in a spreadsheet: "CSV UTF-8")'),
        ("q.jsonl", "ชิลี".encode("cp874"), "is not UTF-8 text"),
        ("q.csv", 'id,question\n1,"' + "a" * 140_000 + '"\n', "line 2: field larger than field limit"),
    ],
)
def test_unreadable_question_files_say_what_to_do(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    with pytest.raises(AssistantError, match=re.escape(message)):
        evaluation.load_questions(path)


def test_templates_are_the_same_questions_and_pass_on_the_corpus(answerer, tmp_path):
    csv_text, jsonl_text = evaluation.template("csv"), evaluation.template("jsonl")
    assert csv_text.splitlines()[0] == ",".join(evaluation.TEMPLATE_FIELDS)
    assert set(evaluation.TEMPLATE_FIELDS) == set(evaluation.FIELDS)
    assert len(csv_text.splitlines()) == 4 and len(jsonl_text.splitlines()) == 3
    from_csv = evaluation.load_questions(_write(tmp_path / "t.csv", [csv_text]))
    from_jsonl = evaluation.load_questions(_write(tmp_path / "t.jsonl", [jsonl_text]))
    assert from_csv.clean and from_csv.questions == from_jsonl.questions
    assert [(q.lang, q.answerable) for q in from_csv.questions] == [("th", True), ("en", True), ("en", False)]
    outcomes = evaluation.run(answerer, from_csv)
    assert evaluation.failed(from_csv, outcomes) == []  # examples that pass: a user's first run is green


def _judged():
    """Four questions with fixed answers: a passes, b answers wrongly, c refuses an answerable question,
    d answers an unanswerable one with a short answer."""
    qs = evaluation.QuestionSet(
        (
            evaluation.Question("a", "th", "บราซิลยุติการเจรจาอะไร", answers=("FTAA",), evidence=("FTAA",), type="what"),
            evaluation.Question(
                "b", "en", "Where | is the hub? " + "x" * 80, answers=("Lima",), evidence=("ลิมา",), split="test"
            ),
            evaluation.Question("c", "en", "Which party?", answers=("Workers",), evidence=("แรงงาน",), type="which"),
            evaluation.Question("d", "en", "Population of Mexico?", answerable=False, type="how_many"),
        ),
        skipped=("line 5: missing or empty 'question'",),
        warnings=("type 'yes_no' is not one of when: 1 question kept, untyped (line 6)",),
        lines=6,
    )
    answers = [
        _answer(["FTAA"], "FTAA [1]", cited=["FTAA"]),
        _answer(["x", "ลิมา"], "Santiago, a long answer " + "y" * 80 + " [1]", cited=["x"]),
        _answer(["แรงงาน"], "The documents do not say.", refused=True),
        _short(_answer(["x"], "About 126 million [1]"), "126 million"),
    ]
    return qs, [evaluation.judge(q, a, 20.0 + i) for i, (q, a) in enumerate(zip(qs.questions, answers))]


def test_failures_name_each_failed_check():
    qs, outcomes = _judged()
    failed = evaluation.failed(qs, outcomes)
    assert [(q.id, [f.check for f in checks]) for q, _, checks in failed] == [
        ("b", ["answer_ok", "hit@1"]),
        ("c", ["answer_ok", "refusal"]),
        ("d", ["refusal", "short_answer"]),
    ]
    b = failed[0][2]
    assert b[0].expected == "an answer holding one of: Lima" and b[0].answered.startswith("Santiago")
    assert b[1].answered == "at rank 2; the first passage was d#0"
    assert failed[1][2][1].answered == "not_found: The documents do not say."
    assert failed[2][2][1] == evaluation.Failure("short_answer", "no short answer (unanswerable)", "126 million")


def test_failure_table_lists_exactly_the_failed_questions():
    qs, outcomes = _judged()
    table = report.failure_table(qs, outcomes, limit=20)
    lines = table.splitlines()
    assert lines[0] == "Failed questions: 3 of 4."
    assert lines[2] == "| id | lang | failed | question | answer |"
    assert lines[3] == "|---|---|---|---|---|"
    rows = [line.split(" | ")[0].removeprefix("| ") for line in lines[4:]]
    assert rows == ["b", "c", "d"]
    assert lines[4] == (
        "| b | en | answer_ok, hit@1 | Where \\| is the hub? "
        + "x" * 40
        + "… | Santiago, a long answer "
        + "y" * 36
        + "… |"
    )
    assert "| c | en | answer_ok, refusal | Which party? | not_found: The documents do not say. |" in table
    assert report.failure_table(qs, outcomes, limit=2).splitlines()[0] == "Failed questions: 3 of 4, the first 2 shown."
    assert len(report.failure_table(qs, outcomes, limit=2).splitlines()) == 6
    assert report.failure_table(qs, outcomes, limit=0) == ""
    assert report.failure_table(evaluation.QuestionSet(qs.questions[:1]), outcomes[:1]) == ""  # none failed


def test_junit_has_a_test_case_per_question_and_a_failure_per_failed_question(tmp_path):
    qs, outcomes = _judged()
    path = tmp_path / "junit.xml"
    report.write_junit(path, qs, outcomes, name="q.csv", split="all")
    root = ElementTree.parse(path).getroot()
    assert root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == [
        "a: บราซิลยุติการเจรจาอะไร",
        "b: Where | is the hub? " + "x" * 80,
        "c: Which party?",
        "d: Population of Mexico?",
        "line 5",
    ]
    assert [c.get("classname") for c in cases] == [
        "unsplit.what",
        "test.untyped",
        "unsplit.which",
        "unsplit.how_many",
        "malformed",
    ]
    failing = [c.get("name").split(":")[0] for c in cases if c.find("failure") is not None]
    skipped = [c.get("name") for c in cases if c.find("skipped") is not None]
    assert failing == ["b", "c", "d"] and skipped == ["line 5"]
    for element in (suite, root):  # the counts agree with the test cases
        assert element.get("tests") == str(len(cases)) == "5"
        assert element.get("failures") == str(len(failing)) and element.get("skipped") == "1"
        assert element.get("errors") == "0"
        assert float(element.get("time")) == pytest.approx(sum(float(c.get("time")) for c in cases), abs=0.002)
    assert all(len(c.findall("failure")) <= 1 for c in cases)
    failure = cases[1].find("failure")
    assert failure.get("message") == "failed: answer_ok, hit@1" and failure.get("type") == "answer_ok"
    assert failure.text.startswith("answer_ok\n  expected: an answer holding one of: Lima\n  answered: Santiago")
    assert "hit@1\n  expected: the first passage holding one of: ลิมา\n  answered: at rank 2" in failure.text
    assert cases[4].find("skipped").get("message") == "missing or empty 'question'"
    assert suite.find("system-err").text.startswith("type 'yes_no'")
    assert suite.find("properties/property[@name='split']").get("value") == "all"
    assert cases[0].find("system-out").text.startswith("answer: FTAA [1]")
