"""Secrets that never print, and redaction of secrets that hide inside URLs and strings."""

from __future__ import annotations

import re

REDACTED = "***"

# SAS query parameters that carry or reveal the signature, bearer tokens, connection-string keys.
_SAS_PARAM = re.compile(r"(?i)([?&](?:sig|se|st|sp|sv|sr|skoid|sktid|skt|ske|sks|skv|spr|srt|ss)=)[^&#\s\"']*")
_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9\-_.~+/=]+")
_CONN_KEY = re.compile(r"(?i)((?:SharedAccessKey|SharedAccessSignature|AccountKey|sig)\s*=\s*)[^;&\s\"']+")
_JWT = re.compile(r"eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}")


class Secret:
    """A string that shows ``***`` in ``str``, ``repr`` and f-strings. Call ``reveal()`` to use it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({REDACTED})"

    def __str__(self) -> str:
        return REDACTED

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


def redact(text: str) -> str:
    """Replace anything that looks like a SAS signature, bearer token, JWT or account key with ``***``."""
    if not text:
        return text
    if "=" not in text and "eyJ" not in text and "bearer" not in text.lower():
        return text  # none of the patterns can match (each needs one of these): four scans spared
    text = _SAS_PARAM.sub(lambda m: m.group(1) + REDACTED, text)
    text = _BEARER.sub(lambda m: m.group(1) + REDACTED, text)
    text = _CONN_KEY.sub(lambda m: m.group(1) + REDACTED, text)
    return _JWT.sub(REDACTED, text)
