"""AMQP over TLS (``--amqps-port``): TLS ends here, in Python, and the plain bytes go to the broker's own listener.

proton could terminate TLS itself, but then the transport the broker sees carries TLS records, and
``sequencing.py`` (which reads AMQP frame headers between the socket and proton) would see ciphertext: transfers
out of delivery-id order (``AutoLockRenewer``, ``asyncio.gather`` of renewals) would end the session again.
Terminating TLS in front of the plain listener keeps one AMQP path for both ports. One asyncio loop in a thread
of its own relays every connection; closing either side closes the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from pathlib import Path

import structlog

log = structlog.get_logger("gcw_emulators.servicebus.amqps")

CHUNK = 64 * 1024


class TlsTerminator:
    """Accepts TLS on ``host:port`` and relays each connection to ``host:backend_port`` (the plain listener)."""

    def __init__(self, host: str, port: int, backend_port: int, *, certfile: Path, keyfile: Path) -> None:
        self.host = host
        self.port = port
        self.backend_port = backend_port
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._context.load_cert_chain(str(certfile), str(keyfile))
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="servicebus-amqps", daemon=True)

    def start(self) -> TlsTerminator:
        """Binds (an error such as the port being taken is raised here) and starts relaying."""
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._listen(), self._loop)
        try:
            self._server = future.result(timeout=15)
        except BaseException:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            raise
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def _listen(self) -> asyncio.Server:
        return await asyncio.start_server(self._relay, self.host, self.port, ssl=self._context, backlog=512)

    async def _relay(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> None:
        try:
            broker_in, broker_out = await asyncio.open_connection(self.host, self.backend_port)
        except OSError as exc:
            log.warning("servicebus_emulator_amqps_backend_unreachable", error=str(exc))
            client_out.close()
            return
        await asyncio.gather(_pump(client_in, broker_out), _pump(broker_in, client_out))

    def stop(self) -> None:
        if not self._thread.is_alive():
            return

        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    """Copies until either side goes away, then closes ``sink`` (the other pump then ends too)."""
    try:
        while data := await source.read(CHUNK):
            sink.write(data)
            await sink.drain()
    except (OSError, ssl.SSLError, asyncio.IncompleteReadError):
        pass
    finally:
        sink.close()
        with contextlib.suppress(Exception):
            await sink.wait_closed()
