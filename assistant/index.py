"""The on-disk index: FAISS through llama-index, the chunk store, BM25, sentence vectors, a manifest."""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from assistant import chunking, corpus, embedding
from assistant.config import Config
from assistant.errors import (AssistantError, EmptyCorpusError, IndexCorruptError, IndexMismatchError,
                              IndexMissingError, IndexStaleError)
from assistant.thai import lexical_tokens
from assistant.types import Chunk

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SENTENCES = "sentences.npy"
LEXICAL = "bm25"
GLOSSARY = "glossary.json"


@dataclass
class Index:
    """Everything retrieval needs, loaded once."""

    chunks: list[Chunk]
    vector_index: object  # llama_index.core.VectorStoreIndex over a FaissVectorStore
    lexical: object  # bm25s.BM25 over `chunks`, in the same order
    sentence_spans: list[tuple[str, int, int]]  # (doc_id, start, end), rows of sentence_vectors
    sentence_vectors: np.ndarray
    glossary: dict[str, tuple[str, ...]]
    manifest: dict
    embed_model: object

    def sentence_row(self) -> dict[tuple[str, int, int], int]:
        return {span: row for row, span in enumerate(self.sentence_spans)}


def chunk_params(config: Config) -> chunking.ChunkParams:
    return chunking.ChunkParams(config.chunk_min_chars, config.chunk_max_chars,
                                config.chunk_overlap_sentences)


def _nodes(chunks: list[Chunk]):
    from llama_index.core.schema import TextNode

    nodes = []
    for c in chunks:
        metadata = asdict(c)
        del metadata["text"], metadata["chunk_id"]
        metadata["sentences"] = [list(s) for s in c.sentences]
        keys = list(metadata)
        # Only the passage text is embedded: metadata in front of it lowered retrieval quality.
        nodes.append(TextNode(id_=c.chunk_id, text=c.text, metadata=metadata,
                              excluded_embed_metadata_keys=keys, excluded_llm_metadata_keys=keys))
    return nodes


def _chunk(node) -> Chunk:
    m = node.metadata
    return Chunk(chunk_id=node.node_id, doc_id=m["doc_id"], source=m["source"], title=m["title"],
                 paragraph=int(m["paragraph"]), start=int(m["start"]), end=int(m["end"]),
                 text=node.get_content(), sentences=tuple(tuple(s) for s in m["sentences"]))


def build(config: Config, embed_model=None, progress: bool = True) -> Index:
    """Read the corpus, chunk, embed and write a new index atomically; the old one survives failures."""
    import bm25s
    import faiss
    from llama_index.core import StorageContext, VectorStoreIndex
    from llama_index.vector_stores.faiss import FaissVectorStore

    embed_model = embed_model or embedding.load(config)
    corpus_hash = corpus.content_hash(config.corpus_dir)
    loaded = corpus.load(config.corpus_dir)
    chunks = chunking.split(loaded.documents, chunk_params(config))
    if not chunks:
        raise EmptyCorpusError(f"The corpus in {config.corpus_dir} has no text to index besides glossaries.")
    dimension = len(embed_model.get_query_embedding("dimension probe"))

    config.index_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{config.index_dir.name}-building-", dir=config.index_dir.parent))
    try:
        store = FaissVectorStore(faiss_index=faiss.IndexFlatIP(dimension))
        storage = StorageContext.from_defaults(vector_store=store)
        vector_index = VectorStoreIndex(_nodes(chunks), storage_context=storage,
                                        embed_model=embed_model, show_progress=progress)
        storage.persist(persist_dir=str(staging))

        spans = sorted({(c.doc_id, a, b) for c in chunks for a, b in c.sentences})
        texts = {d.doc_id: d.text for d in loaded.documents}
        sentence_vectors = embedding.encode(embed_model, [texts[d][a:b] for d, a, b in spans],
                                            query=False, progress=progress)
        np.save(staging / SENTENCES, sentence_vectors)

        lexical = bm25s.BM25()
        lexical.index([lexical_tokens(c.text) for c in chunks], show_progress=False)
        lexical.save(str(staging / LEXICAL))
        terms = corpus.glossary(loaded.documents)
        (staging / GLOSSARY).write_text(json.dumps(terms, ensure_ascii=False, indent=1), encoding="utf-8")

        manifest = {
            "format_version": FORMAT_VERSION,
            "embed_model": embedding.model_id(config),
            "dimension": dimension,
            "chunking": chunk_params(config).as_dict(),
            "corpus_hash": corpus_hash,
            "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "chunks": len(chunks),
            "documents": [d.source for d in loaded.documents],
            "problems": [str(p) for p in loaded.problems],
            "sentence_spans": [list(s) for s in spans],
        }
        # The manifest is written last: a folder without one is never mistaken for an index.
        (staging / MANIFEST).write_text(json.dumps(manifest, ensure_ascii=False, indent=1), encoding="utf-8")
        _swap_in(staging, config.index_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Index(chunks, vector_index, lexical, [tuple(s) for s in spans], sentence_vectors, terms,
                 manifest, embed_model)


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
             or manifest["corpus_hash"] != corpus.content_hash(config.corpus_dir))
    if stale:
        raise IndexStaleError(f"The corpus in {config.corpus_dir} or the chunking settings changed since "
                              f"the index in {config.index_dir} was built: run `assistant index`.")


def load(config: Config, embed_model=None) -> Index:
    """Load and verify the index; the embedding model must match the one that built it."""
    import bm25s
    from llama_index.core import StorageContext, load_index_from_storage
    from llama_index.vector_stores.faiss import FaissVectorStore

    manifest = read_manifest(config.index_dir)
    check(manifest, config)
    embed_model = embed_model or embedding.load(config)
    folder = config.index_dir
    try:
        store = FaissVectorStore.from_persist_dir(str(folder))
        storage = StorageContext.from_defaults(vector_store=store, persist_dir=str(folder))
        vector_index = load_index_from_storage(storage, embed_model=embed_model)
        by_vector = vector_index.index_struct.nodes_dict  # FAISS row -> node id, in build order
        nodes = storage.docstore.get_nodes([by_vector[k] for k in sorted(by_vector, key=int)])
        chunks = [_chunk(n) for n in nodes]
        lexical = bm25s.BM25.load(str(folder / LEXICAL))
        sentence_vectors = np.load(folder / SENTENCES)
        terms = {k: tuple(v) for k, v in json.loads((folder / GLOSSARY).read_text(encoding="utf-8")).items()}
        spans = [tuple(s) for s in manifest["sentence_spans"]]
    except AssistantError:
        raise
    except Exception as error:  # any unreadable part: FAISS, JSON, numpy or BM25 files
        raise IndexCorruptError(f"The index in {folder} is damaged ({type(error).__name__}: "
                                f"{str(error)[:200]}): run `assistant index` to rebuild it.") from None
    if (store._faiss_index.d != manifest["dimension"] or store._faiss_index.ntotal != len(chunks)
            or len(chunks) != manifest["chunks"] or sentence_vectors.shape != (len(spans), manifest["dimension"])):
        raise IndexCorruptError(f"The index in {folder} is inconsistent (vector and chunk counts differ): "
                                "run `assistant index` to rebuild it.")
    if len(embed_model.get_query_embedding("dimension probe")) != manifest["dimension"]:
        raise IndexMismatchError(f"The embedding model's dimension differs from the index's "
                                 f"({manifest['dimension']}): run `assistant index` to rebuild it.")
    return Index(chunks, vector_index, lexical, spans, sentence_vectors, terms, manifest, embed_model)


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
