"""SQLite durability for ``--data-dir``: every accepted message is committed before the client hears "accepted".

Locks do not survive a restart: a message that was locked comes back available (as when its lock expires).
The duplicate-detection history (message ids within the window) is kept too.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from gcw_emulators.servicebus import codec
from gcw_emulators.servicebus.store import MessageState, Store, StoredMessage

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    path TEXT NOT NULL, seq INTEGER NOT NULL, raw BLOB NOT NULL, message_id TEXT, session_id TEXT,
    enqueued_at REAL NOT NULL, expires_at REAL, state INTEGER NOT NULL, visible_at REAL NOT NULL,
    delivery_count INTEGER NOT NULL, deferred INTEGER NOT NULL, dl_reason TEXT, dl_description TEXT,
    dl_source TEXT, ttl REAL, PRIMARY KEY (path, seq));
CREATE TABLE IF NOT EXISTS counters (path TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS message_ids (path TEXT NOT NULL, message_id TEXT NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (path, message_id));
CREATE TABLE IF NOT EXISTS sessions (path TEXT NOT NULL, session_id TEXT NOT NULL, state BLOB,
    PRIMARY KEY (path, session_id));
CREATE TABLE IF NOT EXISTS definitions (path TEXT PRIMARY KEY, kind TEXT NOT NULL, xml TEXT NOT NULL);
"""
# restore order: entities before the subscriptions and rules that live in them
_KIND_ORDER = {"QueueDescription": 0, "TopicDescription": 0, "SubscriptionDescription": 1, "RuleDescription": 2}


class SqliteJournal:
    def __init__(self, file: Path) -> None:
        file.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(file), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._dirty = False
        self._mutex = threading.RLock()  # the management API writes definitions from its own thread
        self._db.execute("BEGIN")

    def _begin(self) -> None:
        self._dirty = True

    def save(self, path: str, msg: StoredMessage) -> None:
        self._begin()
        key = path.lower()
        state = MessageState.ACTIVE if msg.state is MessageState.LOCKED else msg.state
        if msg.state is MessageState.LOCKED and msg.deferred:
            state = MessageState.DEFERRED
        self._db.execute(
            "INSERT OR REPLACE INTO messages VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (key, msg.seq, msg.raw, msg.message_id, msg.session_id, msg.enqueued_at, msg.expires_at, int(state),
             msg.visible_at, msg.delivery_count, int(msg.deferred), msg.dead_letter_reason,
             msg.dead_letter_description, msg.dead_letter_source, msg.ttl))
        self._db.execute("INSERT INTO counters VALUES (?,?) ON CONFLICT(path) DO UPDATE SET "
                         "seq = max(seq, excluded.seq)", (key, msg.seq))

    def delete(self, path: str, seq: int) -> None:
        self._begin()
        self._db.execute("DELETE FROM messages WHERE path = ? AND seq = ?", (path.lower(), seq))

    def save_session_state(self, path: str, session_id: str, state: bytes | None) -> None:
        self._begin()
        self._db.execute("INSERT OR REPLACE INTO sessions VALUES (?,?,?)", (path.lower(), session_id, state))

    def save_message_id(self, path: str, message_id: str, at: float) -> None:
        self._begin()
        self._db.execute("INSERT OR REPLACE INTO message_ids VALUES (?,?,?)", (path.lower(), message_id, at))

    def commit(self) -> None:
        with self._mutex:
            if self._dirty:
                self._db.execute("COMMIT")
                self._db.execute("BEGIN")
                self._dirty = False

    def save_definition(self, path: str, kind: str, xml: str | None) -> None:
        """An entity or rule created through the management API (``xml`` None: deleted, with what it held)."""
        with self._mutex:
            key, under = path.lower(), path.lower() + "/"
            args = (key, len(under), under)
            if xml is None:
                self._db.execute("DELETE FROM definitions WHERE lower(path) = ? OR substr(lower(path), 1, ?) = ?", args)
                self._db.execute("DELETE FROM messages WHERE lower(path) = ? OR substr(lower(path), 1, ?) = ?", args)
            else:
                self._db.execute("DELETE FROM definitions WHERE lower(path) = ?", (key,))
                self._db.execute("INSERT INTO definitions VALUES (?,?,?)", (path, kind, xml))
            self._dirty = True
            self.commit()

    def definitions(self) -> list[tuple[str, str, str]]:
        rows = self._db.execute("SELECT path, kind, xml FROM definitions").fetchall()
        return sorted(rows, key=lambda row: (_KIND_ORDER.get(row[1], 9), row[0]))

    def load_into(self, store: Store) -> int:
        rows = self._db.execute("SELECT * FROM messages ORDER BY path, seq").fetchall()
        for (path, seq, raw, message_id, session_id, enqueued_at, expires_at, state, visible_at, delivery_count,
             deferred, dl_reason, dl_description, dl_source, ttl) in rows:
            wire = codec.parse(raw)
            msg = StoredMessage(seq=seq, payload=wire, raw=raw, message_id=message_id, attributes=wire.attributes(),
                                session_id=session_id, enqueued_at=enqueued_at, expires_at=expires_at,
                                state=MessageState(state), visible_at=visible_at, delivery_count=delivery_count,
                                deferred=bool(deferred), dead_letter_reason=dl_reason,
                                dead_letter_description=dl_description, dead_letter_source=dl_source, ttl=ttl)
            store.restore(path, msg)
        for path, seq in self._db.execute("SELECT path, seq FROM counters"):
            store.restore_counter(path, seq)
        for path, session_id, state in self._db.execute("SELECT path, session_id, state FROM sessions"):
            store.restore_session_state(path, session_id, state)
        for path, message_id, at in self._db.execute("SELECT path, message_id, at FROM message_ids ORDER BY at"):
            store.restore_message_id(path, message_id, at)
        # forget ids older than the longest window any entity could use (7 days is Azure's maximum)
        self._db.execute("DELETE FROM message_ids WHERE at < ?", (store.now() - 7 * 86400,))
        return len(rows)

    def close(self) -> None:
        try:
            self.commit()
            self._db.execute("COMMIT")
        except sqlite3.Error:
            pass
        self._db.close()
