"""Optional LLM answers: numbered passages in, a cited answer out, every marker checked against them."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from dataclasses import replace

import numpy as np

from assistant.answering import PHRASES, Answerer, citation_for, translation_of
from assistant.config import Config
from assistant.errors import AssistantError
from assistant.types import Answer, Citation, Hit, Turn, as_turns

# The whole prompt, in one place.
SYSTEM_PROMPT = """You answer questions about documents on Latin American regional integration.
Rules:
- Use only the numbered passages below. Do not use anything else you know.
- Answer in the language of the question ({language}), briefly.
- After every sentence or claim, cite the passage it comes from as [n], e.g. [2].
- If the passages do not contain the answer, reply exactly: {refusal}"""

USER_PROMPT = """Passages:
{passages}

Question: {question}"""

# llama-index's condense-question prompt (CondenseQuestionChatEngine), used to make a follow-up standalone.
CONDENSE_PROMPT = """Given a conversation (between Human and Assistant) and a follow up message from Human, \
rewrite the message to be a standalone question that captures all relevant context from the conversation. \
Keep the language of the follow up message. Reply with the question only.

<Chat History>
{chat_history}

<Follow Up Message>
{question}

<Standalone question>
"""

log = logging.getLogger(__name__)
LANGUAGES = {"th": "Thai", "en": "English"}
NOTICE = {
    "th": "ไม่สามารถใช้โมเดลภาษาได้ ({reason}) จึงแสดงคำตอบที่ยกจากเอกสารแทน",
    "en": "The language model was not available ({reason}); showing the answer quoted from the documents.",
}
_MARKER = re.compile(r"\[(\d{1,3})\]")


def make_llm(config: Config):
    """The llama-index client for the configured server; no retries, so a fault surfaces within the timeout."""
    if config.llm == "openai":
        from llama_index.llms.openai_like import OpenAILike

        return OpenAILike(
            model=config.llm_model,
            api_base=config.llm_base_url,
            api_key=config.llm_api_key or "not-needed",
            timeout=config.llm_timeout_s,
            max_retries=0,
            is_chat_model=True,
            temperature=0.1,
        )
    if config.llm == "ollama":
        from llama_index.llms.ollama import Ollama

        # A known context window saves a /api/show request before every answer.
        return Ollama(
            model=config.llm_model,
            base_url=config.llm_base_url,
            request_timeout=config.llm_timeout_s,
            temperature=0.1,
            context_window=8192,
        )
    raise AssistantError(f"No LLM is configured (ASSISTANT_LLM={config.llm}).")


def messages(question: str, language: str, hits: list[Hit], index=None):
    """The prompt: each passage numbered, in Thai and, where the document has one, its English rendering."""
    from llama_index.core.llms import ChatMessage

    def passage(n: int, hit: Hit) -> str:
        rendering = index.rendering(hit.chunk) if index is not None else None
        english = rendering.passage(hit.chunk.sentences) if rendering else None
        return f"[{n}] ({hit.chunk.title}) {hit.chunk.text}" + (f"\n[{n}] (English) {english}" if english else "")

    passages = "\n\n".join(passage(n, h) for n, h in enumerate(hits, start=1))
    return [
        ChatMessage(
            role="system",
            content=SYSTEM_PROMPT.format(language=LANGUAGES[language], refusal=PHRASES[language]["refusal"]),
        ),
        ChatMessage(role="user", content=USER_PROMPT.format(passages=passages, question=question)),
    ]


def check_markers(text: str, passages: int) -> tuple[str, list[int], list[int]]:
    """Remove markers that name no given passage; returns (text, valid markers, removed markers)."""
    valid, removed = [], []

    def keep(match: re.Match) -> str:
        n = int(match.group(1))
        (valid if 1 <= n <= passages else removed).append(n)
        return match.group(0) if 1 <= n <= passages else ""

    cleaned = _MARKER.sub(keep, text)
    cleaned = re.sub(r"[ \t]+([.,;:!?])", r"\1", re.sub(r"[ \t]{2,}", " ", cleaned)).strip()
    return cleaned, sorted(set(valid)), removed


class LLMAnswerer:
    """Retrieval as in extractive mode, then the LLM writes the answer; the extractive answer is the
    fallback for every fault and for an answer that cites nothing it was given."""

    def __init__(self, extractive: Answerer, config: Config, llm=None):
        self.extractive = extractive
        self.config = config
        self.llm = llm or make_llm(config)

    @property
    def retriever(self):
        return self.extractive.retriever

    def use(self, index) -> None:
        self.extractive.use(index)

    def answer(self, question: str, history=(), top_k: int | None = None, answer_language: str = "auto") -> Answer:
        final = None
        for event in self.stream(question, history, top_k, answer_language):
            if isinstance(event, Answer):
                final = event
        return final

    def stream(
        self, question: str, history=(), top_k: int | None = None, answer_language: str = "auto"
    ) -> Iterator[str | Answer]:
        """Text deltas as the LLM writes them, then the checked Answer (always last)."""
        history = as_turns(history)
        started = time.perf_counter()
        retriever = self.retriever  # one index for the whole answer, even if a new one is swapped in
        standalone = self._condense(question, history)
        # Retrieval, refusal and the fallback answer come from the extractive path.
        base = self.extractive.answer(
            standalone if standalone else question, () if standalone else history, top_k, answer_language
        )
        base = replace(base, question=question)
        mode = {"mode": self.config.llm, "model": self.config.llm_model}
        if base.refused:
            yield replace(base, generation={**mode, "status": "refused"})
            return
        hits = list(base.hits)
        parts: list[str] = []
        try:
            for chunk in self.llm.stream_chat(messages(question, base.answer_language, hits, retriever.index)):
                delta = chunk.delta or ""
                if delta:
                    parts.append(delta)
                    yield delta
        except Exception as error:  # any client, HTTP, timeout or parsing fault: fall back
            log.warning(
                "LLM answer failed (%s: %s); falling back to the extractive answer",
                type(error).__name__,
                str(error)[:200],
            )
            yield self._fallback(base, mode, _reason(error), started)
            return
        text, valid, removed = check_markers("".join(parts), len(hits))
        if not text:
            yield self._fallback(base, mode, "empty response", started)
            return
        if not valid:
            if PHRASES[base.answer_language]["refusal"].lower() in text.lower():
                yield replace(
                    base,
                    answer=PHRASES[base.answer_language]["refusal"],
                    refused=True,
                    citations=(),
                    short_answer=None,
                    refusal_reason="the language model found no answer",
                    generation={**mode, "status": "refused"},
                )
                return
            yield self._fallback(base, mode, "no valid citation", started, removed)
            return
        vector = retriever.query(base.retrieval_query).vector
        citations = tuple(self._citation(retriever.index, n, hits[n - 1], vector) for n in valid)
        timings = {**base.timings_ms, "total": (time.perf_counter() - started) * 1e3}
        yield replace(
            base,
            answer=text,
            citations=citations,
            refused=False,
            timings_ms=timings,
            short_answer=None,
            generation={**mode, "status": "verified", "removed_markers": removed},
        )

    def _condense(self, question: str, history: tuple[Turn, ...]) -> str | None:
        """The question made standalone by the LLM, as llama-index's condense-question chat engine does
        for every turn with history; None (no history, or a fault) keeps the extractive heuristic."""
        if not history:
            return None
        from llama_index.core.llms import ChatMessage

        transcript = "\n".join(f"{'Human' if t.role == 'user' else 'Assistant'}: {t.content}" for t in history[-6:])
        try:
            reply = self.llm.chat(
                [ChatMessage(role="user", content=CONDENSE_PROMPT.format(chat_history=transcript, question=question))]
            )
            text = (reply.message.content or "").strip()
        except Exception as error:
            log.warning(
                "LLM could not condense the follow-up (%s); retrieving with the conversation instead",
                type(error).__name__,
            )
            return None
        return text if 0 < len(text) <= self.config.max_question_chars else None

    def _citation(self, index, n: int, hit: Hit, vector) -> Citation:
        """Citation n for the passage the LLM cited; its sentence is the passage's closest to the question."""
        chunk = hit.chunk
        span = chunk.sentences[int(np.argmax(index.sentence_scores(chunk, vector)))]
        return citation_for(chunk, n, span, hit.dense_score, translation_of(index, chunk, span))

    def _fallback(self, base: Answer, mode: dict, reason: str, started: float, removed=()) -> Answer:
        notice = NOTICE[base.answer_language].format(reason=reason)
        timings = {**base.timings_ms, "total": (time.perf_counter() - started) * 1e3}
        return replace(
            base,
            timings_ms=timings,
            generation={
                **mode,
                "status": "fallback",
                "notice": notice,
                "reason": reason,
                "removed_markers": list(removed),
            },
        )


def _reason(error: Exception) -> str:
    name = type(error).__name__
    if "Timeout" in name:
        return "timed out"
    if "Connect" in name or isinstance(error, ConnectionError):
        return "cannot connect"
    status = getattr(error, "status_code", None) or getattr(getattr(error, "response", None), "status_code", None)
    if status:
        return f"HTTP {status}"
    return f"{name}"
