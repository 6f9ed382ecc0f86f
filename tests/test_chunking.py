from assistant import chunking, corpus, index, thai


def _chunks(config):
    documents = corpus.load(config.corpus_dir).documents
    return documents, chunking.split(documents, index.chunk_params(config))


def test_spans_map_back_to_the_exact_source_text(config):
    documents, chunks = _chunks(config)
    texts = {d.doc_id: d.text for d in documents}
    assert chunks
    for c in chunks:
        assert texts[c.doc_id][c.start : c.end] == c.text
        assert c.sentences[0][0] == c.start and c.sentences[-1][1] == c.end
        assert all(c.start <= a < b <= c.end for a, b in c.sentences)


def test_no_chunk_or_sentence_boundary_inside_a_word(config):
    documents, chunks = _chunks(config)
    bounds = {}
    for d in documents:
        # Word boundaries per paragraph line, as the chunker sees them.
        offsets, pos = set(), 0
        for line in d.text.split("\n"):
            offsets |= {pos + b for b in thai.word_boundaries(line)}
            pos += len(line) + 1
        bounds[d.doc_id] = offsets
    for c in chunks:
        for a, b in c.sentences:
            assert a in bounds[c.doc_id] and b in bounds[c.doc_id], (c.chunk_id, c.text[:40])


def test_chunks_stay_inside_one_document_and_paragraph(config):
    documents, chunks = _chunks(config)
    by_id = {d.doc_id: d for d in documents}
    for c in chunks:
        if by_id[c.doc_id].is_glossary:
            continue  # a row of its table (below)
        paragraph = chunking.paragraphs(by_id[c.doc_id])[c.paragraph - 1]
        assert paragraph[0] <= c.start and c.end <= paragraph[1]


def test_every_sentence_of_the_document_is_covered_and_chunks_are_bounded(config):
    documents, chunks = _chunks(config)
    doc = next(d for d in documents if d.doc_id == "latin-america-integration.th")
    mine = [c for c in chunks if c.doc_id == doc.doc_id]
    covered = set()
    for c in mine:
        covered |= set(range(c.start, c.end))
        assert len(c.text) <= 400 or len(c.sentences) == 1
    assert all(i in covered for i, ch in enumerate(doc.text) if not ch.isspace())
    assert [c.paragraph for c in mine] == sorted(c.paragraph for c in mine)
    assert {c.paragraph for c in mine} == {1, 2, 3, 4}


def test_neighbouring_chunks_overlap_but_none_is_a_subset(config):
    _, chunks = _chunks(config)
    for before, after in zip(chunks, chunks[1:]):
        if before.doc_id == after.doc_id and before.paragraph == after.paragraph:
            assert after.end > before.end and after.start > before.start


def test_every_glossary_row_is_a_passage_after_the_documents(config):
    documents, chunks = _chunks(config)
    rows = [c for c in chunks if c.doc_id == "glossary"]
    assert chunks[-len(rows) :] == rows  # last: the lexical index holds the documents' passages only
    santos = next(c for c in rows if "Juan Manuel Santos" in c.text)
    assert santos.text == (
        "ประธานาธิบดีซานโตส, ซานโตส | Juan Manuel Santos, Santos | "
        "ประธานาธิบดีของโคลอมเบียในเวลาที่เอกสารเขียน (ดำรงตำแหน่ง ค.ศ. 2010-2018)"
    )
    assert santos.sentences == ((santos.start, santos.end),)
    glossary = next(d for d in documents if d.doc_id == "glossary")
    assert santos.text == glossary.text[santos.start : santos.end]
    # A row whose note is only a category still gives the name's two forms; the header row is no row.
    assert any(c.text == "บราซิล | Brazil | ประเทศ" for c in rows)
    assert not any(c.text.startswith("ไทย |") for c in rows)
    table = [line for line in glossary.text.splitlines() if line.startswith("|") and not set(line) <= set("|-: ")]
    assert len(rows) == len(table) - 1


def test_markdown_heading_joins_its_paragraph():
    from assistant.types import Document

    doc = Document("n", "n.md", "t", "# หัวข้อ\n\nเนื้อหาของย่อหน้าแรก\n\nย่อหน้าที่สอง")
    spans = chunking.paragraphs(doc)
    assert [doc.text[a:b] for a, b in spans] == ["# หัวข้อ\n\nเนื้อหาของย่อหน้าแรก", "ย่อหน้าที่สอง"]


def test_chunks_become_text_nodes_with_metadata(config):
    from assistant.index import _nodes

    _, chunks = _chunks(config)
    node = _nodes(chunks[:1])[0]
    assert node.node_id == chunks[0].chunk_id
    assert node.metadata["start"] == chunks[0].start and node.metadata["title"] == chunks[0].title
    from llama_index.core.schema import MetadataMode

    assert node.get_content(metadata_mode=MetadataMode.EMBED) == chunks[0].text
