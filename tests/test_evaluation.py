import json
from pathlib import Path

import pytest

from assistant import corpus, evaluation
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


def _answer(passages, answer="", refused=False, cited=()):
    hits = tuple(Hit(_chunk(p, i), 1.0 / (i + 1), 0.9, i, None) for i, p in enumerate(passages))
    citations = tuple(Citation(n, f"d#{n}", "d.txt", "D", t, 0, len(t), 0, len(t), 0.9)
                      for n, t in enumerate(cited, start=1))
    return Answer("q", answer, refused, citations, "th", "q", hits)


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
    path.write_text("\n".join([
        json.dumps({"id": "ok", "lang": "th", "question": "ชิลี?", "answers": ["ชิลี"], "evidence": ["ชิลี"],
                    "extra": "ignored"}),
        "{not json",
        json.dumps({"id": "no-question"}),
        json.dumps({"id": "bad", "question": "x", "answers": "not a list"}),
        json.dumps(["a", "list"]),
        "",
    ]), encoding="utf-8")
    qs = evaluation.load_questions(path)
    assert [q.id for q in qs.questions] == ["ok"]
    assert len(qs.skipped) == 4
    assert qs.skipped[0].startswith("line 2:")


def test_project_evaluation_quality_holds(answerer):
    """The numbers the README reports, as a floor: a retrieval change that loses quality fails here."""
    outcomes = evaluation.run(answerer, evaluation.load_questions(QUESTIONS))
    result = evaluation.report(outcomes)
    overall, th, en = result["overall"], result["by_lang"]["th"], result["by_lang"]["en"]
    assert overall["hit@3"] >= 0.95
    assert th["hit@1"] >= 0.85 and en["hit@1"] >= 0.65
    assert overall["answer_match"] >= 0.75
    assert overall["refusal_recall"] >= 0.85 and overall["refusal_precision"] >= 0.8
