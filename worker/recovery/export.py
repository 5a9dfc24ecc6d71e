"""NDJSON export files: one ``DeadLetterRecord.to_dict()`` per line, written durably, read with precise errors."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO

from worker.recovery.records import DeadLetterRecord, RecordError


class ExportWriter:
    """Appends records to a *new* file (refuses to overwrite one); ``sync()`` makes what was written durable."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.count = 0
        self._file: IO[str] | None = None

    def __enter__(self) -> ExportWriter:
        try:
            self._file = self.path.open("x", encoding="utf-8")
        except FileExistsError:
            raise RecordError(f"export file {str(self.path)!r} already exists; choose another --to") from None
        return self

    def write(self, record: DeadLetterRecord) -> None:
        assert self._file is not None, "use ExportWriter as a context manager"
        self._file.write(json.dumps(record.to_dict(), ensure_ascii=False, separators=(",", ":")) + "\n")
        self.count += 1

    def sync(self) -> None:
        """Flush and fsync: after this returns, every written record survives a crash."""
        assert self._file is not None
        self._file.flush()
        os.fsync(self._file.fileno())

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._file is not None:
            self.sync()
            self._file.close()
            self._file = None


def read_records(path: str | Path) -> Iterator[DeadLetterRecord]:
    """Records of an export file; raises ``RecordError`` naming the file, line and field of a bad line."""
    path = Path(path)
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        raise RecordError(f"cannot read {str(path)!r}: {exc.strerror}") from None
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path.name} line {number}"
            try:
                data = json.loads(line)
            except ValueError as exc:
                raise RecordError(f"{where}: not JSON ({exc})") from None
            yield DeadLetterRecord.from_dict(data, where=where)
