"""Accept transfers in any delivery-id order, as Azure Service Bus does.

pyamqp (the SDK's AMQP stack) numbers a transfer by reading ``session.next_outgoing_id``, writing the frame and
only then incrementing the counter. Two threads (``AutoLockRenewer``), or two coroutines interleaved at the write's
``await`` (``asyncio.gather`` of ``renew_message_lock``), therefore put transfers on the wire out of order or
with the same id twice, then skip one. Azure tolerates that; proton-C ends the session with
``amqp:session:invalid-field "sequencing error"``, which kills every link of the connection.

``FrameSequencer`` sits between the socket and proton. It reads each inbound frame's header and performative
(never a payload), and renumbers the delivery-id of every new delivery to the next id proton expects. When it
had to change one, it remembers the client's id and rewrites the broker's dispositions for that delivery
back to it (and the client's own dispositions the other way), so each side only ever sees its own numbering.
When the client keeps order, which is almost always, every id stays as it is and no byte changes.
``SequencingTransport`` wires it into proton's transport and ``SequencingAcceptor`` uses that transport for
each accepted socket.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from proton import Transport, Url
from proton._io import IO
from proton._reactor import Acceptor  # the public API offers no hook for the transport of accepted sockets
from proton.handlers import IOHandler
from proton.reactor import Container

BEGIN, TRANSFER, DISPOSITION, END = 0x11, 0x14, 0x15, 0x17
AMQP_FRAME = 0
MAX_MAPPED = 65536  # forget the oldest renumbered deliveries beyond this (they were settled long ago)
SERIAL = 0xFFFFFFFF


class FrameError(ValueError):
    """A performative the sequencer cannot read; the frame is passed on untouched (proton reports it)."""


# ---------------------------------------------------------------------------------------------- AMQP encoding
def _width(constructor: int, buf: bytes | bytearray, pos: int) -> int:
    """Encoded size of the value whose constructor byte is at ``pos`` (constructor included)."""
    sub = constructor >> 4
    if constructor == 0x00:  # described: descriptor then value
        inner = pos + 1
        inner += _width(_byte(buf, inner), buf, inner)
        return inner - pos + _width(_byte(buf, inner), buf, inner)
    fixed = {0x4: 0, 0x5: 1, 0x6: 2, 0x7: 4, 0x8: 8, 0x9: 16}
    if sub in fixed:
        return 1 + fixed[sub]
    if sub in (0xA, 0xC, 0xE):
        return 2 + _byte(buf, pos + 1)
    if sub in (0xB, 0xD, 0xF):
        if pos + 5 > len(buf):
            raise FrameError("truncated size")
        return 5 + int.from_bytes(buf[pos + 1 : pos + 5], "big")
    raise FrameError(f"unknown AMQP constructor 0x{constructor:02x}")


def _byte(buf: bytes | bytearray, pos: int) -> int:
    if pos >= len(buf):
        raise FrameError("truncated value")
    return buf[pos]


def _list_fields(buf: bytes, pos: int) -> tuple[list[bytes], int]:
    """The encoded fields of the list at ``pos`` and the position after it."""
    constructor = _byte(buf, pos)
    if constructor == 0x45:
        return [], pos + 1
    if constructor == 0xC0:
        count, start, end = _byte(buf, pos + 2), pos + 3, pos + 2 + _byte(buf, pos + 1)
    elif constructor == 0xD0:
        if pos + 9 > len(buf):
            raise FrameError("truncated list")
        size, count = struct.unpack(">II", buf[pos + 1 : pos + 9])
        start, end = pos + 9, pos + 5 + size
    else:
        raise FrameError(f"a performative is not a list (constructor 0x{constructor:02x})")
    if end > len(buf):
        raise FrameError("truncated list")
    fields, cursor = [], start
    for _ in range(count):
        width = _width(_byte(buf, cursor), buf, cursor)
        fields.append(bytes(buf[cursor : cursor + width]))
        cursor += width
    if cursor != end:
        raise FrameError("list size does not match its fields")
    return fields, end


def _encode_list(fields: list[bytes]) -> bytes:
    body = b"".join(fields)
    if len(body) + 1 <= 0xFF and len(fields) <= 0xFF:
        return bytes((0xC0, len(body) + 1, len(fields))) + body
    return b"\xd0" + struct.pack(">II", len(body) + 4, len(fields)) + body


def _uint(field_bytes: bytes | None) -> int | None:
    if not field_bytes or field_bytes[0] == 0x40:
        return None
    constructor = field_bytes[0]
    if constructor == 0x43:
        return 0
    if constructor == 0x52:
        return field_bytes[1]
    if constructor == 0x60:
        return int.from_bytes(field_bytes[1:3], "big")
    if constructor == 0x70:
        return int.from_bytes(field_bytes[1:5], "big")
    raise FrameError(f"expected a uint, got constructor 0x{constructor:02x}")


def _encode_uint(value: int) -> bytes:
    if value == 0:
        return b"\x43"
    if value < 0x100:
        return bytes((0x52, value))
    return b"\x70" + value.to_bytes(4, "big")


def _bool(field_bytes: bytes | None) -> bool:
    if not field_bytes:
        return False
    return field_bytes[0] == 0x41 or (field_bytes[0] == 0x56 and field_bytes[1:2] == b"\x01")


# ---------------------------------------------------------------------------------------------- the sequencer
@dataclass
class _Session:
    """Delivery-id bookkeeping for one session, keyed by the client's channel."""

    expected: int | None = None  # the id proton expects for the next new delivery
    continuing: dict[int, int] = field(default_factory=dict)  # handle → id of its unfinished multi-frame delivery
    to_client: dict[int, int] = field(default_factory=dict)  # renumbered id → the client's id
    to_broker: dict[int, int] = field(default_factory=dict)  # the client's id → renumbered id

    def remember(self, ours: int, theirs: int) -> None:
        self.to_client[ours] = theirs
        self.to_broker[theirs] = ours
        while len(self.to_client) > MAX_MAPPED:
            oldest = next(iter(self.to_client))
            self.to_broker.pop(self.to_client.pop(oldest), None)

    def forget(self, ours: int) -> None:
        theirs = self.to_client.pop(ours, None)
        if theirs is not None and self.to_broker.get(theirs) == ours:
            del self.to_broker[theirs]


class _Stream:
    """Splits a byte stream into protocol headers and frames; hands each frame's performative to a rewriter and
    passes payload bytes through without buffering them."""

    def __init__(self, rewrite: Callable[[int, int, bytes, bytes], bytes | None]) -> None:
        self.rewrite = rewrite
        self.buf = bytearray()
        self.skip = 0  # payload bytes of the current frame still to pass through (or drop)
        self.dropping = False  # the current frame is being dropped
        self.opaque = False  # the stream stopped making sense: pass everything through to proton

    def feed(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        self.buf += data
        while self.buf:
            if self.opaque:
                out.append(bytes(self.buf))
                self.buf.clear()
                break
            if self.skip:
                chunk = bytes(self.buf[: self.skip])
                del self.buf[: len(chunk)]
                self.skip -= len(chunk)
                if not self.dropping:
                    out.append(chunk)
                continue
            if len(self.buf) < 8:
                break
            if self.buf[:4] == b"AMQP":
                out.append(bytes(self.buf[:8]))
                del self.buf[:8]
                continue
            size, doff, kind, channel = struct.unpack(">IBBH", self.buf[:8])
            if size < 8 or doff < 2 or doff * 4 > size:
                self.opaque = True
                continue
            if kind != AMQP_FRAME or size == doff * 4:
                self._pass(out, size)
                continue
            try:
                performative_end = self._performative_end(doff * 4, size)
            except FrameError:
                self._pass(out, size)
                continue
            if performative_end is None:
                if len(self.buf) >= size:
                    self._pass(out, size)
                    continue
                break  # wait for the rest of the performative
            header, performative = bytes(self.buf[: doff * 4]), bytes(self.buf[doff * 4 : performative_end])
            replaced = self.rewrite(channel, performative[2], header, performative)
            if replaced is None:
                self._pass(out, size)
                continue
            out.append(replaced)
            del self.buf[:performative_end]
            self.skip = size - performative_end
            self.dropping = not replaced  # b"": drop the whole frame, payload included
        return out

    def _pass(self, out: list[bytes], size: int) -> None:
        self.dropping = False
        chunk = bytes(self.buf[:size])
        del self.buf[: len(chunk)]
        self.skip = size - len(chunk)
        out.append(chunk)

    def _performative_end(self, start: int, size: int) -> int | None:
        """End of the performative, or None if it is not buffered yet."""
        view = bytes(self.buf[: min(len(self.buf), size)])
        if len(view) < start + 4:
            return None
        if view[start : start + 2] != b"\x00\x53":
            raise FrameError("performative descriptor is not a small ulong")
        try:
            _, end = _list_fields(view, start + 3)
        except FrameError:
            if len(view) >= size:
                raise
            return None
        if end > size:
            raise FrameError("performative runs past its frame")
        return end


def _frame(header: bytes, descriptor: bytes, fields: list[bytes], payload_size: int) -> bytes:
    performative = descriptor + _encode_list(fields)
    size = len(header) + len(performative) + payload_size
    return struct.pack(">I", size) + header[4:] + performative


@dataclass
class WireStats:
    """Counts over all connections, for the emulator's status (written on the broker thread only)."""

    transfers_renumbered: int = 0
    frames_after_end_dropped: int = 0


class FrameSequencer:
    """Per-connection rewriter for both directions (see the module docstring)."""

    def __init__(self, stats: WireStats | None = None) -> None:
        self.sessions: dict[int, _Session] = {}
        self.ended: set[int] = set()  # the client's channels it has sent ``end`` on
        self.broker_channels: dict[int, int] = {}  # the broker's channel → the client's channel
        self.stats = stats or WireStats()
        self._in = _Stream(self._inbound_frame)
        self._out = _Stream(self._outbound_frame)

    @property
    def active(self) -> bool:
        """Whether the broker's output may need rewriting: some renumbered delivery is not settled yet."""
        return any(session.to_client for session in self.sessions.values())

    def broker_frame(self, frame: bytes) -> None:
        """Note a frame the broker sent while its output was not being rewritten (only ``begin`` matters)."""
        self._out.feed(frame)

    def inbound(self, data: bytes) -> bytes:
        """Client bytes → the bytes proton gets (a partial performative is held until it is complete)."""
        return b"".join(self._in.feed(data))

    def outbound(self, data: bytes) -> bytes:
        """Broker bytes → the bytes the client gets."""
        return b"".join(self._out.feed(data))

    # inbound: client → proton
    def _inbound_frame(self, channel: int, code: int, header: bytes, performative: bytes) -> bytes | None:
        """The frame to give proton instead (``b""`` drops it), or None to pass it on unchanged."""
        if code == BEGIN:
            fields, _ = _list_fields(performative, 3)
            self.sessions[channel] = _Session(expected=_uint(fields[1]) if len(fields) > 1 else None)
            self.ended.discard(channel)
            return None
        if channel in self.ended:
            # pyamqp's other threads may still send on a session it has ended (a renewal, a detach); proton
            # would close the whole connection with "no such channel". Azure ignores them, and so do we.
            self.stats.frames_after_end_dropped += 1
            return b""
        if code == END:
            self.sessions.pop(channel, None)
            self.ended.add(channel)
            return None
        if code not in (TRANSFER, DISPOSITION):
            return None
        fields, _ = _list_fields(performative, 3)
        session = self.sessions.setdefault(channel, _Session())
        payload_size = int.from_bytes(header[:4], "big") - len(header) - len(performative)
        if code == DISPOSITION:
            if _bool(fields[0] if fields else None) or not session.to_broker:
                return None  # role=receiver: about the broker's deliveries, numbered by proton
            return self._disposition(header, fields, session.to_broker, session=None)
        return self._transfer(header, fields, session, payload_size)

    def _transfer(self, header: bytes, fields: list[bytes], session: _Session, payload_size: int) -> bytes | None:
        if not fields:
            return None
        handle = _uint(fields[0])
        theirs = _uint(fields[1]) if len(fields) > 1 else None
        more = _bool(fields[5]) if len(fields) > 5 else False
        aborted = _bool(fields[8]) if len(fields) > 8 else False
        if handle is None:
            return None
        if handle in session.continuing:
            ours = session.continuing[handle]
            if not more or aborted:
                del session.continuing[handle]
        else:
            if theirs is None:
                return None  # proton reports the missing id
            if session.expected is None:
                session.expected = theirs
            ours = session.expected
            session.expected = (ours + 1) & SERIAL
            if more and not aborted:
                session.continuing[handle] = ours
            settled = _bool(fields[4]) if len(fields) > 4 else False
            if ours != theirs:
                self.stats.transfers_renumbered += 1
                if not settled:
                    session.remember(ours, theirs)
        if theirs is None or theirs == ours:
            return None
        fields = [fields[0], _encode_uint(ours), *fields[2:]]
        return _frame(header, b"\x00\x53\x14", fields, payload_size)

    # outbound: proton → client
    def _outbound_frame(self, channel: int, code: int, header: bytes, performative: bytes) -> bytes | None:
        if code == BEGIN:
            fields, _ = _list_fields(performative, 3)
            remote = _uint(fields[0]) if fields else None
            if remote is not None:
                self.broker_channels[channel] = remote
            return None
        if code == END:
            self.broker_channels.pop(channel, None)
            return None
        if code != DISPOSITION or not self.active:
            return None
        fields, _ = _list_fields(performative, 3)
        session = self.sessions.get(self.broker_channels.get(channel, channel))
        if session is None or not _bool(fields[0] if fields else None) or not session.to_client:
            return None  # role=sender: about the broker's own deliveries
        return self._disposition(header, fields, session.to_client, session=session)

    @staticmethod
    def _disposition(
        header: bytes, fields: list[bytes], mapping: dict[int, int], session: _Session | None
    ) -> bytes | None:
        """Rewrite ``first``/``last`` through ``mapping``; a range that stops being contiguous becomes several
        dispositions. ``session`` is given for the broker's dispositions: settled ones end the bookkeeping."""
        first = _uint(fields[1]) if len(fields) > 1 else None
        if first is None:
            return None
        last = _uint(fields[2]) if len(fields) > 2 else None
        last = first if last is None else last
        count = ((last - first) & SERIAL) + 1
        if count > MAX_MAPPED:
            return None
        ids = [(first + i) & SERIAL for i in range(count)]
        mapped = [mapping.get(i, i) for i in ids]
        if mapped == ids:
            return None
        if session is not None and len(fields) > 3 and _bool(fields[3]):
            for ours in ids:
                session.forget(ours)
        runs: list[list[int]] = []
        for value in mapped:
            if runs and value == (runs[-1][1] + 1) & SERIAL:
                runs[-1][1] = value
            else:
                runs.append([value, value])
        rest = fields[3:]
        return b"".join(
            _frame(header, b"\x00\x53\x15", [fields[0], _encode_uint(a), _encode_uint(b), *rest], 0) for a, b in runs
        )


# ---------------------------------------------------------------------------------------------- proton wiring
class SequencingTransport(Transport):
    """A server transport whose input and output pass through a ``FrameSequencer``.

    Output is rewritten only while a renumbered delivery is unsettled (``FrameSequencer.active``); otherwise
    proton's buffer goes to the socket as is, and only frame boundaries (and ``begin`` frames, for the channel
    map) are noted as bytes leave. While rewriting, proton's bytes are popped only once the frame made from
    them has gone to the socket, so proton's own ``pending()`` (which the reactor also reads) and its closed
    state stay true."""

    def __init__(self, stats: WireStats | None = None) -> None:
        super().__init__(Transport.SERVER)
        self.sequencer = FrameSequencer(stats)
        self.backlog = b""  # rewritten input proton had no room for yet
        self.segments: deque[list[Any]] = deque()  # [proton bytes, bytes to send, sent so far]
        self.parsed = 0  # proton output bytes covered by ``segments``
        self.rewriting = False
        self.to_boundary = 0  # passthrough: bytes of the frame in progress still to go

    # input
    def capacity(self) -> int:
        self._drain_backlog()
        room = super().capacity()
        return room if room < 0 else max(0, room - len(self.backlog))

    def push(self, binary: bytes) -> None:
        self.backlog += self.sequencer.inbound(binary)
        self._drain_backlog()

    def _drain_backlog(self) -> None:
        while self.backlog:
            room = super().capacity()
            if room <= 0:
                return
            chunk, self.backlog = self.backlog[:room], self.backlog[room:]
            super().push(chunk)

    # output
    def pending(self) -> int:
        raw = super().pending()
        if not self.rewriting:
            if self.to_boundary or not self.sequencer.active or raw <= 0:
                return min(raw, self.to_boundary) if self.to_boundary and self.sequencer.active else raw
            self.rewriting, self.parsed = True, 0
        if raw > self.parsed:
            fresh = super().peek(raw)
            assert fresh is not None
            for piece in _pieces(fresh[self.parsed :]):
                self.segments.append([len(piece), self.sequencer.outbound(piece), 0])
            self.parsed = raw
        if raw <= 0:
            return raw
        return sum(len(seg[1]) - seg[2] for seg in self.segments)

    def peek(self, size: int) -> bytes | None:
        if not self.rewriting:
            return super().peek(size)
        out = bytearray()
        for _, data, sent in self.segments:
            out += data[sent:]
            if len(out) >= size:
                break
        return bytes(out[:size])

    def pop(self, size: int) -> None:
        if not self.rewriting:
            self._pop_passthrough(size)
            return
        while self.segments:
            segment = self.segments[0]
            take = min(size, len(segment[1]) - segment[2])
            segment[2] += take
            size -= take
            if segment[2] < len(segment[1]):
                return
            self.segments.popleft()
            super().pop(segment[0])
            self.parsed -= segment[0]
        if not self.sequencer.active:
            self.rewriting = False  # all caught up, at a frame boundary

    def _pop_passthrough(self, size: int) -> None:
        """Pop, keeping track of frame boundaries; ``begin`` frames are shown to the sequencer."""
        while size > 0:
            if not self.to_boundary:
                head = super().peek(min(11, super().pending())) or b""
                if head[:4] == b"AMQP" or len(head) < 8:
                    self.to_boundary = 8 if head[:4] == b"AMQP" else len(head)
                else:
                    self.to_boundary = max(8, int.from_bytes(head[:4], "big"))
                    if self.to_boundary > 8 and head[8:11] == b"\x00\x53\x11":
                        self.sequencer.broker_frame(super().peek(self.to_boundary) or b"")
            take = min(size, self.to_boundary)
            super().pop(take)
            self.to_boundary -= take
            size -= take


def _pieces(data: bytes) -> list[bytes]:
    """Proton's output cut at protocol headers and frame boundaries."""
    pieces, pos = [], 0
    while pos < len(data):
        if data[pos : pos + 4] == b"AMQP":
            size = 8
        elif len(data) - pos >= 4:
            size = max(8, int.from_bytes(data[pos : pos + 4], "big"))
        else:
            size = len(data) - pos
        pieces.append(data[pos : pos + size])
        pos += size
    return pieces


class SequencingAcceptor(Acceptor):
    """proton's acceptor, with a ``SequencingTransport`` for each accepted connection."""

    def __init__(self, reactor: Container, host: str, port: int, stats: WireStats) -> None:
        super().__init__(reactor, host, port)
        self.stats = stats

    def on_selectable_readable(self, event: Any) -> None:
        sock, peer = IO.accept(self._selectable)
        reactor: Container = self._reactor
        conn = reactor.connection(self._handler or reactor.handler)
        conn._acceptor = self
        conn.url = Url(host=peer[0], port=peer[1])
        transport = SequencingTransport(self.stats)
        if self._ssl_domain:
            transport.ssl(self._ssl_domain)
        transport.bind(conn)
        selectable = reactor.selectable(delegate=sock)
        selectable._transport = transport
        transport._selectable = selectable
        IOHandler.update(transport, selectable, reactor.now)
