"""Hybrid retrieval: dense FAISS search fused with BM25 over Thai words, glossary-aware."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import numpy as np

from assistant import embedding
from assistant.index import Index
from assistant.thai import has_thai, language, lexical_tokens
from assistant.types import Hit

RRF_K = 60
# BM25's weight in the fusion. For English questions the lexical side only sees the glossary's Thai
# forms of the names they mention, a weaker signal: at 1.0 it cost English hit@1 against dense alone,
# at 0.6 it does not (project evaluation, 100 questions).
LEXICAL_WEIGHT = {"th": 1.0, "en": 0.6}
CANDIDATES = 100  # per retriever, before fusion


@dataclass(frozen=True)
class Query:
    text: str
    vector: np.ndarray
    lexical_tokens: tuple[str, ...]


class Retriever:
    """Searches one loaded index; `mode` is 'hybrid', 'dense' or 'lexical' (the last two for comparison)."""

    def __init__(self, index: Index, mode: str = "hybrid"):
        if mode not in {"hybrid", "dense", "lexical"}:
            raise ValueError(f"unknown retrieval mode {mode!r}")
        self.index = index
        self.mode = mode
        self._phrases = sorted(index.glossary, key=len, reverse=True)

    def query(self, text: str) -> Query:
        vector = np.asarray(self.index.embed_model.get_query_embedding(text), dtype=np.float32)
        return Query(text, vector, tuple(self.lexical_query(text)))

    def lexical_query(self, text: str) -> list[str]:
        """BM25 tokens of the question plus the Thai forms of the glossary names it mentions.

        English questions about the Thai text share almost no words with it; the glossary bridges that.
        """
        tokens = lexical_tokens(text)
        lowered = text.lower()
        for phrase in self._phrases:
            if re.search(rf"(?<!\w){re.escape(phrase)}(?!\w)", lowered):
                for thai in self.index.glossary[phrase]:
                    tokens.extend(lexical_tokens(thai))
                lowered = lowered.replace(phrase, " ")
        return tokens

    def search(self, query: Query | str, top_k: int = 5, timings: dict | None = None) -> list[Hit]:
        """The top_k passages; `timings`, if given, receives the milliseconds of each stage."""
        if isinstance(query, str):
            query = self.query(query)
        clock = [time.perf_counter()]

        def lap(stage: str) -> None:
            clock.append(time.perf_counter())
            if timings is not None:
                timings[stage] = (clock[-1] - clock[-2]) * 1e3

        chunks = self.index.chunks
        n = len(chunks)
        candidates = max(CANDIDATES, top_k)
        # Dense runs in every mode: its cosine is what the answerer's refusal threshold reads.
        dense = self._dense(query.vector, min(n, candidates))
        dense_rank = {i: r for r, (i, _) in enumerate(dense)}
        dense_score = dict(dense)
        lap("dense")
        lexical_rank = {}
        # Hybrid consults BM25 only when the query has Thai words to match (its own or the glossary's).
        thai_tokens = any(has_thai(t) for t in query.lexical_tokens)
        if self.mode == "lexical" or (self.mode == "hybrid" and thai_tokens):
            lexical_rank = _top(self.index.lexical.get_scores(list(query.lexical_tokens)), candidates)
        lap("lexical")
        weight = LEXICAL_WEIGHT[language(query.text)]
        fused = {}
        for i in set(dense_rank) | set(lexical_rank):
            score = 0.0
            if self.mode != "lexical" and i in dense_rank:
                score += 1.0 / (RRF_K + dense_rank[i] + 1)
            if self.mode != "dense" and i in lexical_rank:
                score += weight / (RRF_K + lexical_rank[i] + 1)
            if score > 0:
                fused[i] = score
        order = sorted(fused, key=lambda i: (-fused[i], dense_rank.get(i, n)))[:top_k]
        hits = [Hit(chunk=chunks[i], score=fused[i], dense_score=float(dense_score.get(i, 0.0)),
                    dense_rank=dense_rank.get(i), lexical_rank=lexical_rank.get(i)) for i in order]
        lap("fuse")
        return hits

    def _dense(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        """(chunk row, cosine) best first, through llama-index's FAISS vector store."""
        from llama_index.core.vector_stores.types import VectorStoreQuery

        query = VectorStoreQuery(query_embedding=vector.tolist(), similarity_top_k=k)
        result = embedding.search_beside(self.index.embed_model, self.index.vector_store.query, query)
        return [(int(i), float(s)) for i, s in zip(result.ids, result.similarities)]


def _top(scores: np.ndarray, k: int) -> dict[int, int]:
    """Rank of the k best positive BM25 scores; ties keep passage order, as a stable sort would.

    A partial selection first: sorting every score cost milliseconds at 100k passages.
    """
    k = min(k, len(scores))
    if k == 0:
        return {}
    cut = np.partition(scores, len(scores) - k)[len(scores) - k]
    selected = np.flatnonzero(scores >= max(cut, np.finfo(scores.dtype).tiny))
    order = selected[np.lexsort((selected, -scores[selected]))][:k]
    return {int(i): r for r, i in enumerate(order)}
