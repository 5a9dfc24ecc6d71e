"""Where collections, items, operations and blobs live: in memory, or in SQLite under ``--data-dir``.

Both stores are used under the catalog's lock, so they need no locking of their own.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from gcw_emulators.geocatalog.operations import Operation


class Store(Protocol):
    def add_collection(self, collection_id: str, doc: dict[str, Any]) -> None: ...
    def get_collection(self, collection_id: str) -> dict[str, Any] | None: ...
    def delete_collection(self, collection_id: str) -> None: ...
    def list_collections(self) -> list[dict[str, Any]]: ...
    def get_item(self, collection_id: str, item_id: str) -> dict[str, Any] | None: ...
    def put_item(self, collection_id: str, item_id: str, doc: dict[str, Any]) -> None: ...
    def delete_item(self, collection_id: str, item_id: str) -> bool: ...
    def list_items(self, collection_id: str | None) -> Iterator[dict[str, Any]]: ...
    def item_counts(self) -> dict[str, int]: ...
    def put_operation(self, op: Operation) -> None: ...
    def get_operation(self, op_id: str) -> Operation | None: ...
    def list_operations(self) -> Iterator[Operation]: ...
    def put_blob(self, key: str, data: bytes, content_type: str) -> None: ...
    def get_blob(self, key: str) -> tuple[bytes, str] | None: ...
    def close(self) -> None: ...


class MemoryStore:
    def __init__(self) -> None:
        self._collections: dict[str, dict[str, Any]] = {}
        self._items: dict[str, dict[str, dict[str, Any]]] = {}
        self._ops: dict[str, Operation] = {}
        self._blobs: dict[str, tuple[bytes, str]] = {}

    def add_collection(self, collection_id: str, doc: dict[str, Any]) -> None:
        self._collections[collection_id] = doc
        self._items.setdefault(collection_id, {})

    def get_collection(self, collection_id: str) -> dict[str, Any] | None:
        return self._collections.get(collection_id)

    def delete_collection(self, collection_id: str) -> None:
        self._collections.pop(collection_id, None)
        self._items.pop(collection_id, None)

    def list_collections(self) -> list[dict[str, Any]]:
        return list(self._collections.values())

    def get_item(self, collection_id: str, item_id: str) -> dict[str, Any] | None:
        return self._items.get(collection_id, {}).get(item_id)

    def put_item(self, collection_id: str, item_id: str, doc: dict[str, Any]) -> None:
        self._items.setdefault(collection_id, {})[item_id] = doc

    def delete_item(self, collection_id: str, item_id: str) -> bool:
        return self._items.get(collection_id, {}).pop(item_id, None) is not None

    def list_items(self, collection_id: str | None) -> Iterator[dict[str, Any]]:
        ids = [collection_id] if collection_id is not None else list(self._items)
        for cid in ids:
            yield from list(self._items.get(cid, {}).values())

    def item_counts(self) -> dict[str, int]:
        return {cid: len(items) for cid, items in self._items.items()}

    def put_operation(self, op: Operation) -> None:
        self._ops[op.id] = op

    def get_operation(self, op_id: str) -> Operation | None:
        return self._ops.get(op_id)

    def list_operations(self) -> Iterator[Operation]:
        yield from list(self._ops.values())

    def put_blob(self, key: str, data: bytes, content_type: str) -> None:
        self._blobs[key] = (data, content_type)

    def get_blob(self, key: str) -> tuple[bytes, str] | None:
        return self._blobs.get(key)

    def close(self) -> None:
        return None


_SCHEMA = """
CREATE TABLE IF NOT EXISTS collections (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, collection TEXT NOT NULL, id TEXT NOT NULL, doc TEXT NOT NULL,
    UNIQUE (collection, id));
CREATE TABLE IF NOT EXISTS operations (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE, rec TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS blobs (key TEXT PRIMARY KEY, data BLOB NOT NULL, content_type TEXT NOT NULL);
"""


class SqliteStore:
    """The same store in ``DIR/geocatalog.sqlite3``: state survives a restart of the emulator."""

    def __init__(self, data_dir: str | Path) -> None:
        path = Path(data_dir)
        path.mkdir(parents=True, exist_ok=True)
        self.path = path / "geocatalog.sqlite3"
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def add_collection(self, collection_id: str, doc: dict[str, Any]) -> None:
        self._db.execute("INSERT OR REPLACE INTO collections VALUES (?, ?)", (collection_id, json.dumps(doc)))

    def get_collection(self, collection_id: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT doc FROM collections WHERE id = ?", (collection_id,)).fetchone()
        return json.loads(row[0]) if row else None

    def list_collections(self) -> list[dict[str, Any]]:
        return [json.loads(r[0]) for r in self._db.execute("SELECT doc FROM collections ORDER BY rowid")]

    def delete_collection(self, collection_id: str) -> None:
        self._db.execute("DELETE FROM collections WHERE id = ?", (collection_id,))
        self._db.execute("DELETE FROM items WHERE collection = ?", (collection_id,))

    def get_item(self, collection_id: str, item_id: str) -> dict[str, Any] | None:
        row = self._db.execute(
            "SELECT doc FROM items WHERE collection = ? AND id = ?", (collection_id, item_id)
        ).fetchone()
        return json.loads(row[0]) if row else None

    def put_item(self, collection_id: str, item_id: str, doc: dict[str, Any]) -> None:
        self._db.execute(
            "INSERT INTO items (collection, id, doc) VALUES (?, ?, ?) "
            "ON CONFLICT (collection, id) DO UPDATE SET doc = excluded.doc",
            (collection_id, item_id, json.dumps(doc)),
        )

    def delete_item(self, collection_id: str, item_id: str) -> bool:
        cur = self._db.execute("DELETE FROM items WHERE collection = ? AND id = ?", (collection_id, item_id))
        return cur.rowcount > 0

    def list_items(self, collection_id: str | None) -> Iterator[dict[str, Any]]:
        if collection_id is None:
            rows = self._db.execute("SELECT doc FROM items ORDER BY collection, seq").fetchall()
        else:
            rows = self._db.execute(
                "SELECT doc FROM items WHERE collection = ? ORDER BY seq", (collection_id,)
            ).fetchall()
        for row in rows:
            yield json.loads(row[0])

    def item_counts(self) -> dict[str, int]:
        counts = {cid: 0 for cid in (r[0] for r in self._db.execute("SELECT id FROM collections"))}
        for cid, n in self._db.execute("SELECT collection, COUNT(*) FROM items GROUP BY collection"):
            counts[cid] = n
        return counts

    def put_operation(self, op: Operation) -> None:
        self._db.execute(
            "INSERT INTO operations (id, rec) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET rec = excluded.rec",
            (op.id, json.dumps(op.to_record())),
        )

    def get_operation(self, op_id: str) -> Operation | None:
        row = self._db.execute("SELECT rec FROM operations WHERE id = ?", (op_id,)).fetchone()
        return Operation.from_record(json.loads(row[0])) if row else None

    def list_operations(self) -> Iterator[Operation]:
        for row in self._db.execute("SELECT rec FROM operations ORDER BY seq").fetchall():
            yield Operation.from_record(json.loads(row[0]))

    def put_blob(self, key: str, data: bytes, content_type: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO blobs VALUES (?, ?, ?)", (key, data, content_type))

    def get_blob(self, key: str) -> tuple[bytes, str] | None:
        row = self._db.execute("SELECT data, content_type FROM blobs WHERE key = ?", (key,)).fetchone()
        return (bytes(row[0]), row[1]) if row else None

    def close(self) -> None:
        self._db.close()
