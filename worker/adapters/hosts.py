"""The one URL policy: which hosts may receive a SAS token (``HostAllowList.allows_url``), and which URLs item
JSON may be fetched from (``item_url_problem``: the claim-check and blob-event SSRF rules)."""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from collections.abc import Iterable
from urllib.parse import urlsplit

# what a host name (or an IPv6 literal, brackets removed) may contain once urlsplit lower-cased it; anything else
# ("\\", "%", spaces) is read differently by other URL parsers, which could send a token to another host
_BAD_URL_CHAR = re.compile(r"[\x00-\x20\x7f\\]")  # controls, space, DEL, backslash (one regex, not per char)
_HOST_CHARS = re.compile(r"[a-z0-9.\-_]+|[0-9a-f:.]+", re.ASCII)
_IPISH_HOST = re.compile(r"[0-9a-fA-Fx.]+", re.ASCII)  # decimal/hex/octal IPv4 spellings like 0x7f.1 or 2130706433
MAX_URL_CHARS = 2048


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
        if not url.isascii() or _BAD_URL_CHAR.search(url):
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


def is_internal_host(host: str) -> bool:
    """True for loopback/private/link-local/reserved IP literals (incl. IPv4-mapped IPv6) and localhost names."""
    host = host.lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return not (mapped or ip).is_global


def is_explicitly_allowed(allow: HostAllowList | None, host: str, port: int | None) -> bool:
    """True when a pattern names this exact host (and port, if the pattern has one), without wildcards."""
    if allow is None:
        return False
    host = host.lower().rstrip(".")
    return host in allow.patterns or (port is not None and f"{host}:{port}" in allow.patterns)


def item_url_problem(url: str, allow: HostAllowList | None) -> str | None:
    """Why ``url`` may not be fetched as a claim check, or ``None`` if it may.

    Rules: an ASCII http(s) URL of at most 2048 characters without user-info; IP literals must be canonical;
    internal hosts (loopback, private, link-local, metadata, ``localhost``) and plain ``http`` are allowed only
    when the allow-list names the host exactly (no wildcard); and when ``allow`` is given, the host must match it.
    """
    if len(url) > MAX_URL_CHARS:
        return f"URL longer than {MAX_URL_CHARS} characters"
    if not url.isascii() or any(c <= " " or c == "\x7f" for c in url):
        return "URL must be ASCII without spaces or control characters (percent-encode them)"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "not a valid URL"
    if parts.scheme not in ("https", "http"):
        return "URL scheme must be https"
    host = parts.hostname
    if not host:
        return "URL has no host"
    if "@" in parts.netloc:
        return "URL must not contain user-info"
    if not _HOST_CHARS.fullmatch(host):
        return "URL host contains characters a host name cannot have"
    if _IPISH_HOST.fullmatch(host) and any(c.isdigit() for c in host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return "host is a non-canonical IP address"
    explicit = is_explicitly_allowed(allow, host, port)
    if is_internal_host(host) and not explicit:
        return "host is an internal address (loopback, private, link-local or localhost)"
    if allow is not None and not allow.allows_host(host, port):
        return "host is not on the item URL allow-list"
    if parts.scheme == "http" and allow is not None and not explicit:
        return "URL scheme must be https (plain http only for hosts named exactly in the allow-list)"
    return None
