import csv
import json
import re
import time
from dataclasses import replace
from pathlib import Path

import pytest

from assistant import corpus, evaluation, report
from assistant.errors import AssistantError
from assistant.types import Answer, Chunk, Citation, Hit

QUESTIONS = Path(__file__).resolve().parent.parent / "eval" / "questions.jsonl"


def test_project_question_set_is_well_formed(config):
    qs = evaluation.load_questions(QUESTIONS)
    assert qs.skipped == ()
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
        ({"type": "whom"}, "'type' must be one of when, who, where"),
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
