"""STAC item search extensions: CQL2 ``filter`` (JSON, or text on GET), ``intersects`` and ``sortby``.

Parsing and evaluation of CQL2 are the ``cql2`` library's (cql2-rs: https://github.com/developmentseed/cql2-rs);
this module decides what the emulator accepts. The operators are those the official samples and the worker use plus
the usual comparisons (``SUPPORTED_OPS``); anything else, a malformed expression, an unknown ``filter-lang`` or a
search field the emulator does not implement is a 400 ``InvalidInputData`` naming the field, never silently ignored.
An item without a property an expression compares does not match (as SQL ``NULL`` in pgSTAC).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import cql2

from gcw_emulators.geocatalog.errors import ApiError

COMPARISONS = frozenset({"=", "<>", "<", "<=", ">", ">="})
SUPPORTED_OPS = COMPARISONS | {
    "and",
    "or",
    "not",
    "in",
    "like",
    "between",
    "isNull",
    "s_intersects",
    "s_within",
    "s_contains",
    "s_disjoint",
    "s_equals",
    "t_intersects",
    "t_before",
    "t_after",
    "t_during",
    "t_equals",
}
FILTER_LANGS = ("cql2-json", "cql2-text")
WGS84 = ("http://www.opengis.net/def/crs/OGC/1.3/CRS84", "http://www.opengis.net/def/crs/EPSG/0/4326")
# search fields the emulator does not implement: refused rather than ignored
UNSUPPORTED_FIELDS = ("query", "fields")
TOP_LEVEL = ("id", "collection", "geometry", "bbox")


def _bad(field: str, message: str) -> ApiError:
    return ApiError(400, "InvalidInputData", f"{field}: {message}", target=field)


def _operators(node: Any) -> Iterable[str]:
    if isinstance(node, Mapping):
        if "op" in node:
            yield str(node["op"])
        for value in node.values():
            yield from _operators(value)
    elif isinstance(node, list):
        for value in node:
            yield from _operators(value)


def compile_filter(raw: Any, lang: Any, *, default_lang: str) -> cql2.Expr | None:
    """``filter`` + ``filter-lang`` → an expression (None when there is no filter); a 400 naming ``filter`` or
    ``filter-lang`` when the language is unknown, the expression malformed or an operator unsupported."""
    if raw is None or raw == "":
        return None
    lang = default_lang if lang in (None, "") else lang
    if lang not in FILTER_LANGS:
        raise _bad("filter-lang", f"{lang!r} is not supported; use one of {', '.join(FILTER_LANGS)}")
    if lang == "cql2-json" and isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise _bad("filter", f"not valid CQL2 JSON ({exc})") from None
    if lang == "cql2-json" and not isinstance(raw, dict):
        raise _bad("filter", 'a cql2-json filter must be a JSON object such as {"op": "=", "args": [...]}')
    if lang == "cql2-text" and not isinstance(raw, str):
        raise _bad("filter", "a cql2-text filter must be a string")
    try:
        expr = cql2.Expr(raw)
        expr.validate()
        tree = expr.to_json()
    except Exception as exc:  # cql2 raises ParseError, ValidationError or a plain Exception
        detail = " ".join(str(exc).split())[:300]
        raise _bad("filter", f"not a valid {lang} expression ({detail})") from None
    unsupported = sorted({op for op in _operators(tree) if op not in SUPPORTED_OPS})
    if unsupported:
        raise _bad(
            "filter",
            f"operator {', '.join(repr(op) for op in unsupported)} is not supported by the emulator; "
            f"supported: {', '.join(sorted(SUPPORTED_OPS))}",
        )
    return expr


def intersects_filter(geometry: Any) -> cql2.Expr | None:
    """The core ``intersects`` search field (a GeoJSON geometry) as an ``s_intersects`` expression."""
    if geometry is None:
        return None
    if not isinstance(geometry, dict) or not isinstance(geometry.get("type"), str) or "coordinates" not in geometry:
        raise _bad("intersects", "must be a GeoJSON geometry object with 'type' and 'coordinates'")
    return compile_filter(
        {"op": "s_intersects", "args": [{"property": "geometry"}, geometry]}, "cql2-json", default_lang="cql2-json"
    )


def check_unsupported(fields: Mapping[str, Any]) -> None:
    """A 400 for search fields the emulator does not implement (``query``, ``fields``) or a non-WGS84 filter-crs."""
    for name in UNSUPPORTED_FIELDS:
        if fields.get(name) not in (None, "", {}, []):
            raise _bad(name, "is not supported by the emulator; use a CQL2 'filter' instead")
    crs = fields.get("filter-crs")
    if crs not in (None, "") and crs not in WGS84:
        raise _bad("filter-crs", f"{crs!r} is not supported; only {WGS84[0]}")


@dataclass(frozen=True)
class SortKey:
    field: str
    descending: bool


def parse_sortby(raw: Any) -> list[SortKey]:
    """POST ``[{"field": "datetime", "direction": "desc"}]`` or GET ``-datetime,+id`` / ``datetime`` → sort keys."""
    if raw is None or raw == "" or raw == []:
        return []
    keys: list[SortKey] = []
    if isinstance(raw, str):
        for part in raw.split(","):
            part = part.strip()
            field = part.lstrip("+-").strip()
            if not field:
                raise _bad("sortby", f"{raw!r}: every entry needs a field name, e.g. '-datetime,+id'")
            keys.append(SortKey(field, part.startswith("-")))
        return keys
    if not isinstance(raw, list):
        raise _bad("sortby", 'must be a list of {"field": ..., "direction": "asc"|"desc"}')
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict) or not isinstance(entry.get("field"), str) or not entry["field"]:
            raise _bad(f"sortby[{i}]", 'must be an object {"field": "<name>", "direction": "asc"|"desc"}')
        direction = str(entry.get("direction", "asc")).lower()
        if direction not in ("asc", "desc"):
            raise _bad(f"sortby[{i}].direction", f"{entry.get('direction')!r} must be 'asc' or 'desc'")
        keys.append(SortKey(entry["field"], direction == "desc"))
    return keys


def _value(item: Mapping[str, Any], field: str) -> Any:
    name = field.removeprefix("properties.")
    if field in TOP_LEVEL:
        return item.get(field)
    props = item.get("properties") or {}
    value = props.get(name)
    if value is None and name == "datetime":
        value = props.get("start_datetime")
    return value


def _rank(value: Any) -> tuple[int, Any]:
    """Comparable across types: numbers, then strings (RFC 3339 times sort as text), then anything else as JSON."""
    if isinstance(value, bool):
        return (2, str(value))
    if isinstance(value, int | float):
        return (0, value)
    if isinstance(value, str):
        return (1, value)
    return (2, json.dumps(value, sort_keys=True))


def apply(
    items: list[dict[str, Any]], expressions: Iterable[cql2.Expr | None], sort: list[SortKey]
) -> list[dict[str, Any]]:
    """The items every expression matches, in ``sort`` order (stable; items missing a sort field come last)."""
    wanted = [expr for expr in expressions if expr is not None]
    out = [item for item in items if all(_matches(expr, item) for expr in wanted)]
    for key in reversed(sort):
        present = [i for i in out if _value(i, key.field) is not None]
        missing = [i for i in out if _value(i, key.field) is None]
        present.sort(key=lambda i, f=key.field: _rank(_value(i, f)), reverse=key.descending)
        out = present + missing
    return out


def _matches(expr: cql2.Expr, item: dict[str, Any]) -> bool:
    try:
        return bool(expr.matches(item))
    except Exception:  # cql2 cannot reduce a comparison with a missing property: NULL, no match
        return False
