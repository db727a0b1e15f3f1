"""An on-disk embedding cache, so re-indexing unchanged texts costs nothing.

Entries are keyed by (model, instruction, text): the model part names the model and how it runs
(backend, precision, maximum length), so a vector is reused only where it would come out the same.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["EmbeddingCache"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS embeddings (
    key TEXT PRIMARY KEY,
    dim INTEGER NOT NULL,
    vector BLOB NOT NULL
)
"""
_LOOKUP_CHUNK = 500  # SQLite's default limit on bound parameters is 999 (older builds)


def _key(model: str, instruction: str, text: str) -> str:
    digest = hashlib.sha256()
    for part in (model, instruction, text):
        digest.update(part.encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()


class EmbeddingCache:
    """SQLite file of float32 vectors keyed by (model, instruction, text hash).

    Safe to share between threads of one process, and between processes (SQLite locking, WAL).

    Args:
        path: The SQLite file; its folder is created if needed.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise IsADirectoryError(f"cache path {str(self.path)!r} is a folder; give a file path")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        with self._lock, self._db:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(_SCHEMA)

    def __repr__(self) -> str:
        return f"EmbeddingCache({str(self.path)!r}, {len(self)} vectors)"

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0])

    def get(self, model: str, instruction: str, texts: Sequence[str]) -> list[np.ndarray | None]:
        """The cached vector of each text, or None where there is none."""
        keys = [_key(model, instruction, t) for t in texts]
        found: dict[str, np.ndarray] = {}
        with self._lock:
            for start in range(0, len(keys), _LOOKUP_CHUNK):
                chunk = keys[start : start + _LOOKUP_CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    f"SELECT key, vector FROM embeddings WHERE key IN ({marks})", chunk
                )
                for key, blob in rows:
                    found[key] = np.frombuffer(blob, dtype=np.float32)
        return [found.get(k) for k in keys]

    def put(self, model: str, instruction: str, texts: Sequence[str], vectors: np.ndarray) -> None:
        """Store one vector per text (replacing what was there)."""
        array = np.asarray(vectors, dtype=np.float32)
        if array.ndim != 2 or len(array) != len(texts):
            raise ValueError(f"need one vector per text: {len(texts)} texts, shape {array.shape}")
        rows = [
            (_key(model, instruction, t), array.shape[1], array[i].tobytes())
            for i, t in enumerate(texts)
        ]
        with self._lock, self._db:
            self._db.executemany("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?)", rows)

    def clear(self) -> None:
        """Remove every vector."""
        with self._lock, self._db:
            self._db.execute("DELETE FROM embeddings")

    def close(self) -> None:
        """Close the database file."""
        with self._lock:
            self._db.close()
