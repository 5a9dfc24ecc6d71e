"""What travels on the wire besides the JSON bodies: application property names and text limits.

The ``gcw-*`` application properties are the worker's and the recovery tool's bookkeeping on Service Bus
messages (docs/messages.md, docs/operations.md); each name is defined here once.
"""

from __future__ import annotations

import re

__all__ = [
    "ATTEMPT",
    "LAST_DEAD_LETTER_REASON",
    "MAX_DESCRIPTION",
    "ORIGINAL_MESSAGE_ID",
    "REPLAY_COUNT",
    "REPLAY_TO",
    "REQUEST_ID",
    "STATUS",
    "description_code",
]

# Set by the runtime on a rescheduled retry copy: the attempt it is, and the request's first message id.
ATTEMPT = "gcw-attempt"
REQUEST_ID = "gcw-request-id"
# Set on every result message: its status, so subscribers can filter without reading the body.
STATUS = "gcw-status"
# Set by `geocatalog-worker dlq replay`.
ORIGINAL_MESSAGE_ID = "gcw-original-message-id"
REPLAY_COUNT = "gcw-replay-count"
REPLAY_TO = "gcw-replay-to"
LAST_DEAD_LETTER_REASON = "gcw-last-dead-letter-reason"

# A dead-letter description (Service Bus keeps 4,096 characters of it).
MAX_DESCRIPTION = 4096

# The worker's dead-letter descriptions name the underlying error code (worker/processing/processor.py
# ``_describe``, worker/servicebus/handling.py):
#   "<action> request <id> for collection '<c>' after <n> attempt(s): <Code>: <message>"
#   "... after <n> attempt(s): invalid request: <Code>: <field>: <message>"
#   "... after <n> attempt(s): all <n> items failed: <item id>: <Code>: <message>; <item id>: <Code>: ..."
#   "invalid request (attempt <n>): <Code>: <field>: <message>"
#   "processing raised <ExceptionType>: <message> (attempt <n>); traceback: ..."
_ITEMS_FAILED = re.compile(r"\d+ items failed: (?P<rest>.*)", re.DOTALL)
_ITEM_CODE = re.compile(r"(?:^|; )[^;]*?: (?P<code>[A-Z][A-Za-z0-9]*): ")
_HEAD_CODE = re.compile(
    r"(?:after \d+ attempt\(s\)|^invalid request \(attempt \d+\)): (?:invalid request: )?(?P<code>[A-Z][A-Za-z0-9]*): "
)
_CRASH_CODE = re.compile(r"^processing raised (?P<code>[A-Za-z_][A-Za-z0-9_.]*)[:( ]")


def description_code(description: str | None) -> str | None:
    """The error code a worker's dead-letter description names (several for a batch whose items failed with
    different codes, comma-separated, at most three then "..."); None for descriptions of others (Service Bus's
    ``MaxDeliveryCountExceeded``, hand-written ones)."""
    text = description or ""
    items = _ITEMS_FAILED.search(text)
    if items:
        codes = list(dict.fromkeys(m.group("code") for m in _ITEM_CODE.finditer(items.group("rest"))))
        if codes:
            return ", ".join(codes[:3]) + (", ..." if len(codes) > 3 else "")
    for pattern in (_HEAD_CODE, _CRASH_CODE):
        found = pattern.search(text)
        if found:
            return found.group("code")
    return None
