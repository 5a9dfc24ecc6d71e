"""Subscription rules: correlation filters, SQL filters and SQL actions (the subset documented in
docs/emulator-servicebus.md), evaluated against a message's attributes (``WireMessage.attributes()``).

A SQL expression is parsed once, when the rule is created, into a tree of closures; anything outside the subset
is a ``RuleError`` naming what is not supported, so a rule never silently matches nothing. Comparisons follow
SQL's three-valued logic: a missing property is ``NULL``, and a filter that evaluates to ``NULL`` does not match.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gcw_emulators.servicebus.config import CorrelationFilter

Attributes = dict[str, Any]
Evaluator = Callable[[Attributes], Any]

# sys.<name> → the attributes key (case-insensitive); Label is the old name of Subject.
SYSTEM_PROPERTIES = {
    "messageid": "message_id",
    "correlationid": "correlation_id",
    "to": "to",
    "replyto": "reply_to",
    "label": "subject",
    "subject": "subject",
    "sessionid": "session_id",
    "replytosessionid": "reply_to_session_id",
    "contenttype": "content_type",
}
DEFAULT_RULE = "$Default"


class RuleError(ValueError):
    """A rule the emulator cannot accept (bad syntax, or outside the supported subset)."""


# ---------------------------------------------------------------------------------------------- tokens
_TOKEN = re.compile(
    r"\s*(?:(?P<number>\d+\.\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?|\d+(?:[eE][+-]?\d+)?)"
    r"|(?P<string>'(?:[^']|'')*')"
    r"|(?P<bracketed>\[[^\]]+\])"
    r"|(?P<param>@[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?)"
    r"|(?P<op><>|!=|>=|<=|=|<|>|\+|-|\*|/|%|\(|\)|,|;))"
)
_KEYWORDS = {"AND", "OR", "NOT", "IS", "NULL", "IN", "LIKE", "ESCAPE", "EXISTS", "TRUE", "FALSE", "SET", "REMOVE"}


@dataclass
class _Token:
    kind: str
    text: str
    pos: int


def _tokens(text: str) -> list[_Token]:
    out, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if not match:
            raise RuleError(f"unexpected character {text[pos:].strip()[:1]!r} at position {pos}")
        kind = match.lastgroup or ""
        value, start = match.group(kind), match.start(kind)
        if kind == "name" and value.upper() in _KEYWORDS:
            kind, value = "keyword", value.upper()
        out.append(_Token(kind, value, start))
        pos = match.end()
    return out


# ---------------------------------------------------------------------------------------------- parser
class _Parser:
    def __init__(self, text: str, parameters: dict[str, Any]) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.i = 0
        self.parameters = {k.lstrip("@").lower(): v for k, v in parameters.items()}

    def peek(self, *texts: str) -> bool:
        return self.i < len(self.tokens) and (not texts or self.tokens[self.i].text.upper() in texts)

    def take(self, *texts: str) -> _Token:
        if not self.peek(*texts):
            found = self.tokens[self.i].text if self.i < len(self.tokens) else "the end"
            raise RuleError(f"expected {' or '.join(texts) or 'more'} but found {found!r} in {self.text!r}")
        self.i += 1
        return self.tokens[self.i - 1]

    def done(self) -> None:
        if self.i < len(self.tokens):
            raise RuleError(
                f"unexpected {self.tokens[self.i].text!r} at position {self.tokens[self.i].pos} in {self.text!r}"
            )

    # boolean layer
    def expression(self) -> Evaluator:
        left = self.conjunction()
        while self.peek("OR"):
            self.take()
            left = _or(left, self.conjunction())
        return left

    def conjunction(self) -> Evaluator:
        left = self.negation()
        while self.peek("AND"):
            self.take()
            left = _and(left, self.negation())
        return left

    def negation(self) -> Evaluator:
        if self.peek("NOT"):
            self.take()
            inner = self.negation()
            return lambda a: None if (v := inner(a)) is None else not v
        return self.predicate()

    def predicate(self) -> Evaluator:
        if self.peek("EXISTS"):
            self.take()
            self.take("(")
            key = self.property_key()
            self.take(")")
            return lambda a: _lookup(a, key, exists=True)
        left = self.sum()
        negate = False
        if self.peek("IS"):
            self.take()
            negate = self.peek("NOT") and bool(self.take())
            self.take("NULL")
            return lambda a: (left(a) is None) != negate
        if self.peek("NOT"):
            self.take()
            negate = True
            if not self.peek("IN", "LIKE"):
                raise RuleError(f"expected IN or LIKE after NOT in {self.text!r}")
        if self.peek("IN"):
            self.take()
            self.take("(")
            options = [self.sum()]
            while self.peek(","):
                self.take()
                options.append(self.sum())
            self.take(")")
            return _negated(_in(left, options), negate)
        if self.peek("LIKE"):
            self.take()
            pattern = _unquote(self.take().text) if self.peek() and self.tokens[self.i].kind == "string" else None
            if pattern is None:
                raise RuleError(f"LIKE needs a quoted pattern in {self.text!r}")
            escape = None
            if self.peek("ESCAPE"):
                self.take()
                escape = _unquote(self.take().text)
            return _negated(_like(left, pattern, escape), negate)
        if self.peek("=", "<>", "!=", "<", "<=", ">", ">="):
            op = self.take().text
            return _compare(op, left, self.sum())
        return left

    # arithmetic layer
    def sum(self) -> Evaluator:
        left = self.product()
        while self.peek("+", "-"):
            op = self.take().text
            left = _arith(op, left, self.product())
        return left

    def product(self) -> Evaluator:
        left = self.unary()
        while self.peek("*", "/", "%"):
            op = self.take().text
            left = _arith(op, left, self.unary())
        return left

    def unary(self) -> Evaluator:
        if self.peek("-"):
            self.take()
            inner = self.unary()
            return lambda a: None if (v := inner(a)) is None else -v
        if self.peek("+"):
            self.take()
        return self.atom()

    def atom(self) -> Evaluator:
        if not self.peek():
            raise RuleError(f"the expression {self.text!r} ends too early")
        token = self.tokens[self.i]
        if token.text == "(":
            self.take()
            inner = self.expression()
            self.take(")")
            return inner
        if token.kind == "number":
            self.take()
            number = float(token.text) if any(c in token.text for c in ".eE") else int(token.text)
            return lambda a: number
        if token.kind == "string":
            self.take()
            text = _unquote(token.text)
            return lambda a: text
        if token.kind == "keyword" and token.text in ("TRUE", "FALSE", "NULL"):
            self.take()
            constant = {"TRUE": True, "FALSE": False, "NULL": None}[token.text]
            return lambda a: constant
        if token.kind == "param":
            self.take()
            name = token.text[1:].lower()
            if name not in self.parameters:
                raise RuleError(f"parameter {token.text} is not given")
            value = self.parameters[name]
            return lambda a: value
        key = self.property_key()
        return lambda a: _lookup(a, key)

    def property_key(self) -> tuple[str, str]:
        token = self.take()
        if token.kind == "bracketed":
            return ("user", token.text[1:-1])
        if token.kind != "name":
            raise RuleError(f"expected a property name but found {token.text!r} in {self.text!r}")
        scope, _, name = token.text.rpartition(".")
        scope = scope.lower() or "user"
        if scope == "sys":
            if name.lower() not in SYSTEM_PROPERTIES:
                raise RuleError(
                    f"system property sys.{name} is not supported by the emulator "
                    f"(supported: {', '.join(sorted(set(SYSTEM_PROPERTIES)))})"
                )
            return ("sys", SYSTEM_PROPERTIES[name.lower()])
        if scope != "user":
            raise RuleError(f"unknown property scope {scope!r} in {token.text!r}: use sys. or user.")
        return ("user", name)


def _unquote(text: str) -> str:
    return text[1:-1].replace("''", "'")


def _lookup(attributes: Attributes, key: tuple[str, str], exists: bool = False) -> Any:
    scope, name = key
    if scope == "sys":
        value = attributes.get(name)
        return value is not None if exists else value
    props = attributes.get("properties") or {}
    if name in props:
        return True if exists else props[name]
    lowered = {str(k).lower(): v for k, v in props.items()}
    if exists:
        return name.lower() in lowered
    return lowered.get(name.lower())


def _logic(left: Evaluator, right: Evaluator, dominant: bool) -> Evaluator:
    """OR (``dominant`` True) / AND (False) in three-valued logic: the dominant value wins over NULL."""

    def run(a: Attributes) -> Any:
        x, y = left(a), right(a)
        if x is dominant or y is dominant:
            return dominant
        return None if x is None or y is None else not dominant

    return run


def _or(left: Evaluator, right: Evaluator) -> Evaluator:
    return _logic(left, right, True)


def _and(left: Evaluator, right: Evaluator) -> Evaluator:
    return _logic(left, right, False)


def _negated(inner: Evaluator, negate: bool) -> Evaluator:
    if not negate:
        return inner
    return lambda a: None if (v := inner(a)) is None else not v


def _comparable(x: Any, y: Any) -> tuple[Any, Any] | None:
    if isinstance(x, bool) or isinstance(y, bool):
        return (x, y) if isinstance(x, bool) and isinstance(y, bool) else None
    if isinstance(x, int | float) and isinstance(y, int | float):
        return x, y
    if isinstance(x, str) and isinstance(y, str):
        return x, y
    if isinstance(x, dt.datetime) and isinstance(y, dt.datetime):  # a dateTime parameter; naive is UTC
        return _utc(x), _utc(y)
    if isinstance(x, dt.timedelta) and isinstance(y, dt.timedelta):
        return x, y
    return None


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda x, y: x == y,
    "<>": lambda x, y: x != y,
    "!=": lambda x, y: x != y,
    "<": lambda x, y: x < y,
    "<=": lambda x, y: x <= y,
    ">": lambda x, y: x > y,
    ">=": lambda x, y: x >= y,
}


def _compare(op: str, left: Evaluator, right: Evaluator) -> Evaluator:
    check = _COMPARE[op]

    def run(a: Attributes) -> Any:
        pair = _comparable(left(a), right(a))
        return None if pair is None else check(*pair)

    return run


def _arith(op: str, left: Evaluator, right: Evaluator) -> Evaluator:
    def run(a: Attributes) -> Any:
        x, y = left(a), right(a)
        if op == "+" and isinstance(x, str) and isinstance(y, str):
            return x + y
        if (
            not (isinstance(x, int | float) and isinstance(y, int | float))
            or isinstance(x, bool)
            or isinstance(y, bool)
        ):
            return None
        if op in "/%" and y == 0:
            return None
        if op == "/":
            return x // y if isinstance(x, int) and isinstance(y, int) else x / y
        return {"+": x + y, "-": x - y, "*": x * y, "%": x % y if op == "%" else 0}[op]

    return run


def _in(left: Evaluator, options: list[Evaluator]) -> Evaluator:
    def run(a: Attributes) -> Any:
        value = left(a)
        if value is None:
            return None
        return any(_comparable(value, o(a)) is not None and value == o(a) for o in options)

    return run


def _like(left: Evaluator, pattern: str, escape: str | None) -> Evaluator:
    regex, i = "", 0
    while i < len(pattern):
        ch = pattern[i]
        if escape and ch == escape and i + 1 < len(pattern):
            regex += re.escape(pattern[i + 1])
            i += 2
            continue
        regex += ".*" if ch == "%" else "." if ch == "_" else re.escape(ch)
        i += 1
    compiled = re.compile(regex, re.S)

    def run(a: Attributes) -> Any:
        value = left(a)
        return None if not isinstance(value, str) else compiled.fullmatch(value) is not None

    return run


# ---------------------------------------------------------------------------------------------- rules
@dataclass(frozen=True)
class SqlFilter:
    expression: str
    parameters: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "_run", _compile_filter(self.expression, dict(self.parameters)))

    def matches(self, attributes: Attributes) -> bool:
        return self._run(attributes) is True  # type: ignore[attr-defined]


def _compile_filter(expression: str, parameters: dict[str, Any]) -> Evaluator:
    parser = _Parser(expression, parameters)
    run = parser.expression()
    parser.done()
    return run


@dataclass(frozen=True)
class SqlAction:
    """``SET name = expression`` and ``REMOVE name`` statements, separated by ``;``, on application
    properties."""

    expression: str
    parameters: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "_steps", _compile_action(self.expression, dict(self.parameters)))

    def apply(self, attributes: Attributes) -> Attributes:
        current = {**attributes, "properties": dict(attributes.get("properties") or {})}
        for name, value in self._steps:  # type: ignore[attr-defined]
            result = None if value is None else value(current)  # each statement sees the ones before it
            if result is None:
                current["properties"].pop(name, None)
            else:
                current["properties"][name] = result
        return current


def _compile_action(expression: str, parameters: dict[str, Any]) -> list[tuple[str, Evaluator | None]]:
    parser = _Parser(expression, parameters)
    steps: list[tuple[str, Evaluator | None]] = []
    while parser.peek():
        verb = parser.take("SET", "REMOVE").text
        scope, name = parser.property_key()
        if scope == "sys":
            raise RuleError(f"actions on system properties are not supported by the emulator: {expression!r}")
        if verb == "SET":
            parser.take("=")
            steps.append((name, parser.sum()))
        else:
            steps.append((name, None))
        if parser.peek(";"):
            parser.take()
        elif parser.peek():
            raise RuleError(f"expected ';' between statements in {expression!r}")
    if not steps:
        raise RuleError("an SQL action needs at least one SET or REMOVE statement")
    return steps


Filter = CorrelationFilter | SqlFilter | bool  # True: TrueFilter (1=1), False: FalseFilter (1=0)


@dataclass(frozen=True)
class Rule:
    name: str
    filter: Filter = True
    action: SqlAction | None = None
    created_at: float = field(default=0.0, compare=False)

    def matches(self, attributes: Attributes) -> bool:
        if isinstance(self.filter, bool):
            return self.filter
        return self.filter.matches(attributes)


def sql_filter(expression: str, parameters: dict[str, Any] | None = None) -> Filter:
    """An SQL filter, with Azure's canonical ``1=1`` / ``1=0`` as True/False filters."""
    compact = re.sub(r"\s+", "", expression)
    if compact == "1=1":
        return True
    if compact == "1=0":
        return False
    return SqlFilter(expression, tuple(sorted((parameters or {}).items())))


def initial_rules(filters: tuple[CorrelationFilter, ...]) -> dict[str, Rule]:
    """A configured subscription's rules: ``$Default`` (match all) without filters, else one rule per filter."""
    if not filters:
        return {DEFAULT_RULE.lower(): Rule(DEFAULT_RULE, True)}
    names = [DEFAULT_RULE] + [f"Rule{i}" for i in range(1, len(filters))]
    return {name.lower(): Rule(name, f) for name, f in zip(names, filters, strict=True)}
