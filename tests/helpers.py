"""What several test modules share (test modules never import each other)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from llama_index.core import MockEmbedding

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "corpus"

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]

# What the sentence-transformers route loads; the default model, once materialised, needs none of it.
TORCH_STACK = {"torch", "transformers", "sentence_transformers", "tokenizers"}


class NetworkBlocked(RuntimeError):
    pass


class Interrupted(MockEmbedding):
    """A real llama-index embedding whose document embedding is cut off, like Ctrl-C mid-build."""

    def _get_text_embeddings(self, texts):
        raise KeyboardInterrupt


def imported_modules(stderr: str) -> set[str]:
    """Every module a process imported, from its PYTHONPROFILEIMPORTTIME report."""
    return {line.rsplit("|", 1)[-1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


def cited(answer: str, quoted: str, n: int) -> bool:
    """Whether the answer text quotes this and marks it [n]: right after it, or at the end of its sentence
    with the markers of the sentence's other parts when the chunker cut the sentence ("… [1] [2]")."""
    at = answer.find(quoted)
    return at >= 0 and bool(re.match(rf"(?: [^\[]+)? (?:\[\d+\] )*\[{n}\]", answer[at + len(quoted) :]))


class Server:
    """A real `assistant serve` (the benchmark's `served`), stopped by `stop()`."""

    def __init__(self, env: dict, log: Path):
        from contextlib import ExitStack

        from assistant.bench import served

        self._stack = ExitStack()
        running = self._stack.enter_context(served(env, log))
        self.url, self.port, self.process = running.url, running.port, running.process

    def stop(self):
        self._stack.close()
