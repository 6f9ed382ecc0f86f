"""Hybrid retrieval: dense FAISS search fused with BM25 over Thai words, glossary-aware."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import numpy as np

from assistant import embedding, extraction
from assistant.index import Index
from assistant.thai import english_tokens, has_thai, language, lexical_tokens
from assistant.types import Chunk, Hit

RRF_K = 60
# BM25's weight in the fusion. For English questions the lexical side only sees the glossary's Thai
# forms of the names they mention, a weaker signal: at 1.0 it cost English hit@1 against dense alone,
# at 0.6 it does not (project evaluation, 100 questions).
LEXICAL_WEIGHT = {"th": 1.0, "en": 0.6}
# English questions also search the English renderings: dense (English to English) and an English BM25
# (dictionary forms, Snowball stems). Weights in the fusion, tuned on the dev split of eval/questions.jsonl.
ENGLISH_DENSE_WEIGHT = 1.0
ENGLISH_LEXICAL_WEIGHT = 1.0
CANDIDATES = 100  # per retriever, before fusion
# Hybrid search then re-ranks the fused top RERANK_DEPTH by the evidence each passage holds:
#   fused score / the best fused score + SENTENCE_WEIGHT x its best sentence's cosine with the question
#   + COVERAGE_WEIGHT x the share of the question's words it contains, each word weighted by its IDF,
#   the document's title counted with the passage ("It has 4 members" is about the Andean Community
#   when its note's title says so).
# RRF alone ranks a passage that mentions the question's topic everywhere (a definition) over the one
# that answers it. A grid on the dev split (sentence 0–6, coverage 0–2, depth 3–20) lifted hit@1 from
# 0.827 to 0.894 (English 0.824 -> 0.863, Thai 0.830 -> 0.924); sentence 0–3 with coverage 1–2 all
# score 0.885–0.894, and of those this one gave the best answer_match downstream (0.875 against 0.837).
# + TYPE_WEIGHT if the passage's Thai text holds a span of the kind the question asks for (a
#   year for "when", a country for "which country"): "Which country pulled out of the Andean Community in
#   1976?" ranked the Andean Community's definition over its members' history. On dev, 0.1–0.7 all
#   lifted hit@1 0.894 -> 0.913 (English 0.863 -> 0.902) with nothing regressed; 0.05 half of that, 1.0
#   regressed one.
RERANK_DEPTH = 10
SENTENCE_WEIGHT = 3.0
COVERAGE_WEIGHT = 1.0
TYPE_WEIGHT = 0.3


@dataclass(frozen=True)
class Query:
    text: str
    vector: np.ndarray
    lexical_tokens: tuple[str, ...]
    english_tokens: tuple[str, ...] = ()

    @property
    def lang(self) -> str:
        return language(self.text)

    @property
    def words(self) -> set[str]:
        return content_words(self.text, self.lang)


# Words that say what kind of answer is wanted, not what it is about ("how many", "กี่ประเทศ", the "ทำ" of
# "ทำอะไร" as English "do"), or that speak of the documents themselves ("ที่เอกสารพูดถึง"): a passage or
# sentence is not asked to contain them, and the extraction module reads the kind (English as
# `english_tokens` gives them). Without "ทำ", "บริษัท ISA ของโคลอมเบียทำอะไรในเปรู" was refused for a quote
# that says "บริหารจัดการ"; on dev the document words moved one question's evidence to rank 1. "What does
# FTAA stand for?" and "ALBA ย่อมาจากอะไร" ask for a name written out, which no passage says "stands for"
# anything (on dev one such question was refused). Hedges ("roughly", "actually", "จริง ๆ", "กันแน่") say
# how the asker speaks, not what about: "Roughly how far apart are …?" got no short answer for want of
# "rough" (on dev one short answer gained, nothing lost).
QUESTION_WORDS = frozenset(
    {"กี่", "ล่ะ", "ใด", "เพราะอะไร", "บ้าง", "ทำ", "เอกสาร", "พูดถึง", "กล่าวถึง", "ย่อ"}
    | {"mani", "much", "far", "long", "kind", "mention", "stand", "acronym", "role", "play"}
    | {"จริง ๆ", "จริงๆ", "แน่", "กันแน่", "คร่าว ๆ", "คร่าวๆ"}
    | {"actual", "exact", "basic", "rough", "realli", "approxim", "precis"}
)
# Hedging phrases whose words mean something elsewhere ("Why was ALBA created in the first place?").
_HEDGES = re.compile(r"\b(?:in the first place|by the way|at all)\b", re.IGNORECASE)


def content_words(text: str, lang: str) -> set[str]:
    """Words that carry meaning: Thai words (newmm, stop words dropped) or English stems (`english_tokens`)."""
    text = _HEDGES.sub(" ", text)
    return set(lexical_tokens(text) if lang == "th" else english_tokens(text)) - QUESTION_WORDS


def covered(words: set[str], lang: str, thai: str, english: str | None) -> set[str]:
    """The words (of `content_words`) that a text holds. Thai words count when they occur in the Thai
    text, since newmm may cut the same word differently in the two ("ก่อตั้งขึ้น" and "ก่อตั้งเมื่อ");
    English stems count against the English rendering (without one, only Latin-script names the Thai
    text holds can match)."""
    if lang == "th" or not english:
        folded = thai.lower()
        return {w for w in words if w in folded}
    return words & set(english_tokens(english))


class Retriever:
    """Searches one loaded index; `mode` is 'hybrid', 'dense' or 'lexical' (the last two for comparison)."""

    def __init__(self, index: Index, mode: str = "hybrid"):
        if mode not in {"hybrid", "dense", "lexical"}:
            raise ValueError(f"unknown retrieval mode {mode!r}")
        self.index = index
        self.mode = mode
        self._phrases = sorted(index.glossary, key=len, reverse=True)
        self._rows: dict[int, list[Chunk]] | None = None  # entity row -> the glossary rows naming it
        self._own: dict[int, Chunk] = {}  # entity row -> its own glossary row

    def query(self, text: str) -> Query:
        vector = np.asarray(self.index.embed_model.get_query_embedding(text), dtype=np.float32)
        return Query(text, vector, tuple(self.lexical_query(text)), tuple(english_tokens(text)))

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
        # Dense runs in every mode: its cosine is one of the answer decision's signals. The glossary's rows
        # are among its passages (with the dev questions on glossary facts, hit@3 0.914 -> 0.934, hit@1
        # 0.843 -> 0.847), not among the lexical index's (see `index.build`).
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
        lang = language(query.text)
        weight = LEXICAL_WEIGHT[lang]
        english_dense, english_lexical = {}, {}
        english = self.index.english
        if english is not None and lang == "en":
            # The same question vector against the English renderings; a hit maps back to its chunk.
            for i, cosine in self._dense(query.vector, min(len(english.rows), candidates), english.vector_store):
                chunk = int(english.rows[i])
                english_dense.setdefault(chunk, len(english_dense))
                dense_score[chunk] = max(dense_score.get(chunk, cosine), cosine)
            if query.english_tokens:
                ranks = _top(english.lexical.get_scores(list(query.english_tokens)), candidates)
                english_lexical = {int(english.rows[i]): r for i, r in ranks.items()}
        fused = {}
        for i in set(dense_rank) | set(lexical_rank) | set(english_dense) | set(english_lexical):
            score = 0.0
            if self.mode != "lexical" and i in dense_rank:
                score += 1.0 / (RRF_K + dense_rank[i] + 1)
            if self.mode != "lexical" and i in english_dense:
                score += ENGLISH_DENSE_WEIGHT / (RRF_K + english_dense[i] + 1)
            if self.mode != "dense" and i in lexical_rank:
                score += weight / (RRF_K + lexical_rank[i] + 1)
            if self.mode != "dense" and i in english_lexical:
                score += ENGLISH_LEXICAL_WEIGHT / (RRF_K + english_lexical[i] + 1)
            if score > 0:
                fused[i] = score
        order = sorted(fused, key=lambda i: (-fused[i], dense_rank.get(i, n)))
        lap("fuse")
        if self.mode == "hybrid":
            fused.update(self._evidence(query, order[:RERANK_DEPTH], fused))
            order = sorted(order[:RERANK_DEPTH], key=lambda i: -fused[i]) + order[RERANK_DEPTH:]
        hits = [
            Hit(
                chunk=chunks[i],
                score=fused[i],
                dense_score=float(dense_score.get(i, 0.0)),
                dense_rank=dense_rank.get(i),
                lexical_rank=lexical_rank.get(i),
            )
            for i in order[:top_k]
        ]
        lap("rerank")
        return hits

    def glossary_rows(self, text: str) -> list[Hit]:
        """The glossary rows that name what a text names, in their names or their note ("เมืองหลวงของ
        ปารากวัย" is Asunción's row), as hits to quote from: the name's own row first."""
        chunks = {}
        for _, _, row in self.index.entities.find(text):
            for chunk in self._glossary().get(row, ()):
                chunks.setdefault(chunk.chunk_id, chunk)
        return [Hit(chunk, 0.0, 0.0, None, None) for chunk in chunks.values()]

    def glossary_row(self, entity: int) -> Chunk | None:
        """The glossary row of this name (`index.entities` row) itself, or None."""
        self._glossary()
        return self._own.get(entity)

    def _glossary(self) -> dict[int, list[Chunk]]:
        if self._rows is None:  # read once per index
            self._rows = {}
            for i in np.flatnonzero(self.index.chunks.glossary):
                chunk = self.index.chunks[int(i)]
                found = dict.fromkeys(row for _, _, row in self.index.entities.find(chunk.text))
                for n, row in enumerate(found):  # the first name found is the row's own: it goes first
                    named = self._rows.setdefault(row, [])
                    if n == 0:
                        named.insert(0, chunk)
                        self._own[row] = chunk  # the last such row, as it is first in named
                    else:
                        named.append(chunk)
        return self._rows

    def _evidence(self, query: Query, rows: list[int], fused: dict[int, float]) -> dict[int, float]:
        """The re-ranking score of each of these passages (see RERANK_DEPTH)."""
        if not rows:
            return {}
        index, lang, words = self.index, query.lang, query.words
        kind = extraction.expected_kind(query.text)
        asked = extraction.names_in(query.text, index.entities) if kind in extraction.TYPED_KINDS else []
        best = max(fused[i] for i in rows)
        scores = {}
        for i in rows:
            chunk = index.chunks[i]
            rendering = index.rendering(chunk) if lang == "en" else None
            passage = rendering.passage(chunk.sentences) if rendering else None
            weights = {w: index.idf(w, english=passage is not None) for w in words}
            held = covered(words, lang, f"{chunk.title} {chunk.text}", passage and f"{rendering.title} {passage}")
            coverage = sum(weights[w] for w in held) / sum(weights.values()) if words else 0.0
            sentence = float(index.sentence_scores(chunk, query.vector, lang).max())
            # The Thai text is enough: it holds every glossary name in a Thai form, and the same dates.
            typed = kind in extraction.TYPED_KINDS and bool(
                extraction.spans(chunk.text, kind, index.entities, asked, loose=True)
            )
            scores[i] = fused[i] / best + SENTENCE_WEIGHT * sentence + COVERAGE_WEIGHT * coverage + TYPE_WEIGHT * typed
        return scores

    def _dense(self, vector: np.ndarray, k: int, store=None) -> list[tuple[int, float]]:
        """(row, cosine) best first, through llama-index's FAISS vector store (the passages' by default)."""
        from llama_index.core.vector_stores.types import VectorStoreQuery

        query = VectorStoreQuery(query_embedding=vector.tolist(), similarity_top_k=k)
        result = embedding.search_beside(self.index.embed_model, (store or self.index.vector_store).query, query)
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
