"""The answer decision: the shipped model, its training (deterministic, scored as trained), its fallback."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest

from assistant import decision, evaluation
from assistant.answering import PHRASES, Answerer
from assistant.chat import render
from assistant.index import FORMAT_VERSION
from assistant.retrieval import Retriever

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = ROOT / "eval" / "questions.jsonl"


@pytest.fixture(scope="module")
def dev():
    return evaluation.select(evaluation.load_questions(QUESTIONS), "dev")


@pytest.fixture(scope="module")
def examples(answerer, dev):
    """Drafts of 120 dev questions, answerable and not, in both languages."""
    return evaluation.decision_examples(answerer, replace(dev, questions=dev.questions[:120]))


def test_the_shipped_model_fits_this_index_and_was_trained_on_the_current_dev_split(answerer, dev, built_index, config):
    assert answerer.decision_model is not None, answerer.decision_problem
    shipped = json.loads(config.decision_model.read_text(encoding="utf-8"))
    lines = [json.dumps(asdict(q), ensure_ascii=False, sort_keys=True) for q in dev.questions]
    assert shipped["data_sha256"] == decision.data_hash(lines), "dev changed: run `assistant train-decision`"
    assert shipped["index_format"] == FORMAT_VERSION
    assert shipped["embedding_model"] == built_index.manifest["embed_model"]
    assert shipped["features"] == list(decision.FEATURES)
    assert 0 < shipped["thresholds"]["uncertain"] < shipped["thresholds"]["answered"] < 1


def test_training_is_deterministic_and_scoring_matches_the_training_code(examples):
    first = decision.train(examples, "hash", FORMAT_VERSION, "model")
    assert first == decision.train(examples, "hash", FORMAT_VERSION, "model")
    model = decision.Model.from_json(first)
    # The run-time scorer (numpy) against scikit-learn's fitted model on the same rows.
    x = np.array([decision.vector(e.evidence) for e in examples])
    mean, scale, fitted = decision._fit(x, np.array([e.label for e in examples]))
    expected = fitted.predict_proba((x - mean) / scale)[:, 1]
    scored = np.array([model.probability(e.evidence) for e in examples])
    assert np.allclose(scored, expected, atol=1e-6)
    reliability = first["metrics"]["dev_out_of_fold"]["reliability"]
    assert sum(row["n"] for row in reliability) == len(examples)


def test_labels_say_whether_the_shown_quote_holds_an_accepted_answer(examples):
    assert all(not e.label for e in examples if not e.answerable)
    assert 0.5 < np.mean([e.label for e in examples if e.answerable]) <= 1.0


@pytest.mark.parametrize(
    "question, status",
    [
        ("Where is the Andean Community's secretariat?", "answered"),
        ("ALBA ก่อตั้งขึ้นที่เมืองไหน", "answered"),
        ("Who won the 2022 FIFA World Cup?", "not_found"),
    ],
)
def test_the_outcome_and_its_confidence(answerer, question, status):
    answer = answerer.answer(question)
    assert answer.status == status and 0.0 <= answer.confidence <= 1.0
    data = answer.to_dict()
    assert data["status"] == status and data["refused"] == (status == "not_found")
    if status == "answered":
        assert answer.citations and answer.refusal_reason is None and answer.confidence >= 0.5
    else:
        assert not answer.citations and answer.suggestions and "confidence" in answer.refusal_reason


def test_an_uncertain_reply_shows_its_closest_quotes_under_a_caveat_without_a_short_answer(answerer):
    """Chile's withdrawal is in a sentence about Venezuela joining and leaving: the model is not sure."""
    answer = answerer.answer("When did Chile leave the Andean Community?")
    assert answer.status == "uncertain", answer.confidence
    assert answer.answer.startswith(PHRASES["en"]["uncertain"]) and "1976" in answer.answer
    assert answer.citations and answer.short_answer is None and not answer.refused


@pytest.mark.parametrize(
    "question, opening",
    [
        ("Tell me about ALBA", "ALBA (Spanish: Alianza Bolivariana"),
        ("เล่าเรื่อง ALBA ให้ฟังหน่อย", "ALBA (ภาษาสเปน Alianza Bolivariana"),
        ("UNASUR คืออะไร", "UNASUR"),
        ("What is the Andean Community?", "The Andean Community"),
    ],
)
def test_an_overview_question_quotes_the_opening_of_the_note_about_it(answerer, question, opening):
    answer = answerer.answer(question)
    assert answer.status == "answered" and answer.answer.startswith(opening), answer.answer
    assert answer.citations[0].sentence_start == 0


def test_a_not_found_reply_suggests_questions_the_documents_answer(answerer):
    answer = answerer.answer("What is the best pizza in Naples?")
    assert answer.status == "not_found" and 2 <= len(answer.suggestions) <= 3
    assert render(answer).endswith("\n".join([PHRASES["en"]["suggest"]] + [f"  - {s}" for s in answer.suggestions]))
    for suggestion in answer.suggestions:
        assert answerer.answer(suggestion).status == "answered", suggestion


def test_without_a_usable_model_every_reply_is_uncertain_or_not_found(built_index, config, tmp_path):
    stale = json.loads(config.decision_model.read_text(encoding="utf-8"))
    stale["index_format"] = FORMAT_VERSION - 1
    (tmp_path / "stale.json").write_text(json.dumps(stale), encoding="utf-8")
    for path, problem in [(tmp_path / "stale.json", "retrain"), (tmp_path / "missing.json", "no answer-decision")]:
        answerer = Answerer(Retriever(built_index), replace(config, decision_model=path))
        assert answerer.decision_model is None and problem in answerer.decision_problem
        known = answerer.answer("When was the Treaty of Asunción signed?")
        assert known.status == "uncertain" and known.confidence is None and known.citations
        assert answerer.answer("Who won the 2022 FIFA World Cup?").status == "not_found"


def test_a_fact_only_the_glossary_states_is_shown_from_its_row(answerer):
    answer = answerer.answer("ซานโตสดำรงตำแหน่งช่วงปีไหน")
    assert answer.status != "not_found" and "2010-2018" in answer.answer
    assert answer.citations[0].source == "glossary.md"


@pytest.mark.parametrize(
    "question, forms",
    [
        ("What is Santos's full name?", "Juan Manuel Santos"),
        ("How do you write Guyana in Thai?", "กายอานา"),
        ("What does APEC stand for?", "Asia-Pacific Economic Cooperation"),
        ("Humala ภาษาไทยเขียนว่าอะไร", "อูมาลา"),
    ],
)
def test_a_question_about_a_names_forms_quotes_its_glossary_row(answerer, question, forms):
    answer = answerer.answer(question)
    assert answer.status == "answered" and forms in answer.answer, answer.answer
    assert [c.source for c in answer.citations] == ["glossary.md"]
    assert not answer.answer.startswith(PHRASES["en"]["untranslated"])  # the row gives its English itself


@pytest.mark.parametrize("question", ["Who was Hugo Chávez?", "อูโก ชาเวซเป็นใคร", "What is LAN Chile?"])
def test_an_overview_of_a_name_without_a_note_quotes_its_row_and_a_passage_naming_it(answerer, question):
    answer = answerer.answer(question)
    assert answer.status == "answered" and len(answer.citations) == 2, answer.answer
    row, passage = answer.citations
    assert row.source == "glossary.md" and passage.source != "glossary.md"
    name = row.sentence.split(" | ")[1].split(",")[0]
    assert name in passage.sentence or name in (passage.translation or {}).get("sentence", ""), passage


def test_a_row_whose_note_names_the_country_asked_about_answers_for_it(answerer):
    answer = answerer.answer("เมืองหลวงของปารากวัยชื่ออะไร")
    assert answer.status != "not_found" and "อาซุนซิออน" in answer.answer
    assert answer.citations[0].source == "glossary.md"


def test_a_not_found_reply_far_from_every_organisation_still_suggests_questions(answerer):
    answer = answerer.answer("สูตรต้มยำกุ้งมีอะไรบ้าง")
    assert answer.status == "not_found" and 2 <= len(answer.suggestions) <= 3
    assert all(s.endswith("คืออะไร") for s in answer.suggestions)
