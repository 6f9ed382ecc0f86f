"""English renderings: aligned to the chunker's sentences, checked, and used for English answers."""

import re

import numpy as np
import pytest
from helpers import cited

from assistant import chunking, corpus, index, translation
from assistant.thai import has_thai

BE_OFFSET = 543  # Buddhist era = common era + 543


@pytest.fixture(scope="module")
def documents(config):
    return {d.doc_id: d for d in corpus.load(config.corpus_dir).documents}


@pytest.fixture(scope="module")
def renderings(config, documents):
    found, problems = translation.load(config.corpus_dir, documents.values())
    assert problems == ()
    return found


def test_every_document_but_the_glossary_has_a_rendering(documents, renderings):
    assert set(renderings) == {d for d, doc in documents.items() if not doc.is_glossary}


def test_one_english_sentence_for_every_sentence_the_chunker_cuts(documents, renderings, config):
    for chunk in chunking.split(documents.values(), index.chunk_params(config)):
        if documents[chunk.doc_id].is_glossary:
            continue  # bilingual already: its rows give the English names
        rendering = renderings[chunk.doc_id]
        assert translation.coverage(rendering, chunk.sentences) == [], chunk.chunk_id
    for doc_id, rendering in renderings.items():
        spans = [
            s
            for a, b in chunking.paragraphs(documents[doc_id])
            for s in chunking.sentences(documents[doc_id], a, b, config.chunk_max_chars)
        ]
        assert sorted(rendering.sentences) == spans  # exactly one each, nothing extra


def test_renderings_are_english_and_keep_every_number(documents, renderings):
    for doc_id, rendering in renderings.items():
        text = documents[doc_id].text
        for (a, b), english in rendering.sentences.items():
            assert not has_thai(english), (doc_id, english)
            accepted = set(re.findall(r"\d+", english.replace(",", "")))
            accepted |= {str(int(n) + BE_OFFSET) for n in accepted}
            for number in re.findall(r"\d+", text[a:b].replace(",", "")):
                assert number in accepted or str(int(number) * 1000) in accepted, (doc_id, text[a:b], english)


def test_a_changed_source_makes_its_rendering_stale(corpus_copy):
    path = corpus_copy / "alba.md"
    path.write_text(path.read_text(encoding="utf-8") + "\nย่อหน้าใหม่ที่ยังไม่มีคำแปล\n", encoding="utf-8")
    documents = corpus.load(corpus_copy).documents
    found, problems = translation.load(corpus_copy, documents)
    assert "alba" not in found and "andean-community" in found
    assert [str(p) for p in problems] == [
        "alba.en.yaml: stale English rendering: alba.md changed since it was written; update the sentences "
        "and `source_sha256`, it is not used until then"
    ]


@pytest.mark.parametrize(
    "damage, message",
    [
        ("sentences: [", "unreadable English rendering"),
        ("source_sha256: x\nsentences: []\n", "stale English rendering"),
    ],
)
def test_broken_rendering_is_reported_by_name(corpus_copy, damage, message):
    (corpus_copy / "unasur.en.yaml").write_text(damage, encoding="utf-8")
    found, problems = translation.load(corpus_copy, corpus.load(corpus_copy).documents)
    assert "unasur" not in found and message in str(problems[0]) and str(problems[0]).startswith("unasur.en.yaml")


# English question, English words the answer must hold, Thai text the cited sentence must hold.
ENGLISH = [
    ("Where does LAN Chile have its South American hub?", "Lima", "กรุงลิมา"),
    ("What did Brazil stop negotiating?", "Free-Trade Area of the Americas", "เขตการค้าเสรีแห่งอเมริกา"),
    ("Which Peruvian company owns Chile's largest cement company?", "Brescia", "Brescia"),
    ("What does the Colombian company ISA do in Peru?", "ISA", "ISA"),
    ("How far is Bogotá from Santiago?", "4,000", "4 พันกิโลเมตร"),
    ("Which country lies between Colombia and Peru?", "Ecuador", "เอกวาดอร์"),
    ("Which party is Peru's current president close to?", "Workers", "พรรคแรงงานของบราซิล"),
    ("How many countries founded MERCOSUR?", "4 countries", "4 ประเทศ"),
    ("Which treaty founded MERCOSUR?", "Asunción", "อาซุนซิออน"),
    ("When was UNASUR's Constitutive Treaty signed?", "2008", "2008"),
    ("Which countries are members of the Pacific Alliance?", "Mexico", "เม็กซิโก"),
    ("What does Peru take Chile to the international court over?", "maritime", "อาณาเขตทางทะเล"),
    ("Which country withdrew from ALBA in 2018?", "Ecuador", "เอกวาดอร์"),
]


@pytest.mark.parametrize("question, english, thai", ENGLISH)
def test_english_question_gets_an_english_answer_citing_the_thai(answerer, question, english, thai):
    answer = answerer.answer(question)
    assert not answer.refused and answer.answer_language == "en"
    assert english in answer.answer and not has_thai(answer.answer), answer.answer
    assert any(thai in c.sentence for c in answer.citations), [c.sentence for c in answer.citations]
    for c in answer.citations:
        assert c.translation["lang"] == "en" and cited(answer.answer, c.translation["sentence"], c.n), answer.answer
        assert c.translation["sentence"] in c.translation["text"]


def test_thai_question_gets_thai_and_the_choice_overrides(answerer):
    thai = answerer.answer("บราซิลยุติการเจรจาอะไร")
    assert thai.answer_language == "th" and "เขตการค้าเสรีแห่งอเมริกา" in thai.answer
    english = answerer.answer("บราซิลยุติการเจรจาอะไร", answer_language="en")
    assert english.answer_language == "en" and not has_thai(english.answer) and "FTAA" in english.answer
    assert [c.sentence for c in english.citations] == [c.sentence for c in thai.citations]
    back = answerer.answer("What did Brazil stop negotiating?", answer_language="th")
    assert back.answer_language == "th" and "เขตการค้าเสรีแห่งอเมริกา" in back.answer


def test_document_without_rendering_is_quoted_in_thai_with_a_note(config, embed_model, corpus_copy, tmp_path):
    from assistant.answering import PHRASES, Answerer
    from assistant.retrieval import Retriever

    (corpus_copy / "volcano.md").write_text(
        "---\ntitle: ภูเขาไฟ\n---\nภูเขาไฟโอฮอสเดลซาลาโดเป็นภูเขาไฟที่สูงที่สุดในโลก ตั้งอยู่บนพรมแดนชิลีกับอาร์เจนตินา\n",
        encoding="utf-8",
    )
    own = config.with_(corpus_dir=corpus_copy, index_dir=tmp_path / "index")
    loaded = index.build(own, embed_model, progress=False)
    answer = Answerer(Retriever(loaded), own).answer("What is ภูเขาไฟโอฮอสเดลซาลาโด?", answer_language="en")
    assert answer.answer.startswith(PHRASES["en"]["untranslated"]) and "ภูเขาไฟโอฮอสเดลซาลาโด" in answer.answer
    assert answer.citations[0].translation is None
    # English sentence vectors are kept for rendered sentences only; an unrendered one scores by its Thai.
    english = loaded.english
    rendered = sum(len(r.sentences) for r in english.renderings.values())
    assert len(english.sentence_vectors) <= rendered < loaded.manifest["sentences"]
    volcano = next(c for c in loaded.chunks if c.doc_id == "volcano")
    assert (english.sentence_rows[list(volcano.sentence_rows)] == -1).all()
    vector = np.asarray(loaded.embed_model.get_query_embedding("volcano"), dtype=np.float32)
    np.testing.assert_array_equal(
        loaded.sentence_scores(volcano, vector, "en"), loaded.sentence_scores(volcano, vector, "th")
    )
    # The name is in the sentence before the one with the country: a typed sentence may lean on it.
    border = Answerer(Retriever(loaded), own).answer("ภูเขาไฟโอฮอสเดลซาลาโดอยู่บนพรมแดนของประเทศใด")
    assert not border.refused, border.refusal_reason
    assert "ชิลี" in border.answer
