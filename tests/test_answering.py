import pytest

from assistant.answering import PHRASES, is_follow_up, retrieval_query, validate
from assistant.errors import InvalidQuestionError
from assistant.types import Turn

ANSWERABLE = [
    ("บริษัท Brescia ของเปรูเป็นเจ้าของอะไร", "บริษัทปูนซีเมนต์ที่ใหญ่ที่สุดในชิลี"),
    ("ประเทศใดตั้งอยู่ระหว่างโคลอมเบียกับเปรู", "เอกวาดอร์"),
    ("ความสัมพันธ์ระหว่างชิลีกับเปรูเป็นผลมาจากสงครามใด", "สงครามแปซิฟิก"),
    ("Which party is Peru's current president close to?", "พรรคแรงงานของบราซิล"),
    ("How far is Bogotá from Santiago?", "4 พันกิโลเมตร"),
    ("MERCOSUR ก่อตั้งขึ้นโดยสนธิสัญญาใด", "อาซุนซิออน"),
]
UNANSWERABLE = ["สูตรต้มยำกุ้งมีอะไรบ้าง", "ใครเป็นเลขาธิการสหประชาชาติคนปัจจุบัน",
                "What is the capital of Thailand?", "Who won the 2022 FIFA World Cup?"]


@pytest.mark.parametrize("question, expected", ANSWERABLE)
def test_answer_quotes_the_source_and_cites_it(answerer, built_index, question, expected):
    answer = answerer.answer(question)
    assert not answer.refused
    assert expected in answer.answer
    assert "[1]" in answer.answer
    texts = {c.chunk_id: c.text for c in built_index.chunks}
    for c in answer.citations:
        assert texts[c.chunk_id] == c.text
        assert c.start <= c.sentence_start < c.sentence_end <= c.end
        sentence = c.text[c.sentence_start - c.start:c.sentence_end - c.start]
        assert sentence == c.sentence
        assert f"{sentence} [{c.n}]" in answer.answer
    assert any(expected in c.text for c in answer.citations)


@pytest.mark.parametrize("question", UNANSWERABLE)
def test_unanswerable_questions_are_refused(answerer, question):
    answer = answerer.answer(question)
    assert answer.refused and answer.citations == ()
    assert answer.answer == PHRASES[answer.language]["refusal"]


def test_refusal_speaks_the_question_language(answerer):
    assert answerer.answer("สูตรต้มยำกุ้งมีอะไรบ้าง").answer == "ไม่พบข้อมูลนี้ในเอกสาร"
    assert answerer.answer("Who won the 2022 FIFA World Cup?").answer == "The documents do not contain this."


def test_every_sentence_of_an_answer_carries_a_marker(answerer):
    answer = answerer.answer("ประธานาธิบดี Humala กล่าวว่าอย่างไรเกี่ยวกับการรวมตัว")
    markers = [f"[{c.n}]" for c in answer.citations]
    assert answer.answer.endswith(markers[-1])
    assert [c.n for c in answer.citations] == list(range(1, len(markers) + 1))


@pytest.mark.parametrize("history, question, expected", [
    ([("user", "บริษัท Brescia มาจากประเทศใด"), ("assistant", "เปรู")], "และบริษัทนี้เป็นเจ้าของอะไร",
     "บริษัทปูนซีเมนต์"),
    ([("user", "What did President Humala of Peru say?"), ("assistant", "…")], "Which party is he close to?",
     "พรรคแรงงานของบราซิล"),
    ([("user", "What is ISA?"), ("assistant", "…")], "What does it manage in Peru?", "ระบบไฟฟ้า"),
])
def test_follow_up_uses_the_conversation(answerer, history, question, expected):
    turns = [Turn(r, c) for r, c in history]
    followed = answerer.answer(question, turns)
    assert followed.retrieval_query.startswith(history[0][1])
    assert expected in followed.answer


def test_follow_up_without_history_cannot_answer(answerer):
    alone = answerer.answer("และบริษัทนี้เป็นเจ้าของอะไร")
    assert alone.refused or "บริษัทปูนซีเมนต์" not in alone.answer


def test_follow_up_detection():
    assert is_follow_up("และบริษัทนี้เป็นเจ้าของอะไร")
    assert is_follow_up("Which party is he close to?")
    assert not is_follow_up("บราซิลยุติการเจรจาอะไร")
    assert retrieval_query("What about Chile?", [Turn("user", "Who joined APEC?")]) == "Who joined APEC? What about Chile?"
    assert retrieval_query("บราซิลยุติการเจรจาอะไร", [Turn("user", "x")]) == "บราซิลยุติการเจรจาอะไร"


@pytest.mark.parametrize("question, message", [
    ("", "empty"),
    ("   \n\t ", "empty"),
    ("ก" * 2001, "limit is 2,000"),
    ("ชิลี\x00เปรู", "control characters"),
    ("what\x1b[31m", "control characters"),
    (None, "must be text"),
])
def test_bad_questions_get_clear_errors(answerer, question, message):
    with pytest.raises(InvalidQuestionError, match=message):
        answerer.answer(question)
    with pytest.raises(InvalidQuestionError):
        validate(question)


def test_json_shape(answerer):
    data = answerer.answer("บราซิลยุติการเจรจาอะไร").to_dict()
    assert set(data) >= {"question", "answer", "refused", "citations", "timings_ms"}
    assert set(data["citations"][0]) == {"n", "chunk_id", "source", "title", "text", "start", "end",
                                         "sentence_start", "sentence_end", "score"}
    assert data["timings_ms"]["total"] > 0
