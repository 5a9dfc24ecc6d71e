"""SAS tokens issued and checked by the emulator: ``st=<iso>&se=<iso>&sp=rl&sv=2024-05-04&sr=c&sig=<hmac>``
(the order the live service uses, ``st`` first: SPY).

The signature is an HMAC-SHA256 over ``account\\ncontainer\\nse`` with a per-emulator secret, so a token is valid
only for the container it was issued for and only until ``se`` (minus any ``sas-early`` fault).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import math
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import parse_qs, quote, urlsplit, urlunsplit

SAS_VERSION = "2024-05-04"
VERDICTS_KEPT = 4096  # checked tokens remembered (then forgotten all at once)
BLOB_SUFFIX = ".blob.core.windows.net"


def iso_seconds(ts: float) -> str:
    """Whole seconds, rounded down (a token never lives longer than configured)."""
    return datetime.fromtimestamp(math.floor(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@functools.lru_cache(maxsize=4096)  # an asset's href is looked at several times while its item is applied
def blob_location(href: str) -> tuple[str, str] | None:
    """(account, container) of an Azure blob URL, or None when ``href`` is not one."""
    parts = urlsplit(href)
    host = (parts.hostname or "").lower()
    if not host.endswith(BLOB_SUFFIX) or host == BLOB_SUFFIX[1:]:
        return None
    segments = [s for s in parts.path.split("/") if s]
    if len(segments) < 2:
        return None
    return host.split(".")[0], segments[0]


class SasAuthority:
    """Issues and verifies the emulator's container SAS tokens."""

    def __init__(
        self,
        expiry_seconds: float,
        clock: Callable[[], float],
        secret: bytes | None = None,
    ) -> None:
        self.expiry_seconds = expiry_seconds
        self._clock = clock
        self._secret = secret or secrets.token_bytes(32)
        self.early_seconds = 0.0  # set by the ``sas-early`` fault: tokens count as expired this much sooner
        # (account, container) -> another (account, container) whose tokens are valid here too
        self.aliases: dict[tuple[str, str], tuple[str, str]] = {}
        # (scopes, query) -> why the token is refused whatever the time, or its expiry: every item of a request
        # carries the same container token on each of its assets, checked once per asset (the emulator's CPU)
        self._verdicts: dict[tuple[tuple[tuple[str, str], ...], str], str | float] = {}

    def _sign(self, account: str, container: str, se: str) -> str:
        mac = hmac.new(self._secret, f"{account}\n{container}\n{se}".encode(), hashlib.sha256).digest()
        return base64.b64encode(mac).decode()

    def issue(self, account: str, container: str, duration_seconds: float | None = None) -> tuple[str, str]:
        """Return ``(token, msft:expiry)`` for ``account/container``."""
        seconds = self.expiry_seconds if duration_seconds is None else min(duration_seconds, self.expiry_seconds)
        now = self._clock()
        st, se = iso_seconds(now), iso_seconds(now + seconds)
        sig = self._sign(account.lower(), container, se)
        token = f"st={quote(st, safe='')}&se={quote(se, safe='')}&sp=rl&sv={SAS_VERSION}&sr=c&sig={quote(sig, safe='')}"
        return token, se

    def check(self, account: str, container: str, query: str, at: float | None = None) -> str | None:
        """None when ``query`` holds a valid token for the container at time ``at``; else why not."""
        scopes = [(account.lower(), container)]
        alias = self.aliases.get(scopes[0])
        if alias is not None:
            scopes.append(alias)
        key = (tuple(scopes), query)
        verdict = self._verdicts.get(key)
        if verdict is None:
            if len(self._verdicts) >= VERDICTS_KEPT:
                self._verdicts.clear()
            verdict = self._verdicts[key] = self._verdict(scopes, query)
        if isinstance(verdict, str):
            return verdict
        now = self._clock() if at is None else at
        if now >= verdict - self.early_seconds:
            return "SAS token expired"
        return None

    def _verdict(self, scopes: list[tuple[str, str]], query: str) -> str | float:
        """Why ``query`` is no valid token for any of ``scopes`` at any time, or else its expiry (epoch)."""
        params = parse_qs(query, keep_blank_values=True)
        if "sig" not in params:
            return "no SAS token"
        se = params.get("se", [""])[0]
        sig = params["sig"][0]
        if not any(hmac.compare_digest(sig.encode(), self._sign(a, c, se).encode()) for a, c in scopes):
            return "SAS signature does not match this storage account and container"
        if "r" not in params.get("sp", [""])[0]:
            return "SAS token lacks read permission"
        expiry = parse_iso(se)
        if expiry is None:
            return "SAS token has no valid expiry (se)"
        return expiry

    def sign_href(
        self, href: str, account_container: tuple[str, str] | None, duration: float | None
    ) -> tuple[str, str | None]:
        """Append a token to ``href`` (replacing any query); unchanged when it is not a blob href."""
        if account_container is None:
            return href, None
        token, expiry = self.issue(*account_container, duration_seconds=duration)
        parts = urlsplit(href)
        return urlunsplit((parts.scheme, parts.netloc, parts.path, token, parts.fragment)), expiry
