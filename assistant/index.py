"""The on-disk index: FAISS through llama-index, the passages, BM25, sentence vectors, a manifest."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from assistant import chunking, corpus, embedding, extraction, translation, vector_cache
from assistant.config import Config
from assistant.errors import (
    AssistantError,
    EmptyCorpusError,
    IndexCorruptError,
    IndexMismatchError,
    IndexMissingError,
    IndexStaleError,
)
from assistant.thai import english_tokens, lexical_tokens
from assistant.types import Chunk, Document

# 2: passages as arrays over the documents' text, sentence vectors in float16 by distinct text.
# 3: the manifest records every file's size and SHA-256, checked on load; English renderings indexed.
# 4: English number words as digits in the English BM25 ("four" meets "4").
# 5: English sentence vectors only for rendered sentences, with a row map (a corpus mostly without
#    renderings held a zero vector per sentence: 122 MB at 100,000 passages).
# 6: English words lemmatized (simplemma) before stemming ("withdrew" meets "withdraw").
# 7: the glossary's notes kept with its names (who holds which role where).
# 8: English sentences embedded after their document's title; English stop words (and "up") after lemmas too.
# 9: the glossary rows that state a fact are passages (chunking 3).
# 10: every glossary row is (chunking 4).
FORMAT_VERSION = 10
MANIFEST = "manifest.json"
VECTORS = "vectors.faiss"
DOCUMENTS = "documents.json"
CHUNKS = "chunks.npz"
SENTENCES = "sentences.npy"
LEXICAL = "bm25"
GLOSSARY = "glossary.json"
ENTITIES = "entities.json"  # the glossary's names with their kind (country, person, ...), for short answers
# The English side: renderings, passage vectors (rows -> chunk numbers), sentence vectors, BM25.
ENGLISH = "english.json"
VECTORS_EN = "vectors-en.faiss"
ROWS_EN = "rows-en.npy"
SENTENCES_EN = "sentences-en.npy"
SENTENCE_ROWS_EN = "sentence-rows-en.npy"  # Thai sentence row -> row of SENTENCES_EN, or -1
LEXICAL_EN = "bm25-en"


class Chunks(Sequence):
    """The passages of an index, made on demand from arrays over the documents' text.

    A passage is a span of its document, so the text is held once; 100k Chunk objects with their own
    text and sentence tuples would take several hundred MB.
    """

    FIELDS = (
        "doc",
        "number",
        "paragraph",
        "start",
        "end",
        "sentence_offsets",
        "sentence_start",
        "sentence_end",
        "sentence_row",
    )

    def __init__(self, documents: list[dict], arrays: dict[str, np.ndarray]):
        self.documents = documents
        self.arrays = {name: np.asarray(arrays[name]) for name in self.FIELDS}
        self._positions: dict[str, int] | None = None  # doc_id -> its row in `documents`, made on first use
        # The glossary's passages (its rows that state a fact): quoted, never searched for (`Retriever.search`).
        self.glossary_docs = {d["doc_id"] for d in documents if d.get("role") == "glossary"}
        self.glossary = np.isin(
            self.arrays["doc"], [i for i, d in enumerate(documents) if d["doc_id"] in self.glossary_docs]
        )

    @classmethod
    def from_chunks(cls, chunks: list[Chunk], documents: dict[str, Document], sentence_row: dict[str, int]) -> Chunks:
        order = list(dict.fromkeys(c.doc_id for c in chunks))
        position = {d: i for i, d in enumerate(order)}
        docs = [
            {
                "doc_id": d,
                "source": documents[d].source,
                "title": documents[d].title,
                "text": documents[d].text,
                **({"role": "glossary"} if documents[d].is_glossary else {}),
            }
            for d in order
        ]
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
        return cls(
            docs, {k: np.asarray(v, dtype=np.int64 if k == "sentence_offsets" else np.int32) for k, v in arrays.items()}
        )

    def __len__(self) -> int:
        return len(self.arrays["doc"])

    def __getitem__(self, i: int) -> Chunk:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        a = self.arrays
        doc = self.documents[a["doc"][i]]
        lo, hi = a["sentence_offsets"][i], a["sentence_offsets"][i + 1]
        start, end = int(a["start"][i]), int(a["end"][i])
        return Chunk(
            chunk_id=f"{doc['doc_id']}#{a['number'][i]}",
            doc_id=doc["doc_id"],
            source=doc["source"],
            title=doc["title"],
            paragraph=int(a["paragraph"][i]),
            start=start,
            end=end,
            text=doc["text"][start:end],
            sentences=tuple(zip(a["sentence_start"][lo:hi].tolist(), a["sentence_end"][lo:hi].tolist())),
            sentence_rows=tuple(a["sentence_row"][lo:hi].tolist()),
        )

    def neighbour(self, chunk: Chunk, step: int) -> Chunk | None:
        """The passage after (step 1) or before (step -1) this one in its document, or None; neighbours
        share a sentence."""
        if self._positions is None:
            self._positions = {d["doc_id"]: i for i, d in enumerate(self.documents)}
        number = int(chunk.chunk_id.rsplit("#", 1)[1]) + step
        a = self.arrays
        rows = np.flatnonzero((a["doc"] == self._positions[chunk.doc_id]) & (a["number"] == number))
        return self[int(rows[0])] if len(rows) else None

    def save(self, folder: Path) -> None:
        (folder / DOCUMENTS).write_text(json.dumps(self.documents, ensure_ascii=False), encoding="utf-8")
        np.savez(folder / CHUNKS, **self.arrays)

    @classmethod
    def load(cls, folder: Path) -> Chunks:
        documents = json.loads((folder / DOCUMENTS).read_text(encoding="utf-8"))
        with np.load(folder / CHUNKS, allow_pickle=False) as arrays:
            return cls(documents, {name: arrays[name] for name in cls.FIELDS})


@dataclass
class Index:
    """Everything retrieval needs, loaded once."""

    chunks: Chunks
    vector_store: object  # llama_index.vector_stores.faiss.FaissVectorStore, row i = chunks[i]
    lexical: object  # bm25s.BM25 over `chunks`, in the same order
    sentence_vectors: np.ndarray  # float16; rows are Chunk.sentence_rows
    glossary: dict[str, tuple[str, ...]]
    manifest: dict
    embed_model: object
    disk: tuple = ()  # `disk_state` of the folder when it was loaded and verified
    english: English | None = None  # the renderings' side, when any document has one
    entities: extraction.Entities = field(default_factory=extraction.Entities)  # the glossary's names

    def sentence_scores(self, chunk: Chunk, vector: np.ndarray, lang: str = "th") -> np.ndarray:
        """Cosine of each of the passage's sentences with a (query) vector; with `lang="en"`, the best
        of the Thai sentence's and its English rendering's."""
        rows = list(chunk.sentence_rows)
        scores = self.sentence_vectors[rows].astype(np.float32) @ vector
        if lang == "en" and self.english is not None:
            english = self.english.sentence_rows[rows]
            rendered = english >= 0
            scores[rendered] = np.maximum(
                scores[rendered], self.english.sentence_vectors[english[rendered]].astype(np.float32) @ vector
            )
        return scores

    def rendering(self, chunk: Chunk) -> translation.Rendering | None:
        return self.english.renderings.get(chunk.doc_id) if self.english is not None else None

    def idf(self, word: str, english: bool = False) -> float:
        """How rare a word is among the passages (a Thai word) or their renderings (an English stem):
        log(1 + N / (1 + document frequency))."""
        df, n = self._frequency(word, english)
        return math.log(1 + n / (1 + df))

    def common(self, word: str, english: bool = False) -> bool:
        """Whether a word is in more than half of the passages (or renderings): it tells none apart."""
        df, n = self._frequency(word, english)
        return df > n / 2

    def _frequency(self, word: str, english: bool) -> tuple[int, int]:
        """(passages holding the word, passages), read from the BM25 index's postings."""
        bm25 = self.english.lexical if english and self.english is not None else self.lexical
        column = bm25.vocab_dict.get(word)
        postings = bm25.scores["indptr"]  # bm25s keeps one column of scores per word (CSC)
        df = 0 if column is None else int(postings[column + 1] - postings[column])
        return df, bm25.scores["num_docs"]


@dataclass
class English:
    """English renderings indexed beside the Thai: passage rows map to chunk numbers."""

    renderings: dict  # doc_id -> translation.Rendering
    vector_store: object  # FaissVectorStore of the English passages
    rows: np.ndarray  # English passage row -> chunk number
    lexical: object  # bm25s.BM25 over english_tokens of the English passages, same rows
    sentence_vectors: np.ndarray  # float16, one row per rendered sentence
    sentence_rows: np.ndarray  # Thai sentence row -> row of sentence_vectors, or -1 (no rendering)


def chunk_params(config: Config) -> chunking.ChunkParams:
    return chunking.ChunkParams(config.chunk_min_chars, config.chunk_max_chars, config.chunk_overlap_sentences)


def prompts(config: Config) -> dict:
    """The model's prompts: passages embedded with another passage prompt belong to another index."""
    return {"query": config.query_prompt, "passage": config.passage_prompt}


def hnsw_params(config: Config) -> dict | None:
    """What shapes an HNSW graph (None for exact search): another value needs another build."""
    if config.vector_index != "hnsw":
        return None
    return {"m": config.hnsw_m, "ef_construction": config.hnsw_ef_construction}


def new_faiss_index(config: Config, dimension: int):
    """An empty FAISS index of `config.vector_index`'s type for cosine similarity (inner product of
    normalised vectors)."""
    import faiss

    if config.vector_index == "flat":
        return faiss.IndexFlatIP(dimension)
    index = faiss.IndexHNSWFlat(dimension, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = config.hnsw_ef_construction
    index.hnsw.efSearch = config.hnsw_ef_search
    return index


def _nodes(chunks: list[Chunk]):
    from llama_index.core.schema import TextNode

    nodes = []
    for c in chunks:
        metadata = {
            "doc_id": c.doc_id,
            "source": c.source,
            "title": c.title,
            "paragraph": c.paragraph,
            "start": c.start,
            "end": c.end,
        }
        keys = list(metadata)
        # Only the passage text is embedded: metadata in front of it lowered retrieval quality.
        nodes.append(
            TextNode(
                id_=c.chunk_id,
                text=c.text,
                metadata=metadata,
                excluded_embed_metadata_keys=keys,
                excluded_llm_metadata_keys=keys,
            )
        )
    return nodes


def _embedded_text(node) -> str:
    """What llama-index embeds (and keys the vector cache by) for a node."""
    from llama_index.core.schema import MetadataMode

    return node.get_content(metadata_mode=MetadataMode.EMBED)


class _EmbeddingBar:
    """One progress bar for the texts an index build embeds: passages and sentences, Thai and English.

    Only texts the vector cache does not hold count, and the bar opens when the model embeds the first
    of them, so a build served from the cache shows none (a first build of the corpus shows "Embedding
    38 passages" over its 210 texts).
    """

    def __init__(self, show: bool, cache: Path | None, passages: list[str], count: int):
        self.show, self.cache, self.total, self.bar = show, cache, 0, None
        new = self.add(passages)
        self.label = f"Embedding {count} passages" if new >= count else f"Embedding {new} of {count} passages"

    def add(self, texts: list[str]) -> int:
        """Count the texts of `texts` that will be embedded (not in the cache); returns how many."""
        new = len(set(texts))
        if self.show and self.cache is not None and self.cache.is_file():
            try:
                held = vector_cache.VectorCache(self.cache)
                try:
                    new = sum(held.get(t, collection="embeddings") is None for t in set(texts))
                finally:
                    held.close()
            except Exception:  # the build reports a damaged cache itself; this is only a count
                pass
        self.total += new
        if self.bar is not None:
            self.bar.total = self.total
            self.bar.refresh()
        return new

    def update(self, n: int) -> None:
        if not self.show:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(
                total=max(self.total, n),
                desc=self.label,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n}/{total} texts, {elapsed}",
            )
        if self.bar.n + n > self.bar.total:
            self.bar.total = self.bar.n + n
        self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            # Texts counted twice (a sentence in two documents) were embedded once: end at 100%.
            self.bar.total = self.bar.n
            self.bar.close()
            self.bar = None


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
    faiss_index = new_faiss_index(config, dimension)

    documents = {d.doc_id: d for d in loaded.documents}
    texts = sorted({documents[c.doc_id].text[a:b] for c in chunks for a, b in c.sentences})
    cache = embedding.cache_path(config) if config.vector_cache else None
    nodes = _nodes(chunks)
    renderings, problems = translation.load(config.corpus_dir, loaded.documents)
    english = _english_plan(chunks, documents, renderings)
    bar = _EmbeddingBar(progress, cache, [_embedded_text(n) for n in nodes], len(chunks))
    bar.add(texts + english["passages"] + list(english["english_of"].values()))

    config.index_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned(config.index_dir)
    staging = Path(
        tempfile.mkdtemp(prefix=f".{config.index_dir.name}-building-{os.getpid()}-", dir=config.index_dir.parent)
    )
    try:
        # llama-index embeds the passages and adds them to FAISS in order: FAISS row i is chunks[i].
        store = FaissVectorStore(faiss_index=faiss_index)
        with vector_cache.passage_cache(embed_model, cache), embedding.counting(embed_model, bar.update):
            VectorStoreIndex(
                nodes,
                storage_context=StorageContext.from_defaults(vector_store=store),
                embed_model=embed_model,
                show_progress=False,
            )
            vectors = embedding.encode(embed_model, texts, query=False)
        store.persist(str(staging / VECTORS))
        np.save(staging / SENTENCES, vectors.astype(np.float16))
        Chunks.from_chunks(chunks, documents, {t: i for i, t in enumerate(texts)}).save(staging)

        lexical = bm25s.BM25()
        # The glossary's rows are found by the names a question holds (`Retriever.glossary_rows`) and by
        # dense search, not by their words: as BM25 passages their bare names took rank 1 from the passage
        # stating a fact (dev hit@1 0.914 -> 0.895). (`chunking.split` puts them last, so BM25 row i is
        # still chunks[i].)
        lexical.index(
            [lexical_tokens(c.text) for c in chunks if not documents[c.doc_id].is_glossary], show_progress=False
        )
        lexical.save(str(staging / LEXICAL))
        terms = corpus.glossary(loaded.documents)
        (staging / GLOSSARY).write_text(json.dumps(terms, ensure_ascii=False, indent=1), encoding="utf-8")
        (staging / ENTITIES).write_text(
            json.dumps(corpus.glossary_rows(loaded.documents), ensure_ascii=False), encoding="utf-8"
        )
        with embedding.counting(embed_model, bar.update):
            english = _build_english(staging, chunks, documents, english, texts, embed_model, cache, config)

        manifest = {
            "format_version": FORMAT_VERSION,
            "embed_model": embedding.model_id(config),
            # How the vectors were computed (runtime, precision, the ONNX file's hash): for the record;
            # `embed_model` is what must match, since equal ids give equal vectors.
            "embedding": embedding.describe(embed_model),
            "dimension": dimension,
            "vector_index": config.vector_index,
            "hnsw": hnsw_params(config),
            "prompts": prompts(config),
            "chunking": chunk_params(config).as_dict(),
            "corpus_hash": corpus_hash,
            "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "chunks": len(chunks),
            "sentences": len(texts),
            "documents": [d.source for d in loaded.documents],
            "problems": [str(p) for p in (*loaded.problems, *problems, *english["problems"])],
            "english": {"documents": english["documents"], "passages": english["passages"]},
            "files": checksums(staging),
        }
        # The manifest is written last: a folder without one is never mistaken for an index.
        (staging / MANIFEST).write_text(json.dumps(manifest, ensure_ascii=False, indent=1), encoding="utf-8")
        _swap_in(staging, config.index_dir)
    finally:
        bar.close()
        shutil.rmtree(staging, ignore_errors=True)
    return load(config, embed_model)


def _english_plan(chunks: list[Chunk], documents: dict, renderings: dict) -> dict:
    """What the English side of the index holds: the renderings that cover every sentence the chunker
    cuts (one that lacks a sentence, as when the chunking changed, is reported and left out), the
    chunks they render, their English passages and each Thai sentence's English."""
    problems = []
    for doc_id, rendering in list(renderings.items()):
        missing = translation.coverage(rendering, [s for c in chunks if c.doc_id == doc_id for s in c.sentences])
        if missing:
            source = documents[doc_id].source
            problems.append(
                f"{translation.path_for(Path(source)).as_posix()}: stale English rendering: no "
                f"sentence for {len(missing)} span(s) the chunker cuts (first {missing[0]}); not used"
            )
            del renderings[doc_id]
    rows = [i for i, c in enumerate(chunks) if c.doc_id in renderings]
    passages = [renderings[chunks[i].doc_id].passage(chunks[i].sentences) for i in rows]
    # Thai sentence text -> its English (the first rendering that has it) after the document's title, so
    # a note's "At its founding it had 12 members" is about UNASUR when its title says so. On dev English
    # hit@1 0.879 -> 0.903 and answer_match 0.885 -> 0.903; titled Thai sentences lost Thai hit@1 there
    # (0.917 -> 0.905), so the Thai vectors stay the sentence alone.
    english_of = {}
    for c in chunks:
        rendering = renderings.get(c.doc_id)
        for a, b in c.sentences if rendering else ():
            english_of.setdefault(documents[c.doc_id].text[a:b], f"{rendering.title}: {rendering.sentences[(a, b)]}")
    return {
        "renderings": renderings,
        "problems": problems,
        "rows": rows,
        "passages": passages,
        "english_of": english_of,
    }


def _build_english(
    staging: Path,
    chunks: list[Chunk],
    documents: dict,
    plan: dict,
    texts: list[str],
    embed_model,
    cache,
    config: Config,
) -> dict:
    """Index the English renderings (`_english_plan`): passage vectors and BM25 by chunk, sentence
    vectors by Thai row."""
    import bm25s
    from llama_index.core import StorageContext, VectorStoreIndex
    from llama_index.core.schema import TextNode
    from llama_index.vector_stores.faiss import FaissVectorStore

    renderings, rows, passages, english_of = plan["renderings"], plan["rows"], plan["passages"], plan["english_of"]
    out = {
        "documents": sorted(documents[d].source for d in renderings),
        "passages": len(rows),
        "problems": plan["problems"],
    }
    if not rows:
        return out
    dimension = len(embed_model.get_query_embedding("probe"))
    # Exact search: the English passages are one per Thai passage of a rendered document, never many.
    store = FaissVectorStore(faiss_index=new_faiss_index(config.with_(vector_index="flat"), dimension))
    nodes = [TextNode(id_=f"{chunks[i].chunk_id}@en", text=t) for i, t in zip(rows, passages)]
    present = [t for t in texts if t in english_of]
    with vector_cache.passage_cache(embed_model, cache):
        VectorStoreIndex(
            nodes,
            storage_context=StorageContext.from_defaults(vector_store=store),
            embed_model=embed_model,
            show_progress=False,
        )
        vectors = embedding.encode(embed_model, [english_of[t] for t in present], query=False)
    sentence_rows = np.full(len(texts), -1, dtype=np.int32)
    position = {t: i for i, t in enumerate(texts)}
    sentence_rows[[position[t] for t in present]] = np.arange(len(present), dtype=np.int32)
    store.persist(str(staging / VECTORS_EN))
    np.save(staging / ROWS_EN, np.asarray(rows, dtype=np.int32))
    np.save(staging / SENTENCES_EN, vectors.astype(np.float16))
    np.save(staging / SENTENCE_ROWS_EN, sentence_rows)
    lexical = bm25s.BM25()
    lexical.index([english_tokens(t) for t in passages], show_progress=False)
    lexical.save(str(staging / LEXICAL_EN))
    saved = {
        d: {"title": r.title, "sentences": [[a, b, en] for (a, b), en in sorted(r.sentences.items())]}
        for d, r in renderings.items()
    }
    (staging / ENGLISH).write_text(json.dumps(saved, ensure_ascii=False), encoding="utf-8")
    return out


def _load_english(folder: Path, manifest: dict, chunks: Chunks) -> English | None:
    import bm25s
    from llama_index.vector_stores.faiss import FaissVectorStore

    if not manifest.get("english", {}).get("passages"):
        return None
    saved = json.loads((folder / ENGLISH).read_text(encoding="utf-8"))
    renderings = {
        d: translation.Rendering(d, r["title"], {(a, b): en for a, b, en in r["sentences"]}) for d, r in saved.items()
    }
    store = FaissVectorStore.from_persist_path(str(folder / VECTORS_EN))
    rows = np.load(folder / ROWS_EN)
    lexical = bm25s.BM25.load(str(folder / LEXICAL_EN), mmap=False, show_progress=False)
    sentence_vectors = np.load(folder / SENTENCES_EN)
    sentence_rows = np.load(folder / SENTENCE_ROWS_EN)
    if (
        store._faiss_index.ntotal != len(rows)
        or (len(rows) and rows.max() >= len(chunks))
        or len(sentence_rows) != manifest["sentences"]
        or (len(sentence_rows) and sentence_rows.max() >= len(sentence_vectors))
    ):
        raise IndexCorruptError(
            f"The English side of the index in {folder} is inconsistent: run `assistant index` to rebuild it."
        )
    return English(renderings, store, rows, lexical, sentence_vectors, sentence_rows)


def checksums(folder: Path) -> dict[str, dict]:
    """Size and SHA-256 of every file below the folder, by relative path (the manifest's `files`)."""
    out = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST):
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        out[path.relative_to(folder).as_posix()] = {"bytes": path.stat().st_size, "sha256": digest.hexdigest()}
    return out


def verify(folder: Path, manifest: dict) -> None:
    """Raise IndexCorruptError unless every file the manifest lists is there, whole and unchanged."""
    recorded = manifest.get("files")
    if not isinstance(recorded, dict) or not recorded:
        raise IndexCorruptError(f"The index manifest in {folder} lists no files: run `assistant index` to rebuild it.")
    for name, expected in recorded.items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != expected.get("bytes"):
            raise IndexCorruptError(
                f"The index file {path} is missing or has another size than when it was "
                "built: run `assistant index` to rebuild it."
            )
    actual = checksums(folder)
    for name, expected in recorded.items():
        if actual.get(name, {}).get("sha256") != expected.get("sha256"):
            raise IndexCorruptError(
                f"The index file {folder / name} changed since it was built (checksum "
                "differs): run `assistant index` to rebuild it."
            )


def disk_state(folder: Path) -> tuple:
    """A cheap signature of the index folder (each file's name, size and modification time): when it
    changes, the folder is worth verifying again."""
    try:
        return tuple(
            sorted(
                (p.relative_to(folder).as_posix(), p.stat().st_size, p.stat().st_mtime_ns)
                for p in folder.rglob("*")
                if p.is_file()
            )
        )
    except OSError:  # a file vanished while we looked: a swap is under way
        return ()


def remove_abandoned(target: Path) -> None:
    """Delete staging and swapped-out folders left by builds whose process has died (killed builds)."""
    for folder in target.parent.glob(f".{target.name}-*-*"):
        kind, _, rest = folder.name[len(target.name) + 2 :].partition("-")
        pid = rest.split("-", 1)[0]
        if kind in {"building", "old"} and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _swap_in(staging: Path, target: Path) -> None:
    """Publish the staged folder under the target's name.

    A running server holds its index in memory and polls the manifest, so it never reads a half-swapped
    folder: it sees either the old manifest, none (and keeps what it has), or the new one.
    """
    old = None
    if target.exists():
        old = target.parent / f".{target.name}-old-{os.getpid()}-{staging.name}"
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
        raise IndexCorruptError(
            f"The index manifest {path} is unreadable ({error}): run `assistant index` to rebuild it."
        ) from None
    return manifest


def check(manifest: dict, config: Config) -> None:
    """Raise if the index does not belong to this configuration and corpus."""
    model = embedding.model_id(config)
    if manifest["embed_model"] != model:
        raise IndexMismatchError(
            f"The index in {config.index_dir} was built with embedding model {manifest['embed_model']!r} "
            f"but the configured model is {model!r}: run `assistant index` to rebuild it, "
            "or set ASSISTANT_EMBED_MODEL back."
        )
    stale = (
        manifest["format_version"] != FORMAT_VERSION
        or manifest.get("chunking") != chunk_params(config).as_dict()
        or manifest.get("vector_index") != config.vector_index
        or manifest.get("hnsw") != hnsw_params(config)
        or manifest.get("prompts") != prompts(config)
        or manifest["corpus_hash"] != corpus.content_hash(config.corpus_dir)
    )
    if stale:
        raise IndexStaleError(
            f"The corpus in {config.corpus_dir}, the chunking settings, the model's prompts "
            f"or the vector index settings changed since the index in {config.index_dir} was "
            "built: run `assistant index`."
        )


def load(config: Config, embed_model=None) -> Index:
    """Load and verify the index; the embedding model must match the one that built it."""
    import bm25s
    from llama_index.vector_stores.faiss import FaissVectorStore

    manifest = read_manifest(config.index_dir)
    check(manifest, config)
    folder = config.index_dir
    disk = disk_state(folder)
    verify(folder, manifest)
    embed_model = embed_model or embedding.load(config)
    try:
        store = FaissVectorStore.from_persist_path(str(folder / VECTORS))
        if config.vector_index == "hnsw":  # a query-time setting, not the built index's
            store._faiss_index.hnsw.efSearch = config.hnsw_ef_search
        chunks = Chunks.load(folder)
        # Read into memory, never memory-mapped: a mapped file truncated or rewritten in place under a
        # running server kills it with SIGBUS on the next question (measured: `truncate -s 128` on
        # sentences.npy). Whatever happens to the files, the loaded index stays whole.
        lexical = bm25s.BM25.load(str(folder / LEXICAL), mmap=False, show_progress=False)
        sentence_vectors = np.load(folder / SENTENCES)
        terms = {k: tuple(v) for k, v in json.loads((folder / GLOSSARY).read_text(encoding="utf-8")).items()}
        english = _load_english(folder, manifest, chunks)
        entities = extraction.Entities(json.loads((folder / ENTITIES).read_text(encoding="utf-8")))
    except AssistantError:
        raise
    except Exception as error:  # any unreadable part: FAISS, JSON, numpy or BM25 files
        raise IndexCorruptError(
            f"The index in {folder} is damaged ({type(error).__name__}: "
            f"{str(error)[:200]}): run `assistant index` to rebuild it."
        ) from None
    rows = chunks.arrays["sentence_row"]
    lengths = np.array([len(d["text"]) for d in chunks.documents])
    if len(chunks) and (chunks.arrays["end"] > lengths[chunks.arrays["doc"]]).any():
        raise IndexCorruptError(
            f"The index in {folder} has passages past the end of their document: run `assistant index` to rebuild it."
        )
    if (
        store._faiss_index.d != manifest["dimension"]
        or store._faiss_index.ntotal != len(chunks)
        or len(chunks) != manifest["chunks"]
        or sentence_vectors.shape != (manifest["sentences"], manifest["dimension"])
        or (len(rows) and (rows.min() < 0 or rows.max() >= len(sentence_vectors)))
    ):
        raise IndexCorruptError(
            f"The index in {folder} is inconsistent (vector and chunk counts differ): "
            "run `assistant index` to rebuild it."
        )
    if len(embed_model.get_query_embedding("dimension probe")) != manifest["dimension"]:
        raise IndexMismatchError(
            f"The embedding model's dimension differs from the index's "
            f"({manifest['dimension']}): run `assistant index` to rebuild it."
        )
    return Index(chunks, store, lexical, sentence_vectors, terms, manifest, embed_model, disk, english, entities)


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
