"""Passage vectors kept by text in SQLite, so a rebuild embeds only new or changed text."""

from __future__ import annotations

import hashlib
import sqlite3
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np


def cache_path(cache_dir: Path, identity: str) -> Path:
    """Where the passage vectors of one model are kept by text (see `VectorCache`); `identity` names
    everything the vectors depend on (`embedding.cache_path` builds it)."""
    return cache_dir / "vectors" / f"{hashlib.sha1(identity.encode()).hexdigest()[:16]}.sqlite"


@contextmanager
def passage_cache(embed_model, path: Path | None):
    """Passage vectors looked up by text in `VectorCache(path)` (None: no cache) while inside.

    Through llama-index's embeddings cache, attached only while passages are embedded: llama-index
    keys queries by their text too, and e5 embeds a query ("query: …") unlike the same passage.
    """
    try:
        cache = VectorCache(path) if path is not None else None
    except sqlite3.Error as error:  # a damaged cache costs time, never the build
        warnings.warn(
            f"Vector cache {path} is unusable ({error}); embedding without it. Delete it to start over.", stacklevel=3
        )
        cache = None
    if cache is None:
        yield embed_model
        return
    embed_model.embeddings_cache = cache
    try:
        yield embed_model
    finally:
        embed_model.embeddings_cache = None
        cache.close()


class VectorCache:
    """Passage vectors in SQLite, keyed by text, for llama-index's `BaseEmbedding.embeddings_cache`.

    It implements the `get`/`put` half of llama-index's key-value store interface, which is all the
    embeddings cache calls. One file serves one model (see `cache_path`); vectors are float32 bytes,
    a tenth of the space of llama-index's JSON stores.
    """

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, timeout=30)
        # One small transaction per vector (llama-index puts them one by one): WAL keeps that cheap.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS vectors (collection TEXT, key TEXT, vector BLOB, PRIMARY KEY (collection, key))"
        )

    def put(self, key: str, val: dict, collection: str = "data") -> None:
        (vector,) = val.values()
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)",
                (collection, key, np.asarray(vector, dtype=np.float32).tobytes()),
            )

    def close(self) -> None:
        self._db.close()

    def get(self, key: str, collection: str = "data") -> dict | None:
        row = self._db.execute(
            "SELECT vector FROM vectors WHERE collection = ? AND key = ?", (collection, key)
        ).fetchone()
        return None if row is None else {"vector": np.frombuffer(row[0], dtype=np.float32).tolist()}
