"""Host allow-lists: which hosts may receive a SAS token, and which hosts item JSON may be fetched from."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from urllib.parse import urlsplit

# what a host name (or an IPv6 literal, brackets removed) may contain once urlsplit lower-cased it; anything else
# ("\\", "%", spaces) is read differently by other URL parsers, which could send a token to another host
_HOST_CHARS = re.compile(r"[a-z0-9.\-_]+|[0-9a-f:.]+", re.ASCII)


class HostAllowList:
    """Case-insensitive host patterns. ``*.blob.core.windows.net`` matches any single-or-multi label
    prefix but never the bare suffix or a lookalike such as ``blob.core.windows.net.evil.com``.
    A pattern may carry a port (``127.0.0.1:10000``); then the URL's port must match too.
    """

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = tuple(p.strip().lower() for p in patterns if p.strip())

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def allows_host(self, host: str, port: int | None = None, *, exact_only: bool = False) -> bool:
        """``exact_only``: wildcard patterns do not count (used for plain-http URLs)."""
        host = host.lower().rstrip(".")
        for pattern in self.patterns:
            p_host, _, p_port = pattern.partition(":")
            if p_port and (port is None or str(port) != p_port):
                continue
            if exact_only and ("*" in p_host or "?" in p_host):
                continue
            if p_host.startswith("*."):
                suffix = p_host[1:]
                if host.endswith(suffix) and len(host) > len(suffix) and "*" not in host:
                    return True
            elif "*" in p_host or "?" in p_host:
                if fnmatch.fnmatchcase(host, p_host):
                    return True
            elif host == p_host:
                return True
        return False

    def allows_url(self, url: str) -> bool:
        """True if ``url`` is an ASCII http(s) URL without spaces, control characters or backslashes, has no
        user-info, its host is spelled with host-name characters only, and the host matches a pattern.

        Plain ``http`` needs a pattern naming the host exactly (a local emulator, ``127.0.0.1:10000``): a
        wildcard such as ``*.blob.core.windows.net`` admits only https, so no token crosses the wire in clear."""
        if not url.isascii() or "\\" in url or any(c <= " " or c == "\x7f" for c in url):
            return False
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            return False
        if parts.scheme not in ("https", "http") or not parts.hostname:
            return False
        if parts.username is not None or parts.password is not None or "@" in parts.netloc:
            return False
        if not _HOST_CHARS.fullmatch(parts.hostname):
            return False
        return self.allows_host(parts.hostname, port, exact_only=parts.scheme == "http")
