"""``geocatalog-worker dlq ...``: inspect, group, replay, export and purge a dead-letter queue, safely.

summary / list / show / export only peek (no lock, no change). replay / purge select by peeking, then lock
exactly the selected messages by sequence number (see ``worker.recovery.settle``). Exit status: 0 when every
selected message was handled as asked (refusals past --max-replays are reported, not errors), 1 when some were
not (send failures, not reached, not completed), 2 for usage errors.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click
import structlog

from worker.domain.secrets import redact
from worker.options import servicebus_options, validate_servicebus_options
from worker.recovery.browse import peek_records, select
from worker.recovery.entity import Entity, ReplayTarget, TargetError, resolve_target
from worker.recovery.export import ExportWriter, read_records
from worker.recovery.records import DeadLetterRecord, RecordError
from worker.recovery.replay import Pacer, Replayer, ReplayReport
from worker.recovery.selection import Filters, SelectionError
from worker.recovery.settle import Decision, SettleOutcome, settle_selected
from worker.recovery.summary import render_summary, render_table, summarize, wrap_cell
from worker.servicebus.client import make_servicebus_client
from worker.servicebus.faults import servicebus_error_text

log = structlog.get_logger(__name__)
F = TypeVar("F", bound=Callable[..., Any])


# ---- shared options ---------------------------------------------------------------------------------------
def filter_options(func: F) -> F:
    decorators = [
        click.option("--reason", "reasons", multiple=True, help="Dead-letter reason (repeatable), e.g. IngestFailed."),
        click.option(
            "--collection", "collections", multiple=True, help="Collection named in the request (repeatable)."
        ),
        click.option("--action", "actions", multiple=True, help="Request action: ingest or delete (repeatable)."),
        click.option("--older-than", help="Enqueued before: a duration ago (30m, 2h, 7d) or an ISO-8601 timestamp."),
        click.option("--newer-than", help="Enqueued at/after: a duration ago (30m, 2h, 7d) or an ISO-8601 timestamp."),
        click.option(
            "--message-id", "message_ids", multiple=True, help="Message id or original message id (repeatable)."
        ),
        click.option(
            "--description",
            "descriptions",
            multiple=True,
            help="Text the dead-letter description contains, case-insensitive (repeatable), e.g. AuthenticationFailed.",
        ),
        click.option(
            "--max-messages",
            type=click.IntRange(min=1),
            help="Read at most this many dead-lettered messages (default: all).",
        ),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def limit_option(func: F) -> F:
    return click.option("--limit", type=click.IntRange(min=1), help="Act on at most this many matching messages.")(func)


class Session:
    """The client, entity and filters of one command invocation."""

    def __init__(self, kwargs: dict[str, Any]) -> None:
        conn = kwargs.pop("servicebus_connection_string")
        namespace = kwargs.pop("servicebus_namespace")
        queue, topic, sub = kwargs.pop("request_queue"), kwargs.pop("request_topic"), kwargs.pop("request_subscription")
        validate_servicebus_options(conn, namespace, queue, topic, sub)
        self.entity = Entity(queue=queue, topic=topic, subscription=sub)
        self._conn, self._namespace = conn, namespace
        self.max_messages: int | None = kwargs.pop("max_messages", None)
        try:
            self.filters = Filters.from_options(
                reasons=kwargs.pop("reasons", ()),
                collections=kwargs.pop("collections", ()),
                actions=kwargs.pop("actions", ()),
                message_ids=kwargs.pop("message_ids", ()),
                descriptions=kwargs.pop("descriptions", ()),
                older_than=kwargs.pop("older_than", None),
                newer_than=kwargs.pop("newer_than", None),
            )
        except SelectionError as exc:
            raise click.UsageError(str(exc)) from None

    def client(self) -> Any:
        return make_servicebus_client(connection_string=self._conn, namespace=self._namespace)

    def records(self, receiver: Any) -> Iterator[DeadLetterRecord]:
        return peek_records(receiver, entity=self.entity.path, max_messages=self.max_messages)


@contextlib.contextmanager
def sdk_errors() -> Iterator[None]:
    """SDK and file errors become one clear line (secrets redacted), not a traceback."""
    try:
        yield
    except (click.ClickException, click.exceptions.Exit, click.Abort):
        raise
    except (RecordError, TargetError) as exc:
        raise click.ClickException(str(exc)) from None
    except Exception as exc:
        from azure.servicebus.exceptions import ServiceBusError

        if isinstance(exc, ServiceBusError):
            raise click.ClickException(servicebus_error_text(exc)) from None
        if isinstance(exc, ValueError | OSError):
            raise click.ClickException(redact(f"{type(exc).__name__}: {exc}")[:1000]) from None
        raise


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str))


def _progress(length: int, label: str) -> Any:
    return click.progressbar(length=length, label=label, file=sys.stderr, show_pos=True)


# ---- the group --------------------------------------------------------------------------------------------
class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is at the time (stdout stays clean for tables and JSON)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


@click.group("dlq", context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    default="WARNING",
    show_default=True,
    help="JSON logs on stderr; INFO logs one line per replayed / refused message (an audit trail).",
)
def dlq_group(log_level: str) -> None:
    """Inspect, group, replay, export and purge the dead-letter queue of the request queue or subscription.

    Uses the same connection options as `run`. Inspection (summary, list, show, export) only peeks:
    nothing is locked or changed. See docs/operations.md for the runbook.
    """
    from worker.observability.logging import configure_logging

    configure_logging(log_level, stream=_CurrentStderr())  # type: ignore[arg-type]


@dlq_group.command("summary")
@servicebus_options
@filter_options
@click.option("--json", "as_json", is_flag=True, help="One JSON document for scripts.")
def summary_command(as_json: bool, **kwargs: Any) -> None:
    """Counts by dead-letter reason, collection and action, with first / last seen (peek only)."""
    session = Session(kwargs)
    with sdk_errors(), session.client() as client, session.entity.dead_letter_receiver(client) as receiver:
        matching = (r for r in session.records(receiver) if session.filters.matches(r))
        result = summarize(matching, entity=session.entity.path)
    if as_json:
        _emit_json(result.to_dict())
    else:
        click.echo(render_summary(result))


def _count_option(name: str, default: int, minimum: int, help: str) -> Callable[[F], F]:
    return click.option(name, type=click.IntRange(min=minimum), default=default, show_default=True, help=help)


LIST_HEADERS = ["SEQ", "ENQUEUED", "REASON", "ERROR CODE", "COLLECTION", "ACTION", "DELIVERIES", "REPLAYS"]
LIST_HEADERS += ["MESSAGE ID", "DESCRIPTION"]


def _list_rows(records: list[DeadLetterRecord], width: int, max_lines: int | None) -> list[list[str]]:
    return [
        [
            str(r.sequence_number),
            r.enqueued_time.strftime("%Y-%m-%d %H:%M:%SZ") if r.enqueued_time else "-",
            r.dead_letter_reason or "-",
            r.error_code or "-",
            r.collection or "-",
            r.action or "-",
            str(r.delivery_count if r.delivery_count is not None else "-"),
            str(r.replay_count),
            r.message_id or "-",
            wrap_cell(r.dead_letter_error_description or "-", width, max_lines),
        ]
        for r in records
    ]


@dlq_group.command("list")
@servicebus_options
@filter_options
@limit_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "ndjson"]),
    default="table",
    show_default=True,
    help="ndjson: one JSON object per message with body, properties, reason, error code, description, delivery count.",
)
@_count_option("--description-width", 60, 20, "Width the DESCRIPTION column wraps at.")
@_count_option(
    "--description-lines", 3, 0, "Lines of DESCRIPTION per message; a longer one ends with '… (+N chars)'. 0: all."
)
def list_command(fmt: str, limit: int | None, description_width: int, description_lines: int, **kwargs: Any) -> None:
    """List dead-lettered messages (peek only: nothing is locked or changed).

    The table shows the dead-letter REASON (IngestFailed, ...) and the underlying ERROR CODE the worker's
    description names (CollectionDoesNotExist, ...) in their own columns; `dlq show ID` prints everything.
    """
    session = Session(kwargs)
    with sdk_errors(), session.client() as client, session.entity.dead_letter_receiver(client) as receiver:
        chosen = select(session.records(receiver), session.filters, limit=limit)
    if fmt == "ndjson":
        for record in chosen:
            _emit_json(record.to_dict())
        return
    rows = _list_rows(chosen, description_width, description_lines or None)
    click.echo(render_table(LIST_HEADERS, rows))
    click.echo(f"{len(chosen)} message(s) matching {session.filters.describe()}", err=True)


@dlq_group.command("show")
@servicebus_options
@click.argument("message_id")
@click.option("--max-messages", type=click.IntRange(min=1), help="Read at most this many messages while searching.")
def show_command(message_id: str, **kwargs: Any) -> None:
    """Show every dead-lettered copy of MESSAGE_ID (message id, original message id, or sequence number)."""
    session = Session(kwargs)
    with sdk_errors(), session.client() as client, session.entity.dead_letter_receiver(client) as receiver:
        found = [
            r
            for r in session.records(receiver)
            if message_id in (r.message_id, r.original_message_id) or message_id == str(r.sequence_number)
        ]
    if not found:
        raise click.ClickException(f"no dead-lettered message with id or sequence number {message_id!r}")
    for record in found:
        click.echo(json.dumps(record.to_dict(), indent=2, ensure_ascii=False, default=str))


@dlq_group.command("export")
@servicebus_options
@filter_options
@limit_option
@click.option(
    "--to", "path", required=True, type=click.Path(dir_okay=False), help="New NDJSON file (never overwritten)."
)
def export_command(path: str, limit: int | None, **kwargs: Any) -> None:
    """Write matching messages to an NDJSON file that keeps everything needed to replay later (peek only)."""
    session = Session(kwargs)
    with sdk_errors(), session.client() as client, session.entity.dead_letter_receiver(client) as receiver:
        chosen = select(session.records(receiver), session.filters, limit=limit)
        with ExportWriter(path) as writer:
            for record in chosen:
                writer.write(record)
    click.echo(f"exported {writer.count} message(s) to {path}", err=True)


# ---- replay -------------------------------------------------------------------------------------------
@dlq_group.command("replay")
@servicebus_options
@filter_options
@limit_option
@click.option(
    "--from", "from_file", type=click.Path(exists=True, dir_okay=False), help="Replay an export file instead."
)
@click.option("--dry-run", is_flag=True, help="Show what would be replayed; change nothing.")
@click.option("--rate", type=click.FloatRange(min=0.01), help="At most this many messages per second.")
@click.option(
    "--max-replays",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Refuse messages already replayed this many times (they stay in the DLQ and are reported).",
)
@click.option("--replay-queue", help="Send replays to this queue instead of the request queue / topic.")
@click.option(
    "--replay-via-topic",
    is_flag=True,
    help="For a subscription: send to its topic with gcw-replay-to=<subscription> (needs filter rules).",
)
@click.option(
    "--batch", type=click.IntRange(1, 256), default=32, show_default=True, help="Messages locked per receive."
)
@click.option("--json", "as_json", is_flag=True, help="Final report as JSON.")
def replay_command(
    limit: int | None,
    from_file: str | None,
    dry_run: bool,
    rate: float | None,
    max_replays: int,
    replay_queue: str | None,
    replay_via_topic: bool,
    batch: int,
    as_json: bool,
    **kwargs: Any,
) -> None:
    """Re-send matching requests (new message id, original kept); remove the DLQ copy only after the send."""
    session = Session(kwargs)
    try:
        target = resolve_target(session.entity, replay_queue=replay_queue, via_topic=replay_via_topic)
    except TargetError as exc:
        raise click.UsageError(str(exc)) from None
    source = from_file or session.entity.dead_letter_path
    report = ReplayReport(target=target.describe(), source=source, dry_run=dry_run)
    with sdk_errors(), session.client() as client:
        if from_file:
            _replay_file(client, session, target, report, Path(from_file), limit, rate, max_replays)
        else:
            _replay_dlq(client, session, target, report, limit, rate, max_replays, batch)
    if as_json:
        _emit_json(report.to_dict())
    else:
        click.echo(report.render())
    if not report.ok:
        sys.exit(1)


def _replay_dlq(
    client: Any,
    session: Session,
    target: ReplayTarget,
    report: ReplayReport,
    limit: int | None,
    rate: float | None,
    max_replays: int,
    batch: int,
) -> None:
    with session.entity.dead_letter_receiver(client) as receiver:
        chosen = select(session.records(receiver), session.filters, limit=limit)
        report.selected = len(chosen)
        planner = Replayer(None, target, report, max_replays=max_replays)
        replayable = {r.sequence_number: r for r in chosen if planner.check(r)}  # refusals are reported, not locked
        if report.dry_run or not replayable:
            return
        # keep locks short: a batch must be sent within a few seconds at the chosen rate
        receive_batch = max(1, min(batch, int(rate * 5))) if rate else batch
        with target.sender(client) as sender, _progress(len(replayable), "replaying") as bar:
            replayer = Replayer(sender, target, report, max_replays=max_replays, pacer=Pacer(rate))
            outcome = settle_selected(
                receiver,
                replayable,
                lambda m: replayer.replay(DeadLetterRecord.from_message(m, entity=session.entity.path)),
                batch=receive_batch,
                on_handled=lambda _m, _d: bar.update(1),
            )
        _merge_outcome(report, outcome, replayable)


def _merge_outcome(report: ReplayReport, outcome: SettleOutcome, chosen: dict[int, DeadLetterRecord]) -> None:
    report.not_reached = sorted(outcome.not_reached)
    report.released = outcome.released
    report.stopped_because = outcome.stopped_because
    for seq, error in outcome.complete_failed:
        report.not_completed.append(
            {"sequence_number": seq, "message_id": chosen[seq].message_id, "why": f"complete failed: {error}"}
        )


def _replay_file(
    client: Any,
    session: Session,
    target: ReplayTarget,
    report: ReplayReport,
    path: Path,
    limit: int | None,
    rate: float | None,
    max_replays: int,
) -> None:
    chosen = select(read_records(path), session.filters, limit=limit)
    report.selected = len(chosen)
    other = {r.entity for r in chosen if r.entity and r.entity != session.entity.path}
    if other:
        click.echo(
            f"note: the file holds messages dead-lettered on {sorted(other)}; replaying to {target.describe()}",
            err=True,
        )
    if report.dry_run:
        for record in chosen:
            Replayer(None, target, report, max_replays=max_replays).check(record)
        return
    with target.sender(client) as sender, _progress(len(chosen), "replaying") as bar:
        replayer = Replayer(sender, target, report, max_replays=max_replays, pacer=Pacer(rate))
        for index, record in enumerate(chosen):
            try:
                replayer.replay(record)
            except Exception as exc:  # StopSettling: too many failures in a row
                report.stopped_because = str(exc)
                report.not_reached = [r.sequence_number or 0 for r in chosen[index + 1 :]]
                break
            finally:
                bar.update(1)


# ---- purge --------------------------------------------------------------------------------------------
@dlq_group.command("purge")
@servicebus_options
@filter_options
@limit_option
@click.option(
    "--yes",
    is_flag=True,
    allow_from_autoenv=False,
    help="Required: confirm that matching messages are removed from the DLQ.",
)
@click.option(
    "--all",
    "purge_all",
    is_flag=True,
    allow_from_autoenv=False,
    help="Required when no filter is given: purge every message.",
)
@click.option(
    "--to",
    "path",
    type=click.Path(dir_okay=False),
    help="Export file written before anything is removed (default: dlq-purge-<entity>-<time>.ndjson).",
)
@click.option("--no-export", is_flag=True, help="Do not export first (the messages are gone for good).")
@click.option("--dry-run", is_flag=True, help="Count what would be purged; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Final report as JSON.")
def purge_command(
    limit: int | None,
    yes: bool,
    purge_all: bool,
    path: str | None,
    no_export: bool,
    dry_run: bool,
    as_json: bool,
    **kwargs: Any,
) -> None:
    """Remove matching messages from the DLQ, each one exported (and fsync'd) before it is removed."""
    session = Session(kwargs)
    if session.filters.empty and not purge_all:
        raise click.UsageError(
            "no filter given: add filters (--reason, --older-than, ...) or --all to purge everything"
        )
    if not yes and not dry_run:
        raise click.UsageError("purge removes messages: look with --dry-run first, then pass --yes")
    if no_export and path:
        raise click.UsageError("give either --to or --no-export, not both")
    if not no_export and not path:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        path = f"dlq-purge-{re.sub(r'[^A-Za-z0-9_.-]+', '_', session.entity.path)}-{stamp}.ndjson"
    result: dict[str, Any] = {"entity": session.entity.dead_letter_path, "dry_run": dry_run, "export": path}
    with sdk_errors(), session.client() as client, session.entity.dead_letter_receiver(client) as receiver:
        chosen = {r.sequence_number: r for r in select(session.records(receiver), session.filters, limit=limit)}
        result["selected"] = len(chosen)
        if dry_run or not chosen:
            result.update(purged=0, exported=0, not_reached=[])
        else:
            with contextlib.ExitStack() as stack:
                writer = stack.enter_context(ExportWriter(path)) if path else None
                bar = stack.enter_context(_progress(len(chosen), "purging"))

                def handle(message: Any) -> Decision:
                    if writer is not None:
                        writer.write(DeadLetterRecord.from_message(message, entity=session.entity.path))
                    return Decision.COMPLETE

                outcome = settle_selected(
                    receiver,
                    chosen,
                    handle,
                    before_complete=writer.sync if writer is not None else None,
                    on_handled=lambda _m, _d: bar.update(1),
                )
            result.update(
                purged=outcome.completed,
                exported=writer.count if writer is not None else 0,
                not_reached=sorted(outcome.not_reached),
                not_completed=[seq for seq, _ in outcome.complete_failed],
                stopped_because=outcome.stopped_because,
            )
    if as_json:
        _emit_json(result)
    else:
        verb = "would purge" if dry_run else "purged"
        count = result["selected"] if dry_run else result["purged"]
        click.echo(f"{verb} {count} of {result['selected']} selected message(s) from {result['entity']}")
        if path and not dry_run:
            click.echo(f"exported {result['exported']} message(s) first to {path}")
        if result.get("not_reached"):
            click.echo(f"not reached (still in the DLQ): {len(result['not_reached'])}")
    if result.get("not_reached") or result.get("not_completed"):
        sys.exit(1)
