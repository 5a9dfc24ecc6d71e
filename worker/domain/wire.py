"""What travels on the wire besides the JSON bodies: application property names and text limits.

The ``gcw-*`` application properties are the worker's and the recovery tool's bookkeeping on Service Bus
messages (docs/messages.md, docs/operations.md); each name is defined here once.
"""

from __future__ import annotations

__all__ = [
    "ATTEMPT",
    "LAST_DEAD_LETTER_REASON",
    "MAX_DESCRIPTION",
    "ORIGINAL_MESSAGE_ID",
    "REPLAY_COUNT",
    "REPLAY_TO",
    "REQUEST_ID",
    "STATUS",
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
