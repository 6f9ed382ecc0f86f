"""A conversation: the loaded pipeline plus the turns so far, shared by the terminal and web chats."""

from __future__ import annotations

from dataclasses import dataclass, field

from assistant import embedding, index
from assistant.answering import PHRASES, Answerer
from assistant.config import Config
from assistant.retrieval import Retriever
from assistant.types import Answer, Turn


def open_assistant(config: Config, progress: bool = True) -> Answerer:
    """Load the model and the index (building or rebuilding it as needed) once."""
    embed_model = embedding.load(config)
    loaded = index.open_index(config, embed_model, progress=progress)
    return Answerer(Retriever(loaded), config)


@dataclass
class Conversation:
    answerer: Answerer
    turns: list[Turn] = field(default_factory=list)

    def ask(self, question: str) -> Answer:
        answer = self.answerer.answer(question, tuple(self.turns))
        self.turns += [Turn("user", answer.question), Turn("assistant", answer.answer)]
        return answer

    def clear(self) -> None:
        self.turns.clear()


def render(answer: Answer) -> str:
    """Plain text: the answer, then each citation with its source and position."""
    lines = [answer.answer]
    if answer.citations:
        lines += ["", PHRASES[answer.language]["sources"] + ":"]
        for c in answer.citations:
            lines.append(f"[{c.n}] {c.title} — {c.source}, {c.chunk_id}, "
                         f"chars {c.sentence_start}–{c.sentence_end}")
            lines.append(f"    {c.sentence}")
    return "\n".join(lines)
