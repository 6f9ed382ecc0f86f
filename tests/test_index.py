import json
import shutil

import pytest
from helpers import Interrupted

from assistant import index
from assistant.errors import IndexCorruptError, IndexMismatchError, IndexMissingError, IndexStaleError
from assistant.retrieval import Retriever


@pytest.fixture()
def small(config, built_index, corpus_copy, tmp_path):
    """A writable corpus and a writable index of it: a copy of the session's, as `assistant index` built it
    from the same files (a build per test cost about half a second each)."""
    cfg = config.with_(corpus_dir=corpus_copy, index_dir=tmp_path / "index")
    shutil.copytree(config.index_dir, cfg.index_dir)
    return cfg


def test_round_trip(built_index, config, embed_model):
    """What `load` reads back is a fresh chunking of the corpus: ids, texts, spans, and one vector row
    per distinct sentence text."""
    from assistant import chunking, corpus

    documents = corpus.load(config.corpus_dir).documents
    fresh = chunking.split(documents, index.chunk_params(config))
    loaded = index.load(config, embed_model)
    assert [c.chunk_id for c in loaded.chunks] == [c.chunk_id for c in fresh]
    assert [(c.text, c.start, c.end, c.sentences) for c in loaded.chunks] == [
        (c.text, c.start, c.end, c.sentences) for c in fresh
    ]
    assert list(loaded.chunks) == fresh  # every field (Chunk leaves sentence_rows out of equality)
    texts = {d.doc_id: d.text for d in documents}
    row_of = {}
    for c in loaded.chunks:
        assert len(c.sentence_rows) == len(c.sentences)
        for (a, b), row in zip(c.sentences, c.sentence_rows):
            assert row_of.setdefault(texts[c.doc_id][a:b], row) == row
    assert sorted(row_of.values()) == list(range(loaded.manifest["sentences"]))
    assert loaded.manifest["embed_model"].startswith("multilingual-e5-small")
    assert loaded.manifest["dimension"] == 384
    recorded = loaded.manifest["embedding"]
    assert recorded["runtime"] == "onnxruntime" and recorded["precision"] == "exact"
    assert recorded["sha256"] == embed_model.sha256 and len(recorded["sha256"]) == 64
    assert set(loaded.manifest["chunking"]) >= {"min_chars", "max_chars", "overlap_sentences", "version"}
    hits = Retriever(loaded).search("บริษัท Brescia ของเปรูเป็นเจ้าของอะไร")
    assert "Brescia" in hits[0].chunk.text


def test_missing_index_is_a_clear_error(config, tmp_path, embed_model):
    with pytest.raises(IndexMissingError, match="run `assistant index`"):
        index.load(config.with_(index_dir=tmp_path / "nothing"), embed_model)


def test_stale_corpus_is_rebuilt(small, embed_model):
    (small.corpus_dir / "extra.md").write_text(
        "---\ntitle: บันทึกเพิ่มเติม\n---\nประเทศปารากวัยมีเมืองหลวงชื่ออาซุนซิออน", encoding="utf-8"
    )
    with pytest.raises(IndexStaleError, match="run `assistant index`"):
        index.load(small, embed_model)
    with pytest.raises(IndexStaleError):
        index.open_index(small.with_(auto_rebuild=False), embed_model, progress=False)
    rebuilt = index.open_index(small, embed_model, progress=False)
    assert "extra.md" in rebuilt.manifest["documents"]
    assert any(c.doc_id == "extra" for c in rebuilt.chunks)
    assert index.load(small, embed_model).manifest == rebuilt.manifest


def test_changed_chunking_settings_make_the_index_stale(small, embed_model):
    with pytest.raises(IndexStaleError):
        index.load(small.with_(chunk_max_chars=500), embed_model)


def test_passages_are_spans_of_their_documents_with_their_sentence_vectors(built_index, embed_model):
    import numpy as np

    from assistant import embedding

    chunks = built_index.chunks
    assert len(chunks) == built_index.manifest["chunks"] and chunks[-1] == list(chunks)[-1]
    chunk = chunks[3]
    assert chunk.text == chunk.text.strip() and len(chunk.sentence_rows) == len(chunk.sentences)
    a, b = chunk.sentences[0]
    sentence = chunk.text[a - chunk.start : b - chunk.start]
    stored = built_index.sentence_vectors[chunk.sentence_rows[0]].astype(np.float32)
    fresh = embedding.encode(embed_model, [sentence], query=False)[0]
    assert float(stored @ fresh) > 0.999  # float16 storage keeps the vector


def test_a_passage_knows_its_neighbours_in_its_document(built_index):
    chunks = list(built_index.chunks)
    for before, after in zip(chunks, chunks[1:]):
        if before.doc_id == after.doc_id:
            assert built_index.chunks.neighbour(before, 1) == after
            assert built_index.chunks.neighbour(after, -1) == before
        else:  # none across documents
            assert built_index.chunks.neighbour(before, 1) is None
            assert built_index.chunks.neighbour(after, -1) is None


def test_hnsw_index_finds_what_exact_search_finds(small, embed_model):
    flat = index.load(small, embed_model)
    assert flat.manifest["vector_index"] == "flat" and flat.manifest["hnsw"] is None
    with pytest.raises(IndexStaleError, match="vector index"):
        index.load(small.with_(vector_index="hnsw"), embed_model)
    settings = small.with_(vector_index="hnsw", hnsw_m=16, hnsw_ef_construction=40, hnsw_ef_search=24)
    hnsw = index.open_index(settings, embed_model, progress=False)
    graph = hnsw.vector_store._faiss_index
    assert type(graph).__name__ == "IndexHNSWFlat"
    assert graph.hnsw.nb_neighbors(1) == 16 and graph.hnsw.efConstruction == 40 and graph.hnsw.efSearch == 24
    assert hnsw.manifest["vector_index"] == "hnsw" and hnsw.manifest["hnsw"] == {"m": 16, "ef_construction": 40}
    # The search breadth is read at query time; the graph's shape belongs to the built index.
    wider = index.load(settings.with_(hnsw_ef_search=200), embed_model)
    assert wider.vector_store._faiss_index.hnsw.efSearch == 200
    for changed in ({"hnsw_m": 32}, {"hnsw_ef_construction": 80}):
        with pytest.raises(IndexStaleError, match="vector index settings"):
            index.load(settings.with_(**changed), embed_model)
    for question in ("บราซิลยุติการเจรจาอะไร", "Which Peruvian company owns Chile's largest cement company?"):
        exact = [h.chunk.chunk_id for h in Retriever(flat, mode="dense").search(question)]
        approximate = [h.chunk.chunk_id for h in Retriever(hnsw, mode="dense").search(question)]
        assert approximate == exact  # 38 passages: the graph search is exhaustive


def test_other_model_is_a_clear_error(small, embed_model):
    with pytest.raises(IndexMismatchError, match="built with embedding model"):
        index.load(small.with_(embed_model="sentence-transformers/all-MiniLM-L6-v2"), embed_model)
    with pytest.raises(IndexMismatchError, match="int8"):  # another precision, other vectors
        index.load(small.with_(embed_precision="int8"), embed_model)


def test_interrupted_build_keeps_the_previous_index(small, embed_model):
    manifest = (small.index_dir / index.MANIFEST).read_text()
    (small.corpus_dir / "extra.txt").write_text("ข้อความใหม่ในคลังเอกสาร", encoding="utf-8")
    with pytest.raises(KeyboardInterrupt):
        index.build(small, Interrupted(embed_dim=384), progress=False)
    assert (small.index_dir / index.MANIFEST).read_text() == manifest
    assert sorted(p.name for p in small.index_dir.parent.iterdir()) == ["corpus", "index"]  # no leftovers
    (small.corpus_dir / "extra.txt").unlink()
    assert index.load(small, embed_model).manifest["chunks"] > 0


@pytest.mark.parametrize(
    "name, damage",
    [
        ("vectors.faiss", b"not a faiss index"),
        ("documents.json", b'[{"doc_id": '),
        ("chunks.npz", b"PK garbage"),
        ("sentences.npy", b"\x93NUMPY garbage"),
        ("manifest.json", b"{broken"),
    ],
)
def test_corrupted_file_is_a_clear_error(small, embed_model, name, damage):
    (small.index_dir / name).write_bytes(damage)
    with pytest.raises(IndexCorruptError, match="rebuild"):
        index.load(small, embed_model)


def test_inconsistent_manifest_is_detected(small, embed_model):
    path = small.index_dir / index.MANIFEST
    manifest = json.loads(path.read_text())
    manifest["chunks"] += 1
    path.write_text(json.dumps(manifest))
    with pytest.raises(IndexCorruptError, match="inconsistent"):
        index.load(small, embed_model)


def test_corpus_of_only_a_glossary_is_a_clear_error(config, tmp_path, embed_model):
    from assistant.errors import EmptyCorpusError

    corpus_dir = tmp_path / "corpus"
    corpus_dir.mkdir()
    (corpus_dir / "g.md").write_text("---\nrole: glossary\n---\n| ชิลี | Chile |\n", encoding="utf-8")
    cfg = config.with_(corpus_dir=corpus_dir, index_dir=tmp_path / "index")
    with pytest.raises(EmptyCorpusError, match="no text to index"):
        index.build(cfg, embed_model, progress=False)
    assert not (tmp_path / "index").exists()


def test_shortened_document_text_is_caught_by_its_checksum(small, embed_model):
    """A documents.json cut short but still valid JSON loaded before and cited past the end of the text."""
    path = small.index_dir / index.DOCUMENTS
    documents = json.loads(path.read_text(encoding="utf-8"))
    documents[0]["text"] = documents[0]["text"][:100]
    path.write_text(json.dumps(documents, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(IndexCorruptError, match="documents.json"):
        index.load(small, embed_model)


def test_every_index_file_is_listed_with_its_checksum(small):
    manifest = json.loads((small.index_dir / index.MANIFEST).read_text())
    on_disk = {
        p.relative_to(small.index_dir).as_posix()
        for p in small.index_dir.rglob("*")
        if p.is_file() and p.name != index.MANIFEST
    }
    assert set(manifest["files"]) == on_disk and len(on_disk) >= 6
    assert all(len(f["sha256"]) == 64 and f["bytes"] > 0 for f in manifest["files"].values())


def test_index_files_are_read_into_memory_not_mapped(small, embed_model):
    """A mapped file truncated under a running process kills it with SIGBUS; a loaded one cannot."""
    loaded = index.load(small, embed_model)
    import os

    os.truncate(small.index_dir / index.SENTENCES, 128)
    assert float(loaded.sentence_vectors.astype("float32").sum()) != 0.0  # still readable: not a mapping
    with pytest.raises(IndexCorruptError, match="sentences.npy"):
        index.verify(small.index_dir, loaded.manifest)


def test_folders_of_killed_builds_are_removed(small, embed_model):
    import os
    import subprocess

    gone = subprocess.Popen(["true"])
    gone.wait()  # a process id that no longer runs
    parent = small.index_dir.parent
    abandoned = [parent / f".index-building-{gone.pid}-x1", parent / f".index-old-{gone.pid}-x2"]
    running = parent / f".index-building-{os.getpid()}-x3"
    for folder in abandoned + [running]:
        folder.mkdir()
    index.build(small, embed_model, progress=False)
    assert not any(f.exists() for f in abandoned) and running.exists()


def test_changed_prompt_makes_the_index_stale(small, embed_model):
    with pytest.raises(IndexStaleError, match="prompts"):
        index.load(small.with_(passage_prompt="document: "), embed_model)
