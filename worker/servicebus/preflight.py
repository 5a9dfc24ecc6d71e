"""The start-up preflight: what ``run`` checks before it takes requests, and what ``geocatalog-worker check`` prints.

Each check does what the worker will do, without side effects:

- ``receive``: open a receiver on the request entity and peek one message (the Listen right; nothing is locked).
- ``send_reply``: open a sender on the reply queue (the Send right; nothing is sent).
- ``schedule``: open a sender on the request queue, which retries are scheduled on (the Send right; skipped for
  topics and sessions, whose retries are abandoned instead).
- ``geocatalog``: one read, ``GET /stac/collections``, with in-call retries of ``PREFLIGHT_WAIT_SECONDS`` (the
  endpoint resolves and answers; the token's scope and the identity are accepted). A missing write permission is
  first seen on the first request (a 403 then holds intake).

A failing check carries the ``FaultCause`` when it is a configuration fault (a right or role missing, the
credential rejected, an entity or the endpoint missing); a check that fails for a passing reason (a timeout,
503) has none: ``run`` then starts anyway and the runtime's retries take over.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from azure.servicebus import NEXT_AVAILABLE_SESSION, ServiceBusClient
from azure.servicebus.exceptions import OperationTimeoutError

from worker.adapters.geocatalog.client import AuthError, GeoCatalogClient, NetworkError, NotFound
from worker.domain.errors import FaultCause, WorkerError
from worker.domain.secrets import redact
from worker.servicebus.faults import (
    CHECK_GEOCATALOG,
    CHECK_RECEIVE,
    CHECK_SCHEDULE,
    CHECK_SEND_REPLY,
    describe_servicebus_fault,
    servicebus_fault_cause,
)
from worker.servicebus.settings import ConsumerSettings

PREFLIGHT_WAIT_SECONDS = 5.0  # how long a check may wait for a session or an answer


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str
    cause: FaultCause | None = None  # set when the failure is a configuration fault
    skipped: bool = False

    @property
    def status(self) -> str:
        return "skipped" if self.skipped else "ok" if self.ok else "FAILED"


def _servicebus_check(name: str, entity: str, action: Callable[[], str]) -> CheckResult:
    try:
        return CheckResult(name, True, action())
    except Exception as exc:
        cause = servicebus_fault_cause(exc)
        if cause is not None:
            return CheckResult(name, False, describe_servicebus_fault(cause, entity, exc), cause)
        return CheckResult(name, False, redact(f"{entity}: {type(exc).__name__}: {exc}")[:1000])


def check_receive(client: ServiceBusClient, settings: ConsumerSettings) -> CheckResult:
    def action() -> str:
        session = NEXT_AVAILABLE_SESSION if settings.sessions else None
        wait = PREFLIGHT_WAIT_SECONDS
        if settings.request_queue:
            receiver = client.get_queue_receiver(settings.request_queue, session_id=session, max_wait_time=wait)
        else:
            receiver = client.get_subscription_receiver(
                settings.request_topic or "",
                settings.request_subscription or "",
                session_id=session,
                max_wait_time=wait,
            )
        try:
            with receiver:
                peeked = receiver.peek_messages(max_message_count=1)
        except OperationTimeoutError:
            if settings.sessions:  # the link was authorised; there is just no session waiting
                return f"{settings.entity}: listening (no session waiting)"
            raise
        return f"{settings.entity}: listening ({'messages waiting' if peeked else 'empty'})"

    return _servicebus_check(CHECK_RECEIVE, settings.entity, action)


def check_sender(client: ServiceBusClient, name: str, entity: str, why: str) -> CheckResult:
    def action() -> str:
        with client.get_queue_sender(entity):
            return f"{entity}: can send ({why})"

    return _servicebus_check(name, entity, action)


def check_geocatalog(geocatalog: GeoCatalogClient) -> CheckResult:
    where = redact(geocatalog.base_url)
    try:
        found = geocatalog.list_collections()
    except AuthError as exc:
        return CheckResult(CHECK_GEOCATALOG, False, str(exc), exc.cause)
    except NetworkError as exc:
        if exc.code == "ConnectionError":  # does not resolve, or refuses connections: the endpoint is wrong
            return CheckResult(CHECK_GEOCATALOG, False, f"{where}: {exc}", FaultCause.GEOCATALOG_ENDPOINT)
        return CheckResult(CHECK_GEOCATALOG, False, f"{where}: {exc}")
    except NotFound as exc:  # answers, but has no STAC API: not a GeoCatalog endpoint
        return CheckResult(CHECK_GEOCATALOG, False, f"{where}: {exc}", FaultCause.GEOCATALOG_ENDPOINT)
    except WorkerError as exc:
        return CheckResult(CHECK_GEOCATALOG, False, f"{where}: {exc.code}: {exc}")
    return CheckResult(CHECK_GEOCATALOG, True, f"{where}: read {len(found)} collection(s)")


def run_preflight(
    client: ServiceBusClient,
    settings: ConsumerSettings,
    geocatalog: GeoCatalogClient,
    *,
    direct_client: ServiceBusClient | None = None,
) -> list[CheckResult]:
    """Every check, in the order the worker needs them, each on the client the worker itself uses for that link
    (``direct_client``: the one without SDK retries, see ``wiring.build_servicebus_clients``)."""
    direct = direct_client or client
    results = [
        check_receive(direct if settings.sessions else client, settings),
        check_sender(direct, CHECK_SEND_REPLY, settings.reply_queue, "results"),
    ]
    if settings.can_reschedule and settings.request_queue:
        results.append(check_sender(direct, CHECK_SCHEDULE, settings.request_queue, "scheduled retries"))
    else:
        results.append(
            CheckResult(CHECK_SCHEDULE, True, "retries are abandoned, not scheduled (topic or sessions)", skipped=True)
        )
    results.append(check_geocatalog(geocatalog))
    return results


def format_table(results: list[CheckResult]) -> str:
    """A plain-text table: CHECK, RESULT, CAUSE, DETAIL."""
    rows = [("CHECK", "RESULT", "CAUSE", "DETAIL")] + [
        (r.name, r.status, str(r.cause) if r.cause else "-", r.detail) for r in results
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:3])) + "  " + row[3] for row in rows)
