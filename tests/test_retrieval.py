import pytest

from assistant.evaluation import hit_rank
from assistant.retrieval import Retriever

# (question, verbatim text the right passage holds, the worst rank it may have)
CASES = [
    ("บราซิลยุติการเจรจาอะไร", "บราซิลยุติการเจรจาจัดทำเขตการค้าเสรีแห่งอเมริกา", 1),
    ("เวเนซุเอลาสนับสนุนการจัดตั้งองค์กรความร่วมมือใด", "ที่เรียกว่า ALBA(4) ร่วมกับคิวบา", 1),
    ("ประเทศใดต้องการเข้าร่วมเป็นสมาชิกเอเปค", "ซึ่งโคลอมเบียต้องการเข้าร่วมเป็นสมาชิก", 1),
    ("บริษัท Brescia ของเปรูเป็นเจ้าของอะไร", "เป็นเจ้าของบริษัทปูนซีเมนต์ที่ใหญ่ที่สุดในชิลี", 1),
    ("กรุงโบโกตาอยู่ห่างจากกรุงซานติอาโกเท่าไร", "กว่า 4 พันกิโลเมตร", 1),
    ("MERCOSUR ก่อตั้งขึ้นโดยสนธิสัญญาใด", "สนธิสัญญาอาซุนซิออน (Treaty of Asunción)", 1),
    ("ปฏิญญาลิมาของพันธมิตรแปซิฟิกลงนามเมื่อใด", "28 เมษายน ค.ศ. 2011", 1),
    ("What did Brazil stop negotiating?", "บราซิลยุติการเจรจาจัดทำเขตการค้าเสรีแห่งอเมริกา", 1),
    ("Where is LAN Chile's South American hub?", "อยู่ที่กรุงลิมาของเปรู", 1),
    ("Which Peruvian company owns the largest cement company in Chile?", "บริษัท Brescia ของเปรู", 1),
    ("Which party is Peru's current president close to?", "พรรคแรงงานของบราซิล", 1),
    ("Which country lies between Colombia and Peru?", "เอกวาดอร์มีที่ตั้งอยู่ระหว่างโคลอมเบียกับเปรู", 3),
    ("When was MERCOSUR founded?", "26 มีนาคม ค.ศ. 1991", 3),
    ("Which countries founded ALBA?", "ประเทศผู้ก่อตั้ง ALBA คือเวเนซุเอลาและคิวบา", 3),
]


@pytest.mark.parametrize("question, evidence, worst", CASES, ids=[c[0][:30] for c in CASES])
def test_expected_passage_ranks_high(built_index, question, evidence, worst):
    hits = Retriever(built_index).search(question, top_k=5)
    rank = hit_rank([h.chunk.text for h in hits], [evidence])
    assert rank is not None and rank <= worst, [h.chunk.chunk_id for h in hits]


def test_hits_carry_scores_and_chunks(built_index):
    hits = Retriever(built_index).search("ชิลีและเปรูมี FTA กับประเทศใด", top_k=4)
    assert len(hits) == 4
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert all(0 < h.dense_score <= 1 for h in hits)
    assert all(h.chunk.text for h in hits)


def test_top_k_is_respected(built_index):
    assert len(Retriever(built_index).search("ชิลี", top_k=2)) == 2
    # Every passage, the glossary's rows among them (found by dense search only).
    assert len(Retriever(built_index).search("ชิลี", top_k=200)) == len(built_index.chunks)


def test_the_glossary_rows_of_the_names_a_question_asks_about(built_index):
    rows = Retriever(built_index).glossary_rows("ซานโตสดำรงตำแหน่งช่วงปีไหน")
    assert [h.chunk.text.split(" | ")[1] for h in rows] == ["Juan Manuel Santos, Santos"]
    # Brazil's own row first, then the rows whose note names Brazil (its capital's).
    brazil = [h.chunk.text for h in Retriever(built_index).glossary_rows("บราซิลยุติการเจรจาอะไร")]
    assert brazil[0] == "บราซิล | Brazil | ประเทศ" and any("เมืองหลวงของบราซิล" in t for t in brazil[1:])


def test_glossary_brings_thai_names_to_english_questions(built_index):
    from assistant.thai import lexical_tokens

    tokens = Retriever(built_index).lexical_query("What did President Santos plan?")
    assert set(lexical_tokens("ประธานาธิบดีซานโตส")) <= set(tokens)


def test_lexical_side_is_used_for_thai_only_through_thai_tokens(built_index):
    retriever = Retriever(built_index)
    thai = retriever.search("บริษัท ISA ของโคลอมเบียทำอะไรในเปรู", top_k=3)
    assert thai[0].lexical_rank is not None
    unknown = retriever.search("quantum chromodynamics lattice", top_k=3)
    assert all(h.lexical_rank is None for h in unknown)


@pytest.mark.parametrize("mode", ["dense", "lexical"])
def test_single_retriever_modes(built_index, mode):
    hits = Retriever(built_index, mode=mode).search("บราซิลยุติการเจรจาอะไร", top_k=3)
    assert hit_rank([h.chunk.text for h in hits], ["บราซิลยุติการเจรจาจัดทำเขตการค้าเสรีแห่งอเมริกา"]) == 1


def test_evidence_rerank_lifts_the_passage_that_answers(built_index, monkeypatch):
    """The Andean Community's definition mentions the question's topic; the passage that answers it
    ("Venezuela joined in 1973") is ranked first only by the evidence re-ranking."""
    import assistant.retrieval as retrieval

    question, evidence = "When did Venezuela join the Andean Community?", ["เวเนซุเอลาเข้าร่วมในปี ค.ศ. 1973"]
    reranked = Retriever(built_index).search(question, top_k=5)
    assert hit_rank([h.chunk.text for h in reranked], evidence) == 1
    assert [h.score for h in reranked] == sorted((h.score for h in reranked), reverse=True)
    monkeypatch.setattr(retrieval, "RERANK_DEPTH", 0)
    fused_only = Retriever(built_index).search(question, top_k=5)
    assert hit_rank([h.chunk.text for h in fused_only], evidence) > 1


def test_rerank_lifts_the_passage_holding_what_is_asked_for(built_index, monkeypatch):
    """The Lima Declaration's passage outranks the members' on words and fusion; only the latter holds a
    count of countries ("4 ประเทศ")."""
    import assistant.retrieval as retrieval

    question, evidence = "How many countries belong to the Pacific Alliance?", ["สมาชิกของพันธมิตรแปซิฟิกมี 4 ประเทศ"]
    assert hit_rank([h.chunk.text for h in Retriever(built_index).search(question, top_k=5)], evidence) == 1
    monkeypatch.setattr(retrieval, "TYPE_WEIGHT", 0.0)
    assert hit_rank([h.chunk.text for h in Retriever(built_index).search(question, top_k=5)], evidence) > 1


@pytest.mark.parametrize("mode", ["dense", "lexical"])
def test_comparison_modes_are_not_reranked(built_index, monkeypatch, mode):
    import assistant.retrieval as retrieval

    question = "When did Venezuela join the Andean Community?"
    ranked = [h.chunk.chunk_id for h in Retriever(built_index, mode=mode).search(question, top_k=5)]
    monkeypatch.setattr(retrieval, "RERANK_DEPTH", 0)
    assert [h.chunk.chunk_id for h in Retriever(built_index, mode=mode).search(question, top_k=5)] == ranked


def test_idf_ranks_rare_words_above_common_ones(built_index):
    assert built_index.idf("ชิลี") < built_index.idf("เวเนซุเอลา") < built_index.idf("ไม่มีคำนี้ในเอกสาร")
    assert built_index.idf("chile", english=True) < built_index.idf("andean", english=True)
    assert built_index.common("countri", english=True) and not built_index.common("gdp", english=True)
    assert built_index.common("ประเทศ") and not built_index.common("เวเนซุเอลา")


def test_english_sentences_are_read_with_their_document_title(built_index):
    """The note's "At its founding it had 12 members" names no organisation; its title does, and the
    English sentence vectors are of "title: sentence", so the passage leads for a question on UNASUR."""
    from assistant import embedding

    question = "How many countries were in UNASUR when it was first set up?"
    hits = Retriever(built_index).search(question, top_k=5)
    assert hit_rank([h.chunk.text for h in hits], ["สมาชิกเมื่อก่อตั้งมี 12 ประเทศ"]) == 1
    chunk = hits[0].chunk
    rendering, span = built_index.rendering(chunk), chunk.sentences[0]
    row = built_index.english.sentence_rows[chunk.sentence_rows[0]]
    titled = embedding.encode(built_index.embed_model, [f"{rendering.title}: {rendering.sentences[span]}"], query=False)
    assert float(built_index.english.sentence_vectors[row].astype("float32") @ titled[0]) > 0.999


def test_content_words_leave_out_what_only_names_the_answer_kind():
    from assistant.retrieval import content_words

    assert content_words("How many countries founded MERCOSUR?", "en") == {"countri", "found", "mercosur"}
    assert "กี่" not in content_words("MERCOSUR มีประเทศผู้ก่อตั้งกี่ประเทศ", "th")


def test_covered_counts_words_in_either_language():
    from assistant.retrieval import covered

    assert covered({"venezuela", "join"}, "en", "เวเนซุเอลา", "Venezuela joined in 1973") == {"venezuela", "join"}
    assert covered({"เวเนซุเอลา", "ถอนตัว"}, "th", "เวเนซุเอลาเข้าร่วมในปี ค.ศ. 1973", None) == {"เวเนซุเอลา"}
    # Without an English rendering only the Latin-script names in the Thai text can match.
    assert covered({"mercosur", "join"}, "en", "สมาชิก MERCOSUR", None) == {"mercosur"}
