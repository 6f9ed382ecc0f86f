from assistant import thai


def test_language_by_script():
    assert thai.language("บราซิลยุติการเจรจาอะไร") == "th"
    assert thai.language("What did Brazil stop?") == "en"


def test_normalise_nfc_and_zero_width():
    decomposed = "cafe\u0301"
    assert thai.normalise(decomposed) == "café"
    assert thai.normalise("ชิ\u200bลี\ufeff") == "ชิลี"


def test_lexical_tokens_keep_thai_words_whole_and_lowercase_latin():
    tokens = thai.lexical_tokens("การบูรณาการระดับภูมิภาค MERCOSUR")
    assert "บูรณาการ" in tokens and "ภูมิภาค" in tokens
    assert "mercosur" in tokens
    assert "การบ" not in tokens  # the mid-syllable cut a regex tokenizer makes


def test_english_tokens_stem_fold_accents_and_write_number_words_as_digits():
    assert thai.english_tokens("Which four countries signed in Asunción?") == ["4", "countri", "sign", "asuncion"]
    assert thai.english_tokens("It has 4 member countries") == ["4", "member", "countri"]
    assert "one" in thai.english_tokens("one of the members")  # a pronoun as often as a number
    # Dictionary forms before stemming: irregular forms meet, names stay lower-case.
    assert thai.english_tokens("Venezuela withdrew; it took") == thai.english_tokens("venezuela withdraw; it take")
    assert thai.english_tokens("How did ALBA come into being?") == ["alba", "come", "into"]  # "being" is "be"
    assert thai.english_tokens("When was UNASUR set up?") == ["unasur", "set"]
    assert thai.english_tokens("Venezuela withdrew") == ["venezuela", "withdraw"]


def test_sentence_spans_do_not_break_after_abbreviation():
    text = "สนธิสัญญาลงนามเมื่อวันที่ 26 มีนาคม ค.ศ. 1991 (พ.ศ. 2534) ที่กรุงอาซุนซิออน ประเทศปารากวัย"
    spans = thai.sentence_spans(text)
    joined = [text[a:b] for a, b in spans]
    assert any("ค.ศ. 1991" in s for s in joined)
    assert any("(พ.ศ. 2534)" in s for s in joined)


def test_split_long_cuts_only_at_word_boundaries():
    text = "การรวมกลุ่มทางเศรษฐกิจของลาตินอเมริกาในปัจจุบันนับเป็นการเปลี่ยนแปลงทรรศนะคติ" * 6
    pieces = thai.split_long(text, 0, len(text), 60)
    bounds = thai.word_boundaries(text)
    assert len(pieces) > 1
    assert all(b - a <= 60 for a, b in pieces)
    assert all(a in bounds and b in bounds for a, b in pieces)
    assert "".join(text[a:b] for a, b in pieces) == text


def test_word_set_segments_as_pythainlp_trie(config):
    import random

    from pythainlp.tokenize import word_tokenize

    from assistant import corpus

    texts = [d.text for d in corpus.load(config.corpus_dir).documents]
    joined = "".join(texts)
    rng = random.Random(0)
    texts += [joined[a : a + rng.randint(1, 400)] for a in (rng.randrange(len(joined)) for _ in range(500))]
    texts += ["", " ", "ABC def", "ภาษาไทย123 ไม่มีคำนี้ฮฮฮฮ", "การบูรณาการระดับภูมิภาค MERCOSUR"]
    for text in texts:
        assert thai.words(text) == word_tokenize(text, engine="newmm", keep_whitespace=True), text
