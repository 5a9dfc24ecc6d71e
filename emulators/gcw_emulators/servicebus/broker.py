"""The proton glue: connections, links, CBS, ``$management``, dispositions and credit, on top of ``Store``.

Runs on the proton container's thread only. Every callback is guarded: an exception is logged and answered
with an AMQP error where possible, and never stops the container.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from typing import Any

import structlog
from proton import (
    Array,
    Condition,
    Delivery,
    Disposition,
    Endpoint,
    Handler,
    Link,
    Message,
    Terminus,
    symbol,
    timestamp,
)
from proton.reactor import Container, EventInjector

from gcw_emulators.servicebus import codec
from gcw_emulators.servicebus.access import LISTEN, SEND, AccessControl, TokenRejected
from gcw_emulators.servicebus.sequencing import SequencingAcceptor, WireStats
from gcw_emulators.servicebus.store import (
    ArgumentError,
    Entity,
    EntityNotFound,
    Store,
    StoredMessage,
    StoreError,
    Topic,
)

log = structlog.get_logger(__name__)

TICKS_EPOCH = 621355968000000000  # .NET ticks at the Unix epoch
SESSION_FILTER = symbol("com.microsoft:session-filter")
LOCKED_UNTIL_UTC = symbol("com.microsoft:locked-until-utc")
TIMEOUT_PROP = symbol("com.microsoft:timeout")
TRACKING_ID = symbol("com.microsoft:tracking-id")
MAX_MESSAGE_SIZE = 256 * 1024  # Azure Standard tier
# a NEXT_AVAILABLE_SESSION attach without com.microsoft:timeout: Azure waits 00:01:05 (Azure/azure-sdk-for-python#28495)
DEFAULT_SESSION_WAIT = 65.0
CREDIT_WINDOW = 1000

ACTIVE = Endpoint.LOCAL_ACTIVE


def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Never let an exception escape into proton (it would stop the whole container)."""

    @functools.wraps(fn)
    def wrapper(self: Broker, event: Any) -> Any:
        try:
            return fn(self, event)
        except Exception:
            log.exception("servicebus_emulator_callback_failed", callback=fn.__name__)
            return None

    return wrapper


def error_condition(name: str, description: str) -> Condition:
    """Every error carries a non-null info map: pyamqp indexes ``error[2]`` and hangs or crashes without it."""
    return Condition(name, description, {TRACKING_ID: str(uuid.uuid4())})


def entity_path(address: str | None) -> str:
    """``amqps://host:port/q1`` → ``q1``; ``q1/$management`` stays as is."""
    address = address or ""
    if "://" in address:
        rest = address.split("://", 1)[1]
        address = rest.split("/", 1)[1] if "/" in rest else ""
    return address.strip("/")


def _ticks(epoch_seconds: float) -> int:
    return int(epoch_seconds * 1000) * 10000 + TICKS_EPOCH


def _elements(value: Any) -> list[Any]:
    if isinstance(value, Array):
        return list(value.elements)
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return list(value)
    return [value]


def _str(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes | memoryview):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


class MgmtError(Exception):
    def __init__(self, status: int, condition: str, description: str) -> None:
        super().__init__(description)
        self.status, self.condition, self.description = status, condition, description


class Broker(Handler):
    """AMQP 1.0 endpoint speaking the Service Bus dialect the azure-servicebus SDK expects."""

    def __init__(
        self,
        store: Store,
        host: str,
        port: int,
        *,
        on_ready: Callable[[int], None],
        on_commit: Callable[[], None] | None = None,
        tick_interval: float = 0.05,
        max_message_size: int = MAX_MESSAGE_SIZE,
        access: AccessControl | None = None,
    ) -> None:
        super().__init__()
        self.store = store
        self.access = access or AccessControl()
        self.host, self.port = host, port
        self.on_ready = on_ready
        self.on_commit = on_commit or (lambda: None)
        self.tick_interval = tick_interval
        self.max_message_size = max_message_size
        self.consumers: dict[str, list[Link]] = {}
        self.pending_sessions: list[Link] = []
        self.acceptor: Any = None
        self.container: Container | None = None
        self.injector = EventInjector()
        self.connections: set[Any] = set()
        self._touched: list[str] = []
        self.start_error: Exception | None = None
        self.stopping = False
        self.wire = WireStats()

    # ------------------------------------------------------------------ lifecycle
    def on_reactor_init(self, event: Any) -> None:
        self.container = event.container
        try:
            self._listen()
        except Exception as exc:
            self.start_error = exc
            self.stopping = True
            self.container.stop()
            self.on_ready(-1)

    def _listen(self) -> None:
        assert self.container is not None
        self.container.selectable(self.injector)
        # transfers in any delivery-id order, as Azure accepts them (see sequencing.py)
        self.acceptor = SequencingAcceptor(self.container, self.host, self.port, self.wire)
        self.port = self._backlog(self.acceptor)
        self.container.schedule(self.tick_interval, self)
        log.info("servicebus_emulator_listening", host=self.host, port=self.port)
        self.on_ready(self.port)

    @staticmethod
    def _backlog(acceptor: SequencingAcceptor) -> int:
        sock = acceptor._selectable._delegate
        sock.listen(512)  # proton listens with a backlog of 10: too small for bursts of SDK connections
        return int(sock.getsockname()[1])

    def request_stop(self) -> None:
        """Thread-safe: ask the container to close everything and return from ``run()``."""
        from proton.reactor import ApplicationEvent

        self.injector.trigger(ApplicationEvent("emulator_stop"))

    @guarded
    def on_emulator_stop(self, event: Any) -> None:
        self.stopping = True
        if self.acceptor is not None:
            self.acceptor.close()
        for conn in list(self.connections):
            if conn.state & ACTIVE:
                conn.condition = error_condition("amqp:connection:forced", "The emulator is shutting down.")
                conn.close()
        self.injector.close()
        if self.container is not None:
            self.container.schedule(0.5, _StopContainer(self.container))

    def on_timer_task(self, event: Any) -> None:
        try:
            self.tick()
        except Exception:
            log.exception("servicebus_emulator_tick_failed")
        finally:
            if self.container is not None and not self.stopping:
                self.container.schedule(self.tick_interval, self)

    def tick(self) -> None:
        result = self.store.tick(waiting=lambda owner: bool(owner.state & ACTIVE) and owner.credit > 0)
        self.on_commit()
        for owner, path, sid in result.lost_sessions:
            if owner.state & ACTIVE:
                log.info("servicebus_emulator_session_lock_lost", entity=path, session_id=sid)
                owner.condition = error_condition(
                    "com.microsoft:session-lock-lost", f"The session lock has expired on the session '{sid}'."
                )
                self._drop_consumer(owner)
                owner.close()
        for path in result.changed:
            self.pump(path)
        if self.pending_sessions:
            self._retry_pending_sessions()

    # ------------------------------------------------------------------ connections
    @guarded
    def on_connection_remote_open(self, event: Any) -> None:
        conn = event.connection
        conn.reply_links = {}
        conn.pending_replies = []
        conn.grants = {}
        self.connections.add(conn)
        conn.open()

    @guarded
    def on_session_remote_open(self, event: Any) -> None:
        event.session.open()

    @guarded
    def on_session_remote_close(self, event: Any) -> None:
        if event.session.state & ACTIVE:
            event.session.close()

    @guarded
    def on_connection_remote_close(self, event: Any) -> None:
        self._forget_connection(event.connection)
        if event.connection.state & ACTIVE:
            event.connection.close()

    @guarded
    def on_transport_closed(self, event: Any) -> None:
        if event.connection is not None:
            self._forget_connection(event.connection)

    def _forget_connection(self, conn: Any) -> None:
        """A vanished client: its consumers go away; its message locks stay until they expire (as in Azure)."""
        if conn not in self.connections:
            return
        self.connections.discard(conn)
        link = conn.link_head(0)
        while link:
            self._drop_consumer(link)
            link = link.next(0)

    # ------------------------------------------------------------------ links
    @guarded
    def on_link_remote_open(self, event: Any) -> None:
        link = event.link
        address = link.remote_target.address if link.is_receiver else link.remote_source.address
        path = entity_path(address)
        link.path = path
        link.session_id = None
        link.kind = "entity"
        low = path.lower()
        try:
            if low == "$cbs":
                link.kind = "cbs"
            elif low.endswith("/$management"):
                link.kind = "mgmt"
                self.store.resolve_any(path[: -len("/$management")])
            elif link.is_receiver:
                self.store.resolve_target(path)
            else:
                self.store.resolve(path)
        except StoreError as exc:
            self._refuse(link, exc.condition, str(exc))
            return
        if link.kind != "cbs" and not self._authorize_attach(link):
            return
        if link.kind in ("cbs", "mgmt"):
            self._open_echo(link)
            if link.is_sender:
                link.connection.reply_links[low] = link
                self._flush_replies(link.connection)
            else:
                link.flow(CREDIT_WINDOW)
            return
        if link.is_receiver:  # the client sends to a queue or topic
            self._open_echo(link)
            link.max_message_size = self.max_message_size
            link.open()
            link.flow(CREDIT_WINDOW)
            return
        self._attach_consumer(link)

    def _open_echo(self, link: Link) -> None:
        link.source.copy(link.remote_source)
        link.target.copy(link.remote_target)
        link.snd_settle_mode = link.remote_snd_settle_mode
        link.rcv_settle_mode = Link.RCV_FIRST
        link.open()

    def _refuse(self, link: Link, condition: str, description: str) -> None:
        """Attach with a null terminus on the client's side, then detach with the error (pyamqp's contract)."""
        log.info("servicebus_emulator_link_refused", address=getattr(link, "path", None), condition=condition)
        if link.is_sender:
            link.target.copy(link.remote_target)
            link.source.type = Terminus.UNSPECIFIED
        else:
            link.source.copy(link.remote_source)
            link.target.type = Terminus.UNSPECIFIED
        link.open()
        link.condition = error_condition(condition, description)
        link.close()

    def _read_filter(self, link: Link) -> tuple[bool, str | None]:
        data = link.remote_source.filter
        data.rewind()
        if data.next() is None:
            return False, None
        filters = codec.plain(data.get_object())
        if not isinstance(filters, dict) or (
            SESSION_FILTER not in filters and "com.microsoft:session-filter" not in filters
        ):
            return False, None
        value = filters.get(SESSION_FILTER, filters.get("com.microsoft:session-filter"))
        if hasattr(value, "value"):  # a described filter
            value = value.value
        if value is not None and not isinstance(value, str | bytes | memoryview):
            # Azure's session ids are strings (the SDKs send a string filter): session_id=1 fails to attach
            raise ArgumentError(f"The session filter must be a string, not {value!r}.")
        return True, _str(value)

    def _attach_consumer(self, link: Link) -> None:
        entity = self.store.resolve(link.path)
        link.path = entity.path
        link.peek_lock = link.remote_snd_settle_mode != Link.SND_SETTLED
        try:
            has_filter, session_id = self._read_filter(link)
        except ArgumentError as exc:
            self._refuse(link, exc.condition, str(exc))
            return
        if entity.requires_session and not has_filter:
            self._refuse(
                link,
                "amqp:not-allowed",
                f"It is not possible for an entity that requires sessions to "
                f"create a non-sessionful message receiver: '{entity.path}'.",
            )
            return
        if has_filter and not entity.requires_session:
            self._refuse(
                link,
                "com.microsoft:argument-error",
                f"The entity '{entity.path}' does not require sessions: receive without a session id.",
            )
            return
        if has_filter:
            props = link.remote_properties or {}
            wait_ms = props.get(TIMEOUT_PROP) or props.get("com.microsoft:timeout")
            link.session_deadline = self.store.now() + (float(wait_ms) / 1000 if wait_ms else DEFAULT_SESSION_WAIT)
            link.wanted_session = session_id
            if not self._try_accept_session(link):
                self.pending_sessions.append(link)
            return
        self._open_echo(link)
        self.consumers.setdefault(entity.path, []).append(link)
        self.pump(entity.path)

    def _try_accept_session(self, link: Link) -> bool:
        try:
            sid = self.store.accept_session(link.path, link.wanted_session, link)
        except StoreError as exc:
            self._refuse(link, exc.condition, str(exc))
            return True
        if sid is None:
            return False
        link.session_id = sid
        link.source.copy(link.remote_source)
        link.target.copy(link.remote_target)
        link.source.filter.clear()
        link.source.filter.put_object({SESSION_FILTER: sid})
        link.snd_settle_mode = link.remote_snd_settle_mode
        link.rcv_settle_mode = Link.RCV_FIRST
        link.properties = {LOCKED_UNTIL_UTC: _ticks(self.store.session_locked_until(link.path, sid))}
        link.open()
        self.consumers.setdefault(link.path, []).append(link)
        log.info("servicebus_emulator_session_accepted", entity=link.path, session_id=sid)
        self.pump(link.path)
        return True

    def _retry_pending_sessions(self) -> None:
        now = self.store.now()
        still: list[Link] = []
        for link in self.pending_sessions:
            if link.state & Endpoint.REMOTE_CLOSED or not link.connection.state & ACTIVE:
                continue
            if self._try_accept_session(link):
                continue
            if now >= link.session_deadline:
                self._refuse(link, "com.microsoft:timeout", "There are no sessions available to accept.")
                continue
            still.append(link)
        self.pending_sessions = still

    def _drop_consumer(self, link: Link) -> None:
        path = getattr(link, "path", None)
        if path is None:
            return
        links = self.consumers.get(path)
        if links and link in links:
            links.remove(link)
        if link in self.pending_sessions:
            self.pending_sessions.remove(link)
        sid = getattr(link, "session_id", None)
        if sid is not None:
            link.session_id = None
            for changed in self.store.release_session(path, sid, link):
                self.pump(changed)
        if getattr(link, "kind", None) in ("cbs", "mgmt") and link.is_sender:
            replies = getattr(link.connection, "reply_links", {})
            if replies.get(path.lower()) == link:
                del replies[path.lower()]

    @guarded
    def on_link_remote_close(self, event: Any) -> None:
        link = event.link
        self._drop_consumer(link)
        if link.state & ACTIVE:
            link.close()

    @guarded
    def on_link_flow(self, event: Any) -> None:
        link = event.link
        if link.is_sender:
            if getattr(link, "kind", None) == "entity":
                self._pump_link(link)
            else:
                self._flush_replies(link.connection)

    # ------------------------------------------------------------------ delivery to consumers
    def pump(self, path: str) -> None:
        links = [lk for lk in self.consumers.get(path, ()) if lk.credit > 0 and lk.state & ACTIVE]
        while links:
            progressed = []
            for link in links:
                if self._deliver_one(link) and link.credit > 0:
                    progressed.append(link)
            links = progressed
        for link in self.consumers.get(path, ()):
            if link.drain_mode and link.credit > 0:
                link.drained()

    def _pump_link(self, link: Link) -> None:
        if link.state & ACTIVE and link in self.consumers.get(link.path, ()):
            while link.credit > 0 and self._deliver_one(link):
                pass
        if link.drain_mode and link.credit > 0:
            link.drained()

    def _deliver_one(self, link: Link) -> bool:
        try:
            owner = link if link.session_id is not None else None
            msg = self.store.next_message(link.path, peek_lock=link.peek_lock, session_id=link.session_id, owner=owner)
        except StoreError as exc:
            if link.session_id is not None:
                link.condition = error_condition(exc.condition, str(exc))
                self._drop_consumer(link)
                link.close()
            return False
        if msg is None:
            return False
        if link.peek_lock:
            assert msg.lock_token is not None
            dlv = link.delivery(codec.lock_token_tag(msg.lock_token))
            dlv.token = msg.lock_token
            locked_until = None if link.session_id is not None else msg.locked_until
            link.send(codec.encode(msg, locked_until=locked_until, lock_token=msg.lock_token))
            link.advance()
        else:
            self.on_commit()
            # receive-and-delete: pre-settled, with an empty delivery tag as from Azure (azure-servicebus 7.15's
            # test_message_backcompat_receive_and_delete_databody reads the tag back as None)
            dlv = link.delivery(b"")
            link.send(codec.encode(msg, transfer=True))
            link.advance()
            dlv.settle()
        return True

    # ------------------------------------------------------------------ deliveries
    @guarded
    def on_delivery(self, event: Any) -> None:
        dlv, link = event.delivery, event.link
        try:
            if link.is_receiver:
                self._incoming(link, dlv)
            else:
                self._settlement(link, dlv)
        except Exception as exc:
            # Whatever went wrong, the client hears an outcome: an unsettled transfer would hang its send.
            log.exception("servicebus_emulator_delivery_failed", node=getattr(link, "path", None))
            if not getattr(dlv, "answered", False):
                self._reject(
                    dlv, "amqp:internal-error", f"The emulator could not process this transfer: {type(exc).__name__}."
                )

    def _incoming(self, link: Link, dlv: Delivery) -> None:
        if dlv.aborted:
            self._settle(dlv, None)
            return
        if not dlv.readable or dlv.partial:
            return
        data = link.recv(dlv.pending) or b""  # a transfer with no sections is a valid, empty message
        link.advance()
        if not link.state & ACTIVE:
            self._settle(dlv, None)
            return
        if link.credit < CREDIT_WINDOW // 2:
            link.flow(CREDIT_WINDOW - link.credit)
        if link.kind == "entity":
            self._enqueue(link, dlv, data)
            return
        request = Message()
        try:
            codec.parse(data)  # proton's Message.decode accepts garbage silently
            request.decode(data)
        except Exception as exc:
            log.warning("servicebus_emulator_bad_request", node=link.path, error=type(exc).__name__)
            self._reject(
                dlv, "amqp:decode-error", f"The request to '{link.path}' is not a readable AMQP message: {exc}"
            )
            return
        self._settle(dlv, Disposition.ACCEPTED)
        if link.kind == "cbs":
            self._reply(link, request, self._put_token(link.connection, request), None)
        else:
            self._management(link, request)

    @staticmethod
    def _settle(dlv: Delivery, state: Any) -> None:
        dlv.answered = True
        if state is not None:
            dlv.update(state)
        dlv.settle()

    def _enqueue(self, link: Link, dlv: Delivery, data: bytes) -> None:
        denied = self._denied(link.connection, link.path, SEND)
        if denied is not None:          # the token expired (or was replaced) since the attach
            self._reject(dlv, "amqp:unauthorized-access", denied)
            return
        if len(data) > self.max_message_size:
            self._reject(
                dlv,
                "amqp:link:message-size-exceeded",
                f"The received message ({len(data)} bytes) exceeds "
                f"the limit ({self.max_message_size} bytes) currently allowed on the link.",
            )
            return
        try:
            items = codec.to_incoming(data)
            self.store.enqueue(link.path, items)
            self.on_commit()
        except codec.CodecError as exc:
            self._reject(dlv, "amqp:decode-error", str(exc))
            return
        except StoreError as exc:
            self._reject(dlv, exc.condition, str(exc))
            return
        self._settle(dlv, Disposition.ACCEPTED)
        self._pump_target(link.path)

    def _pump_target(self, path: str) -> None:
        target = self.store.resolve_any(path)
        if isinstance(target, Topic):
            for sub in target.subscriptions.values():
                self.pump(sub.path)
        else:
            self.pump(target.path)

    @classmethod
    def _reject(cls, dlv: Delivery, condition: str, description: str) -> None:
        dlv.local.condition = error_condition(condition, description)
        cls._settle(dlv, Disposition.REJECTED)

    def _settlement(self, link: Link, dlv: Delivery) -> None:
        token = getattr(dlv, "token", None)
        state = dlv.remote_state
        if token is None or (state is None and not dlv.settled):
            return
        if dlv.settled and getattr(dlv, "handled", False):
            return
        dlv.handled = True
        if state is None or state == Disposition.RELEASED:
            changed = self.store.release(token)
            self._settle(dlv, None)
            if changed:
                self.pump(changed)
            return
        error: StoreError | None = None
        changed_path: str | None = None
        try:
            if state == Disposition.ACCEPTED:
                changed_path = self.store.complete(token)
            elif state == Disposition.MODIFIED:
                changed_path = self.store.defer(token) if dlv.remote.undeliverable else self.store.abandon(token)
            elif state == Disposition.REJECTED:
                cond = dlv.remote.condition
                info = {_str(k): _str(v) for k, v in ((cond.info or {}) if cond else {}).items()}
                changed_path = self.store.dead_letter(
                    token, info.get("DeadLetterReason"), info.get("DeadLetterErrorDescription")
                )
            else:
                changed_path = self.store.release(token)
            self.on_commit()
        except StoreError as exc:
            error = exc
        if not dlv.settled:
            if error is not None:
                dlv.local.condition = error_condition(error.condition, str(error))
                dlv.update(Disposition.REJECTED)
            elif state == Disposition.MODIFIED:
                dlv.local.failed = dlv.remote.failed
                dlv.local.undeliverable = dlv.remote.undeliverable
                dlv.update(Disposition.MODIFIED)
            elif state == Disposition.REJECTED:
                dlv.update(Disposition.REJECTED)  # bare rejected: the SDK reads any error as failure
            else:
                dlv.update(state)
        self._settle(dlv, None)
        if changed_path:
            self.pump(changed_path)
            if state == Disposition.REJECTED:
                self.pump(changed_path + "/$DeadLetterQueue")

    # ------------------------------------------------------------------ shared access (access.py)
    def _put_token(self, conn: Any, request: Message) -> dict[str, Any]:
        """``$cbs`` put-token: a verified token adds its grant to the connection (202); else 401, as Azure.

        A verified token whose audience (the request's ``name``) is an entity that does not exist is a 404, as
        Azure answers it ("The messaging entity 'sb://ns/queen0' could not be found", Azure/azure-service-bus
        issue 304); the SDK raises ``ServiceBusAuthenticationError`` (``_pyamqp/cbs.py``: any status outside 2xx
        is ``TokenAuthFailure``). Authorization comes first (Azure/azure-sdk-for-net issue 44734): a token that
        does not cover the audience gets no 404, its attach is refused for the missing right."""
        try:
            grant = self.access.grant(_str(request.body) or "")
        except TokenRejected as exc:
            log.info("servicebus_emulator_token_rejected", reason=str(exc).split(":", 1)[0])
            return {"status-code": 401, "status-description": str(exc)}
        audience = _str((request.properties or {}).get("name")) or ""
        path = entity_path(audience)
        if path and grant.covers(path):
            try:
                self.store.resolve_any(path)
            except EntityNotFound:
                log.info("servicebus_emulator_token_entity_not_found", entity=path)
                missing = f"The messaging entity '{audience}' could not be found."
                return {"status-code": 404, "status-description": missing}
        conn.grants[grant.scope.lower()] = grant
        return {"status-code": 202, "status-description": "Accepted"}

    def _denied(self, conn: Any, path: str, right: str | None) -> str | None:
        return self.access.denied(getattr(conn, "grants", {}), path, right, f"sb://{self.host}:{self.port}/{path}")

    def _authorize_attach(self, link: Link) -> bool:
        """An entity link needs Send (the client sends) or Listen (it receives); ``$management`` any right."""
        if link.kind == "mgmt":
            path, right = link.path[: -len("/$management")], None
        else:
            path, right = link.path, SEND if link.is_receiver else LISTEN
        denied = self._denied(link.connection, path, right)
        if denied is None:
            return True
        self._refuse(link, "amqp:unauthorized-access", denied)
        return False

    # ------------------------------------------------------------------ replies
    def _reply(self, request_link: Link, request: Message, props: dict[str, Any], body: Any) -> None:
        conn = request_link.connection
        response = Message(correlation_id=request.id, properties=props, body=body)
        conn.pending_replies.append((request_link.path.lower(), response))
        self._flush_replies(conn)

    def _flush_replies(self, conn: Any) -> None:
        pending = getattr(conn, "pending_replies", None)
        if not pending:
            return
        keep = []
        for address, response in pending:
            link = conn.reply_links.get(address)
            if link is None or not link.state & ACTIVE or link.credit <= 0:
                keep.append((address, response))
                continue
            dlv = link.send(response)
            dlv.settle()
        conn.pending_replies = keep

    # ------------------------------------------------------------------ $management
    def _management(self, link: Link, request: Message) -> None:
        props = {(_str(k) or ""): v for k, v in (request.properties or {}).items()}
        operation = _str(props.get("operation")) or ""
        node = link.path[: -len("/$management")]
        body = codec.plain(request.body) if isinstance(request.body, dict) else {}
        body = {(_str(k) or ""): v for k, v in body.items()}
        try:
            handler = _OPERATIONS.get(operation)
            if handler is None:
                raise MgmtError(
                    501, "amqp:not-implemented", f"The operation '{operation}' is not supported by the emulator."
                )
            denied = self._denied(link.connection, node, _OPERATION_RIGHTS.get(operation, LISTEN))
            if denied is not None:
                raise MgmtError(401, "amqp:unauthorized-access", denied)
            status, result = handler(self, node, body)
            self.on_commit()
        except MgmtError as exc:
            self._mgmt_error(link, request, exc.status, exc.condition, exc.description)
            return
        except StoreError as exc:
            self._mgmt_error(link, request, exc.status, exc.condition, str(exc))
            return
        except (KeyError, TypeError, ValueError) as exc:
            self._mgmt_error(
                link,
                request,
                400,
                "com.microsoft:argument-error",
                f"Bad '{operation}' request: {type(exc).__name__}: {exc}",
            )
            return
        self._reply(
            link, request, {"statusCode": status, "statusDescription": "OK" if status == 200 else "No Content"}, result
        )
        for path in self._touched:
            self.pump(path)
        self._touched = []

    def _mgmt_error(self, link: Link, request: Message, status: int, condition: str, description: str) -> None:
        log.info("servicebus_emulator_mgmt_error", node=link.path, status=status, condition=condition)
        self._reply(
            link,
            request,
            {"statusCode": status, "statusDescription": description, "errorCondition": symbol(condition)},
            None,
        )

    def _touch(self, path: str | None) -> None:
        if path:
            self._touched.append(path)

    def op_renew_lock(self, node: str, body: dict[str, Any]) -> tuple[int, Any]:
        expirations = [timestamp(int(self.store.renew_lock(_uuid(t)) * 1000)) for t in _elements(body["lock-tokens"])]
        return 200, {"expirations": expirations}

    def op_peek(self, node: str, body: dict[str, Any]) -> tuple[int, Any]:
        from_seq = int(body.get("from-sequence-number") or 1)
        count = int(body.get("message-count") or 1)
        sid = _str(body.get("session-id"))
        msgs = self.store.peek(node, from_seq, count, sid)
        if not msgs:
            return 204, None
        return 200, {"messages": [{"message": codec.encode(m, peek=True)} for m in msgs]}

    def op_schedule(self, node: str, body: dict[str, Any]) -> tuple[int, Any]:
        items = []
        for entry in _elements(body["messages"]):
            entry = {(_str(k) or ""): v for k, v in dict(entry).items()}
            items.extend(codec.to_incoming(bytes(entry["message"])))
        seqs = self.store.enqueue(node, items)
        self._pump_target_later(node)
        return 200, {"sequence-numbers": [int(s or 0) for s in seqs]}

    def _pump_target_later(self, node: str) -> None:
        target = self.store.resolve_any(node)
        if isinstance(target, Topic):
            for sub in target.subscriptions.values():
                self._touch(sub.path)
        else:
            self._touch(target.path)

    def op_cancel(self, node: str, body: dict[str, Any]) -> tuple[int, Any]:
        self.store.cancel_scheduled(node, [int(s) for s in _elements(body["sequence-numbers"])])
        return 200, {}

    def op_receive_by_seq(self, node: str, body: dict[str, Any]) -> tuple[int, Any]:
        seqs = [int(s) for s in _elements(body["sequence-numbers"])]
        peek_lock = int(body.get("receiver-settle-mode", 1)) == 1
        msgs: list[StoredMessage] = self.store.receive_deferred(
            node, seqs, peek_lock=peek_lock, session_id=_str(body.get("session-id"))
        )
        if not msgs:
            return 204, None
        out = []
        for m in msgs:
            entry: dict[str, Any] = {"message": codec.encode(m, locked_until=m.locked_until if peek_lock else None)}
            if m.lock_token is not None:
                entry["lock-token"] = m.lock_token
            out.append(entry)
        return 200, {"messages": out}

    def op_update_disposition(self, node: str, body: dict[str, Any]) -> tuple[int, Any]:
        status = _str(body.get("disposition-status"))
        for raw in _elements(body["lock-tokens"]):
            token = _uuid(raw)
            if status == "completed":
                path = self.store.complete(token)
            elif status == "abandoned":
                path = self.store.abandon(token)
            elif status == "defered":
                path = self.store.defer(token)
            elif status == "suspended":
                path = self.store.dead_letter(
                    token, _str(body.get("deadletter-reason")), _str(body.get("deadletter-description"))
                )
                self._touch(path + "/$DeadLetterQueue")
            else:
                raise MgmtError(
                    400,
                    "com.microsoft:argument-error",
                    f"disposition-status {status!r} is not one of completed, abandoned, defered, suspended",
                )
            self._touch(path)
        return 200, {}

    def op_renew_session_lock(self, node: str, body: dict[str, Any]) -> tuple[int, Any]:
        until = self.store.renew_session_lock(node, _str(body["session-id"]) or "")
        return 200, {"expiration": timestamp(int(until * 1000))}

    def op_get_session_state(self, node: str, body: dict[str, Any]) -> tuple[int, Any]:
        state = self.store.get_session_state(node, _str(body["session-id"]) or "")
        return 200, {"session-state": state}

    def op_set_session_state(self, node: str, body: dict[str, Any]) -> tuple[int, Any]:
        raw = body.get("session-state")
        state = None if raw is None else bytes(raw) if not isinstance(raw, str) else raw.encode()
        self.store.set_session_state(node, _str(body["session-id"]) or "", state)
        return 200, {}

    def op_list_sessions(self, node: str, body: dict[str, Any]) -> tuple[int, Any]:
        # last-updated-time: DateTime.MaxValue (253402300800000 ms) asks for every session with messages
        # (azure-servicebus 7.15 _session_browser.py, after the Java SDK's SessionBrowser.MAXDATE)
        since = body.get("last-updated-time")
        millis = since if isinstance(since, int) else None
        updated_after = millis / 1000 if millis is not None and millis < MAX_DATE_MS else None
        ids = self.store.list_sessions(node, updated_after)
        skip, top = int(body.get("skip") or 0), int(body.get("top") or 100)
        page = ids[skip : skip + top]
        if not page:
            return 204, None
        return 200, {"skip": skip + len(page), "sessions-ids": page}


MAX_DATE_MS = 253402300800000


def _uuid(value: Any) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, bytes | memoryview) and len(bytes(value)) == 16:
        return uuid.UUID(bytes=bytes(value))
    try:
        return uuid.UUID(str(value))
    except ValueError as exc:
        raise ArgumentError(f"lock token {value!r} is not a UUID") from exc

_OPERATION_RIGHTS = {  # every other $management operation needs Listen
    "com.microsoft:schedule-message": SEND,
    "com.microsoft:cancel-scheduled-message": SEND,
}

_OPERATIONS: dict[str, Callable[[Broker, str, dict[str, Any]], tuple[int, Any]]] = {
    "com.microsoft:renew-lock": Broker.op_renew_lock,
    "com.microsoft:peek-message": Broker.op_peek,
    "com.microsoft:schedule-message": Broker.op_schedule,
    "com.microsoft:cancel-scheduled-message": Broker.op_cancel,
    "com.microsoft:receive-by-sequence-number": Broker.op_receive_by_seq,
    "com.microsoft:update-disposition": Broker.op_update_disposition,
    "com.microsoft:renew-session-lock": Broker.op_renew_session_lock,
    "com.microsoft:get-session-state": Broker.op_get_session_state,
    "com.microsoft:set-session-state": Broker.op_set_session_state,
    "com.microsoft:get-message-sessions": Broker.op_list_sessions,
}

__all__ = ["Broker", "Entity", "EntityNotFound", "entity_path"]


class _StopContainer:
    """Timer handler: stop the container once closing connections had a moment to flush their sockets."""

    def __init__(self, container: Any) -> None:
        self.container = container

    def on_timer_task(self, event: Any) -> None:
        self.container.stop()
