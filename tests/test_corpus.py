from pathlib import Path

import pytest

from assistant import corpus
from assistant.errors import CorpusError, EmptyCorpusError

SOURCE = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus" / "latin-america-integration.th.txt"


def test_project_corpus_loads_every_file(config):
    loaded = corpus.load(config.corpus_dir)
    assert loaded.problems == ()
    ids = {d.doc_id for d in loaded.documents}
    assert {
        "latin-america-integration.th",
        "mercosur",
        "andean-community",
        "unasur",
        "alba",
        "pacific-alliance",
        "glossary",
    } <= ids
    doc = next(d for d in loaded.documents if d.doc_id == "latin-america-integration.th")
    assert doc.title == "การรวมกลุ่มในภูมิภาคของลาตินอเมริกา"
    assert len(doc.text.splitlines()) == 4


@pytest.mark.skipif(not SOURCE.exists(), reason="shared corpus not beside the project")
def test_thai_document_is_the_source_unchanged(config):
    assert (config.corpus_dir / SOURCE.name).read_bytes() == SOURCE.read_bytes()


def test_notes_have_front_matter(config):
    for name in ["mercosur.md", "andean-community.md", "unasur.md", "alba.md", "pacific-alliance.md", "glossary.md"]:
        doc = corpus.read(config.corpus_dir / name, config.corpus_dir)
        assert doc.meta["language"] == "th" and doc.meta["explains"] and doc.title
        assert not doc.text.startswith("---")


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("latin1.txt", "Perú ok".encode("latin-1"), "not valid UTF-8"),
        ("empty.md", b"   \n\n", "empty file"),
        ("only-front-matter.md", b"---\ntitle: x\n---\n", "empty file"),
        ("binary.txt", b"\x00\x01\x02abc", "binary file"),
        ("bad-front-matter.md", "---\ntitle: [unclosed\n---\nข้อความ".encode(), "malformed front matter"),
    ],
)
def test_bad_file_is_reported_by_name_and_others_still_load(corpus_copy, name, content, message):
    (corpus_copy / name).write_bytes(content)
    loaded = corpus.load(corpus_copy)
    assert len(loaded.documents) == 7
    assert len(loaded.problems) == 1
    problem = loaded.problems[0]
    assert isinstance(problem, CorpusError) and problem.path == name and message in str(problem)


def test_dropped_file_is_normalised(tmp_path):
    (tmp_path / "note.md").write_text("# หัวข้อ\n\nชิ\u200bลีและเปรู cafe\u0301", encoding="utf-8")
    doc = corpus.load(tmp_path).documents[0]
    assert doc.text == "# หัวข้อ\n\nชิลีและเปรู café"
    assert doc.title == "หัวข้อ"


def test_empty_corpus_is_a_clear_error(tmp_path):
    with pytest.raises(EmptyCorpusError, match="No usable document"):
        corpus.load(tmp_path)
    with pytest.raises(EmptyCorpusError, match="does not exist"):
        corpus.load(tmp_path / "missing")


def test_glossary_maps_english_names_to_thai(config):
    terms = corpus.glossary(corpus.load(config.corpus_dir).documents)
    assert terms["santos"] == ("ซานโตส", "ประธานาธิบดีซานโตส")
    assert terms["lan chile"] == ("สายการบินแห่งชาติของชิลี",)
    assert "english" not in terms  # the header row is not a pair
    rows = {
        english[0]: (kind, note)
        for _, english, kind, note in corpus.glossary_rows(corpus.load(config.corpus_dir).documents)
    }
    assert rows["Hugo Chávez"] == ("person", "ประธานาธิบดีของเวเนซุเอลา")  # the third column is the note


def test_content_hash_changes_with_any_file(corpus_copy):
    before = corpus.content_hash(corpus_copy)
    (corpus_copy / "new.txt").write_text("ข้อความใหม่", encoding="utf-8")
    assert corpus.content_hash(corpus_copy) != before


def test_symbolic_links_are_skipped_with_a_message(corpus_copy, tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_text("รหัสผ่านของระบบ root:x:0:0", encoding="utf-8")
    (corpus_copy / "linked.txt").symlink_to(outside)
    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "n.md").write_text("ข้อความนอกคลัง", encoding="utf-8")
    (corpus_copy / "folder").symlink_to(tmp_path / "more", target_is_directory=True)
    loaded = corpus.load(corpus_copy)
    assert not any("รหัสผ่าน" in d.text or "นอกคลัง" in d.text for d in loaded.documents)
    problems = sorted(str(p) for p in loaded.problems)
    assert problems == [
        "folder: symbolic link, skipped: copy the file into the corpus folder instead",
        "linked.txt: symbolic link, skipped: copy the file into the corpus folder instead",
    ]
    outside.write_text("changed", encoding="utf-8")
    before = corpus.content_hash(corpus_copy)
    (tmp_path / "more" / "n.md").write_text("changed too", encoding="utf-8")
    assert corpus.content_hash(corpus_copy) == before  # links do not count
