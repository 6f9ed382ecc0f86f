"""Benchmarks: cold start, index build, query latency by stage and size, HTTP load, memory."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

from assistant import chunking, corpus
from assistant.config import Config

PARAGRAPHS_PER_FILE = 200


def synthetic_corpus(config: Config, folder: Path, passages: int, seed: int = 0) -> Path:
    """The real corpus plus Thai paragraphs recombined from its text, about `passages` in all.

    A synthetic paragraph strings together phrases (the space-separated parts of the corpus's
    sentences; Thai puts spaces between phrases, not words) in a random order, up to the chunker's
    passage length, so it becomes one passage of real words at realistic lengths. Whole sentences
    would repeat too often: the corpus has a few dozen. The real files stay in, so the evaluation
    questions keep their answers. The same arguments give the same bytes, so an index built on it
    earlier stays valid.
    """
    loaded = corpus.load(config.corpus_dir)
    params = chunking.ChunkParams(config.chunk_min_chars, config.chunk_max_chars,
                                  config.chunk_overlap_sentences)
    real = chunking.split(loaded.documents, params)
    pool = sorted({p for c in real for p in c.text.split()})
    rng = random.Random(seed)

    def paragraph() -> str:
        words, length = [], -1
        while length < params.min_chars:
            phrase = rng.choice(pool)
            if length + len(phrase) + 1 <= params.max_chars:
                words.append(phrase)
                length += len(phrase) + 1
        return " ".join(words)

    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(config.corpus_dir, folder)
    wanted = max(0, passages - len(real))
    for first in range(0, wanted, PARAGRAPHS_PER_FILE):
        lines = [paragraph() for _ in range(min(PARAGRAPHS_PER_FILE, wanted - first))]
        name = f"synthetic-{first // PARAGRAPHS_PER_FILE + 1:04d}"
        (folder / f"{name}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        (folder / f"{name}.meta.yaml").write_text(f"title: Synthetic passages {name[10:]}\nlanguage: th\n",
                                                  encoding="utf-8")
    return folder
