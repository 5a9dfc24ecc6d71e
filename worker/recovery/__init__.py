"""Dead-letter recovery: ``geocatalog-worker dlq summary|list|show|replay|export|purge``.

Modules, one job each:

- ``records``   — ``DeadLetterRecord``: a plain, lossless copy of one dead-lettered message (+ NDJSON form)
- ``selection`` — durations / timestamps and the ``Filters`` every command shares
- ``summary``   — grouping by reason, collection, action with first/last seen
- ``entity``    — which entity (queue or topic subscription), its dead-letter receiver and the replay target
- ``browse``    — peek-only iteration over a dead-letter queue (never locks)
- ``settle``    — lock exactly the selected messages (by sequence number) and settle them, hold nothing longer
- ``replay``    — building replay messages, the replay loop and its report
- ``export``    — NDJSON writing (fsync'd) and reading with precise errors
- ``cli``       — the click group ``dlq_group``
"""
