"""The embedded mode's SQLite file (``jobs.sqlite``): jobs, API keys and idempotency
records live in it side by side, so every store opens it the same way."""
from __future__ import annotations

import sqlite3
from pathlib import Path


def connect(path: Path, timeout_s: float) -> sqlite3.Connection:
    """A new autocommit connection (``isolation_level=None``: transactions are explicit),
    waiting up to ``timeout_s`` for a lock, rows as ``sqlite3.Row``. Never shared between
    threads or across fork(), which is what makes the stores process-safe."""
    conn = sqlite3.connect(path, timeout=timeout_s, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout={int(timeout_s * 1000)}")
    conn.row_factory = sqlite3.Row
    return conn


def open_tables(path: Path, schema: str, timeout_s: float) -> sqlite3.Connection:
    """Create the file's folder, switch the file to WAL and create ``schema``'s tables;
    -> the connection (the caller closes it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = connect(path, timeout_s)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(schema)
    return conn
