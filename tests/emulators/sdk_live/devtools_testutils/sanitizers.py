"""Sanitizers and matchers: they configure the test proxy's recordings; live mode without recording has no proxy.

The real functions send a request to the proxy only when a recording is made (``is_live_and_not_recording()``
makes them return at once); here every one of them is that early return.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "add_body_key_sanitizer",
    "add_body_regex_sanitizer",
    "add_body_string_sanitizer",
    "add_continuation_sanitizer",
    "add_general_regex_sanitizer",
    "add_general_string_sanitizer",
    "add_header_regex_sanitizer",
    "add_header_string_sanitizer",
    "add_oauth_response_sanitizer",
    "add_remove_header_sanitizer",
    "add_uri_regex_sanitizer",
    "add_uri_string_sanitizer",
    "remove_batch_sanitizers",
    "set_bodiless_matcher",
    "set_custom_default_matcher",
    "set_default_session_settings",
    "set_headerless_matcher",
]


def _no_proxy(*args: Any, **kwargs: Any) -> None:
    """Nothing to configure: no recording is made."""


add_body_key_sanitizer = _no_proxy
add_body_regex_sanitizer = _no_proxy
add_body_string_sanitizer = _no_proxy
add_continuation_sanitizer = _no_proxy
add_general_regex_sanitizer = _no_proxy
add_general_string_sanitizer = _no_proxy
add_header_regex_sanitizer = _no_proxy
add_header_string_sanitizer = _no_proxy
add_oauth_response_sanitizer = _no_proxy
add_remove_header_sanitizer = _no_proxy
add_uri_regex_sanitizer = _no_proxy
add_uri_string_sanitizer = _no_proxy
remove_batch_sanitizers = _no_proxy
set_bodiless_matcher = _no_proxy
set_custom_default_matcher = _no_proxy
set_default_session_settings = _no_proxy
set_headerless_matcher = _no_proxy
