"""Recordings-driven conformance: each fixture in ``fixtures/*.json`` states what a client can rely on in one
exchange (or sequence) recorded against the live GeoCatalog; this module performs the same exchanges against the
emulator over HTTP and compares. The fixture schema is in ``README.md`` next to this file."""

from __future__ import annotations

import json
import re
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

FIXTURES = sorted((Path(__file__).parent / "fixtures").glob("*.json"))
TERMINAL = {"Succeeded", "Failed", "Canceled"}
TIMESTAMP = {
    "timestamp6": r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z",
    "timestamp7": r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z",
    "timestamp": r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{1,7}Z",
    "seconds": r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ",
}
PY_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "object": dict,
    "array": list,
}


class Session:
    def __init__(self, emu: Any) -> None:
        self.emu = emu
        self.vars: dict[str, Any] = {"base": emu.url, "managed": f"{emu.managed_account}.blob.core.windows.net"}

    def sub(self, value: Any, escape: bool = False) -> Any:
        """``${name}`` replaced by a saved value (regex-escaped in patterns)."""
        if isinstance(value, str):
            return re.sub(
                r"\$\{(\w+)\}", lambda m: re.escape(str(self.vars[m[1]])) if escape else str(self.vars[m[1]]), value
            )
        if isinstance(value, list):
            return [self.sub(v, escape) for v in value]
        if isinstance(value, dict):
            return {k: self.sub(v, escape) for k, v in value.items()}
        return value


def pointer(doc: Any, path: str) -> Any:
    """RFC 6901 JSON pointer; a negative index counts from the end. Raises KeyError when absent."""
    if path == "":
        return doc
    for token in path.lstrip("/").split("/"):
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(doc, list):
            doc = doc[int(token)]
        elif isinstance(doc, dict):
            doc = doc[token]
        else:
            raise KeyError(path)
    return doc


def check_type(value: Any, kind: str, where: str) -> None:
    if kind == "null":
        assert value is None, f"{where}: expected null, got {value!r}"
    elif kind == "uuid":
        assert isinstance(value, str), f"{where}: expected a uuid string, got {value!r}"
        uuid.UUID(value)
    elif kind in TIMESTAMP:
        assert isinstance(value, str) and re.fullmatch(TIMESTAMP[kind], value), f"{where}: not {kind}: {value!r}"
    else:
        assert isinstance(value, PY_TYPES[kind]) and not (kind != "boolean" and isinstance(value, bool)), (
            f"{where}: expected {kind}, got {value!r}"
        )


def send(s: Session, request: dict[str, Any]) -> requests.Response:
    req = s.sub(request)
    url = req.get("url") or f"{s.emu.url}{req['path']}"
    query = {"api-version": "2025-04-30-preview", **req.get("query", {})} if "url" not in req else req.get("query")
    headers = {**s.emu.headers, **req.get("headers", {})}
    kwargs: dict[str, Any] = {"params": query, "headers": headers, "timeout": 10}
    if "json" in req:
        kwargs["data"] = json.dumps(req["json"])
        headers.setdefault("Content-Type", "application/json")
    return requests.request(req["method"], url, **kwargs)


def run_exchange(s: Session, ex: dict[str, Any]) -> None:
    name = ex.get("name", ex["request"]["method"])
    r = send(s, ex["request"])
    deadline = time.monotonic() + 20
    while ex.get("poll_until_terminal") and r.json().get("status") not in TERMINAL:
        assert time.monotonic() < deadline, f"{name}: operation not terminal after 20 s"
        time.sleep(0.02)
        r = send(s, ex["request"])
    expect = ex.get("expect", {})
    assert r.status_code == expect.get("status", 200), f"{name}: {r.status_code} {r.text[:300]}"
    for header, value in s.sub(expect.get("headers", {})).items():
        assert header in r.headers, f"{name}: header {header} missing"
        assert value == "*" or r.headers[header] == value, f"{name}: {header}: {r.headers[header]!r} != {value!r}"
    for header in expect.get("absent_headers", []):
        assert header not in r.headers, f"{name}: header {header} must not be sent"
    body = r.json() if r.content else None
    for path, keys in expect.get("keys", {}).items():
        assert list(pointer(body, path)) == keys, f"{name}: keys at {path!r}: {list(pointer(body, path))}"
    for path, value in s.sub(expect.get("equals", {})).items():
        assert pointer(body, path) == value, f"{name}: {path}: {pointer(body, path)!r} != {value!r}"
    for path, kind in expect.get("types", {}).items():
        check_type(pointer(body, path), kind, f"{name}: {path}")
    for path in expect.get("absent", []):
        with pytest.raises((KeyError, IndexError)):
            pointer(body, path)
    for path, pattern in expect.get("matches", {}).items():
        value = pointer(body, path)
        assert re.fullmatch(s.sub(pattern, escape=True), value), f"{name}: {path}: {value!r} !~ {pattern}"
    for path, (seconds, tolerance) in expect.get("expires_in", {}).items():
        at = datetime.fromisoformat(pointer(body, path).replace("Z", "+00:00"))
        assert abs((at - datetime.now(UTC)).total_seconds() - seconds) <= tolerance, f"{name}: {path} = {at}"
    for var, path in ex.get("save", {}).items():
        s.vars[var] = r.headers[path[len("header:") :]] if path.startswith("header:") else pointer(body, path)


@pytest.mark.parametrize("fixture", FIXTURES, ids=[f.stem for f in FIXTURES])
def test_emulator_conforms_to_the_recording(fixture, gc_emulator):
    spec = json.loads(fixture.read_text())
    assert spec["recording"] and spec["exchanges"], "a fixture names its recording and its exchanges"
    emu = gc_emulator(operation_seconds=0.05, collections=spec.get("collections", []))
    s = Session(emu)
    for ex in spec["exchanges"]:
        run_exchange(s, ex)


def test_every_fixture_is_used_and_well_formed():
    assert len(FIXTURES) >= 8
    allowed = {"recording", "description", "collections", "exchanges"}
    for f in FIXTURES:
        spec = json.loads(f.read_text())
        assert set(spec) <= allowed, f"{f.name}: unknown keys {set(spec) - allowed}"
