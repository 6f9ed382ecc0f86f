"""The on-disk index: FAISS through llama-index, the passages, BM25, sentence vectors, a manifest."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from assistant import chunking, corpus, embedding, vector_cache
from assistant.config import VECTOR_INDEXES, Config
from assistant.errors import (AssistantError, EmptyCorpusError, IndexCorruptError, IndexMismatchError,
                              IndexMissingError, IndexStaleError)
from assistant.thai import lexical_tokens
from assistant.types import Chunk, Document

# 2: passages as arrays over the documents' text, sentence vectors in float16 by distinct text.
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
VECTORS = "vectors.faiss"
DOCUMENTS = "documents.json"
CHUNKS = "chunks.npz"
SENTENCES = "sentences.npy"
LEXICAL = "bm25"
GLOSSARY = "glossary.json"
# HNSW graph degree, build and search breadth: recall against exact search is in `assistant bench`.
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 64


class Chunks(Sequence):
    """The passages of an index, made on demand from arrays over the documents' text.

    A passage is a span of its document, so the text is held once; 100k Chunk objects with their own
    text and sentence tuples would take several hundred MB.
    """

    FIELDS = ("doc", "number", "paragraph", "start", "end", "sentence_offsets", "sentence_start",
              "sentence_end", "sentence_row")

    def __init__(self, documents: list[dict], arrays: dict[str, np.ndarray]):
        self.documents = documents
        self.arrays = {name: np.asarray(arrays[name]) for name in self.FIELDS}

    @classmethod
    def from_chunks(cls, chunks: list[Chunk], documents: dict[str, Document],
                    sentence_row: dict[str, int]) -> "Chunks":
        order = list(dict.fromkeys(c.doc_id for c in chunks))
        position = {d: i for i, d in enumerate(order)}
        docs = [{"doc_id": d, "source": documents[d].source, "title": documents[d].title,
                 "text": documents[d].text} for d in order]
        sentences = [s for c in chunks for s in c.sentences]
        arrays = {
            "doc": [position[c.doc_id] for c in chunks],
            "number": [int(c.chunk_id.rsplit("#", 1)[1]) for c in chunks],
            "paragraph": [c.paragraph for c in chunks],
            "start": [c.start for c in chunks],
            "end": [c.end for c in chunks],
            "sentence_offsets": np.cumsum([0] + [len(c.sentences) for c in chunks]),
            "sentence_start": [a for a, _ in sentences],
            "sentence_end": [b for _, b in sentences],
            "sentence_row": [sentence_row[documents[c.doc_id].text[a:b]] for c in chunks for a, b in c.sentences],
        }
        return cls(docs, {k: np.asarray(v, dtype=np.int64 if k == "sentence_offsets" else np.int32)
                          for k, v in arrays.items()})

    def __len__(self) -> int:
        return len(self.arrays["doc"])

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        a = self.arrays
        doc = self.documents[a["doc"][i]]
        lo, hi = a["sentence_offsets"][i], a["sentence_offsets"][i + 1]
        start, end = int(a["start"][i]), int(a["end"][i])
        return Chunk(chunk_id=f"{doc['doc_id']}#{a['number'][i]}", doc_id=doc["doc_id"], source=doc["source"],
                     title=doc["title"], paragraph=int(a["paragraph"][i]), start=start, end=end,
                     text=doc["text"][start:end],
                     sentences=tuple(zip(a["sentence_start"][lo:hi].tolist(), a["sentence_end"][lo:hi].tolist())),
                     sentence_rows=tuple(a["sentence_row"][lo:hi].tolist()))

    def save(self, folder: Path) -> None:
        (folder / DOCUMENTS).write_text(json.dumps(self.documents, ensure_ascii=False), encoding="utf-8")
        np.savez(folder / CHUNKS, **self.arrays)

    @classmethod
    def load(cls, folder: Path) -> "Chunks":
        documents = json.loads((folder / DOCUMENTS).read_text(encoding="utf-8"))
        with np.load(folder / CHUNKS, allow_pickle=False) as arrays:
            return cls(documents, {name: arrays[name] for name in cls.FIELDS})


@dataclass
class Index:
    """Everything retrieval needs, loaded once."""

    chunks: Chunks
    vector_store: object  # llama_index.vector_stores.faiss.FaissVectorStore, row i = chunks[i]
    lexical: object  # bm25s.BM25 over `chunks`, in the same order
    sentence_vectors: np.ndarray  # float16, memory-mapped; rows are Chunk.sentence_rows
    glossary: dict[str, tuple[str, ...]]
    manifest: dict
    embed_model: object

    def sentence_scores(self, chunk: Chunk, vector: np.ndarray) -> np.ndarray:
        """Cosine of each of the passage's sentences with a (query) vector."""
        return self.sentence_vectors[list(chunk.sentence_rows)].astype(np.float32) @ vector


def chunk_params(config: Config) -> chunking.ChunkParams:
    return chunking.ChunkParams(config.chunk_min_chars, config.chunk_max_chars,
                                config.chunk_overlap_sentences)


def new_faiss_index(kind: str, dimension: int):
    """An empty FAISS index for cosine similarity (inner product of normalised vectors)."""
    import faiss

    if kind == "flat":
        return faiss.IndexFlatIP(dimension)
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dimension, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.hnsw.efSearch = HNSW_EF_SEARCH
        return index
    raise AssistantError(f"ASSISTANT_VECTOR_INDEX={kind!r}: use one of {', '.join(VECTOR_INDEXES)}")


def _nodes(chunks: list[Chunk]):
    from llama_index.core.schema import TextNode

    nodes = []
    for c in chunks:
        metadata = {"doc_id": c.doc_id, "source": c.source, "title": c.title, "paragraph": c.paragraph,
                    "start": c.start, "end": c.end}
        keys = list(metadata)
        # Only the passage text is embedded: metadata in front of it lowered retrieval quality.
        nodes.append(TextNode(id_=c.chunk_id, text=c.text, metadata=metadata,
                              excluded_embed_metadata_keys=keys, excluded_llm_metadata_keys=keys))
    return nodes


def build(config: Config, embed_model=None, progress: bool = True) -> Index:
    """Read the corpus, chunk, embed and write a new index atomically; the old one survives failures.

    With `config.vector_cache`, text embedded by an earlier build is not embedded again.
    """
    import bm25s
    from llama_index.core import StorageContext, VectorStoreIndex
    from llama_index.vector_stores.faiss import FaissVectorStore

    embed_model = embed_model or embedding.load(config)
    corpus_hash = corpus.content_hash(config.corpus_dir)
    loaded = corpus.load(config.corpus_dir)
    chunks = chunking.split(loaded.documents, chunk_params(config))
    if not chunks:
        raise EmptyCorpusError(f"The corpus in {config.corpus_dir} has no text to index besides glossaries.")
    dimension = len(embed_model.get_query_embedding("dimension probe"))
    faiss_index = new_faiss_index(config.vector_index, dimension)

    config.index_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{config.index_dir.name}-building-", dir=config.index_dir.parent))
    try:
        # llama-index embeds the passages and adds them to FAISS in order: FAISS row i is chunks[i].
        store = FaissVectorStore(faiss_index=faiss_index)
        documents = {d.doc_id: d for d in loaded.documents}
        texts = sorted({documents[c.doc_id].text[a:b] for c in chunks for a, b in c.sentences})
        cache = embedding.cache_path(config) if config.vector_cache else None
        with vector_cache.passage_cache(embed_model, cache):
            VectorStoreIndex(_nodes(chunks), storage_context=StorageContext.from_defaults(vector_store=store),
                             embed_model=embed_model, show_progress=progress)
            vectors = embedding.encode(embed_model, texts, query=False, progress=progress)
        store.persist(str(staging / VECTORS))
        np.save(staging / SENTENCES, vectors.astype(np.float16))
        Chunks.from_chunks(chunks, documents, {t: i for i, t in enumerate(texts)}).save(staging)

        lexical = bm25s.BM25()
        lexical.index([lexical_tokens(c.text) for c in chunks], show_progress=False)
        lexical.save(str(staging / LEXICAL))
        terms = corpus.glossary(loaded.documents)
        (staging / GLOSSARY).write_text(json.dumps(terms, ensure_ascii=False, indent=1), encoding="utf-8")

        manifest = {
            "format_version": FORMAT_VERSION,
            "embed_model": embedding.model_id(config),
            # How the vectors were computed (runtime, precision, the ONNX file's hash): for the record;
            # `embed_model` is what must match, since equal ids give equal vectors.
            "embedding": embedding.describe(embed_model),
            "dimension": dimension,
            "vector_index": config.vector_index,
            "chunking": chunk_params(config).as_dict(),
            "corpus_hash": corpus_hash,
            "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "chunks": len(chunks),
            "sentences": len(texts),
            "documents": [d.source for d in loaded.documents],
            "problems": [str(p) for p in loaded.problems],
        }
        # The manifest is written last: a folder without one is never mistaken for an index.
        (staging / MANIFEST).write_text(json.dumps(manifest, ensure_ascii=False, indent=1), encoding="utf-8")
        _swap_in(staging, config.index_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return load(config, embed_model)


def _swap_in(staging: Path, target: Path) -> None:
    old = None
    if target.exists():
        old = target.parent / f".{target.name}-old-{staging.name}"
        target.rename(old)
    staging.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def read_manifest(index_dir: Path) -> dict:
    path = index_dir / MANIFEST
    if not path.is_file():
        raise IndexMissingError(f"No index in {index_dir}: run `assistant index` to build it.")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        manifest["format_version"], manifest["embed_model"], manifest["corpus_hash"]
    except (ValueError, KeyError, TypeError) as error:
        raise IndexCorruptError(f"The index manifest {path} is unreadable ({error}): "
                                "run `assistant index` to rebuild it.") from None
    return manifest


def check(manifest: dict, config: Config) -> None:
    """Raise if the index does not belong to this configuration and corpus."""
    model = embedding.model_id(config)
    if manifest["embed_model"] != model:
        raise IndexMismatchError(
            f"The index in {config.index_dir} was built with embedding model {manifest['embed_model']!r} "
            f"but the configured model is {model!r}: run `assistant index` to rebuild it, "
            "or set ASSISTANT_EMBED_MODEL back.")
    stale = (manifest["format_version"] != FORMAT_VERSION
             or manifest.get("chunking") != chunk_params(config).as_dict()
             or manifest.get("vector_index") != config.vector_index
             or manifest["corpus_hash"] != corpus.content_hash(config.corpus_dir))
    if stale:
        raise IndexStaleError(f"The corpus in {config.corpus_dir}, the chunking settings or the vector index "
                              f"type changed since the index in {config.index_dir} was built: "
                              "run `assistant index`.")


def load(config: Config, embed_model=None) -> Index:
    """Load and verify the index; the embedding model must match the one that built it."""
    import bm25s
    from llama_index.vector_stores.faiss import FaissVectorStore

    manifest = read_manifest(config.index_dir)
    check(manifest, config)
    embed_model = embed_model or embedding.load(config)
    folder = config.index_dir
    try:
        store = FaissVectorStore.from_persist_path(str(folder / VECTORS))
        chunks = Chunks.load(folder)
        lexical = bm25s.BM25.load(str(folder / LEXICAL), mmap=True, show_progress=False)
        # Memory-mapped: answering reads a few rows per question, the rest stays on disk.
        sentence_vectors = np.load(folder / SENTENCES, mmap_mode="r")
        terms = {k: tuple(v) for k, v in json.loads((folder / GLOSSARY).read_text(encoding="utf-8")).items()}
    except AssistantError:
        raise
    except Exception as error:  # any unreadable part: FAISS, JSON, numpy or BM25 files
        raise IndexCorruptError(f"The index in {folder} is damaged ({type(error).__name__}: "
                                f"{str(error)[:200]}): run `assistant index` to rebuild it.") from None
    rows = chunks.arrays["sentence_row"]
    if (store._faiss_index.d != manifest["dimension"] or store._faiss_index.ntotal != len(chunks)
            or len(chunks) != manifest["chunks"] or sentence_vectors.shape != (manifest["sentences"], manifest["dimension"])
            or (len(rows) and (rows.min() < 0 or rows.max() >= len(sentence_vectors)))):
        raise IndexCorruptError(f"The index in {folder} is inconsistent (vector and chunk counts differ): "
                                "run `assistant index` to rebuild it.")
    if len(embed_model.get_query_embedding("dimension probe")) != manifest["dimension"]:
        raise IndexMismatchError(f"The embedding model's dimension differs from the index's "
                                 f"({manifest['dimension']}): run `assistant index` to rebuild it.")
    return Index(chunks, store, lexical, sentence_vectors, terms, manifest, embed_model)


def open_index(config: Config, embed_model=None, progress: bool = True) -> Index:
    """The index, built when missing and rebuilt when stale (unless auto_rebuild is off)."""
    embed_model = embed_model or embedding.load(config)
    try:
        return load(config, embed_model)
    except IndexMissingError:
        return build(config, embed_model, progress)
    except IndexStaleError:
        if not config.auto_rebuild:
            raise
        return build(config, embed_model, progress)
