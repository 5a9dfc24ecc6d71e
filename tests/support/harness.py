"""End-to-end harness: both emulators in process, N ``geocatalog-worker run`` subprocesses, over sockets.

Used by the runtime's end-to-end tests and reusable by the demo, benchmarks and chaos tests::

    with Harness(lock_duration=3, operation_seconds=0.2, collections=["c1"]) as h:
        w = h.start_worker(concurrency=8)
        h.wait_ready(w)
        h.send([ingest_request("c1", [stac_item("a")])], message_ids=["m1"])
        replies = h.collect_replies(1, timeout=30)

Workers log JSON lines on stdout; a reader thread keeps them in ``WorkerProcess.lines`` and learns the
health port from the ``health_server_started`` event (workers bind ``--health-port 0``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from azure.servicebus import ServiceBusClient, ServiceBusMessage, ServiceBusSubQueue
from gcw_emulators.geocatalog import GeoCatalogEmulator
from gcw_emulators.servicebus import QueueConfig, ServiceBusEmulator
from gcw_emulators.servicebus.access import AccessPolicy

REQUEST_QUEUE = "requests"
REPLY_QUEUE = "replies"


def stac_item(item_id: str, collection: str, *, href: str | None = None) -> dict[str, Any]:
    """A small valid STAC item."""
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": item_id,
        "collection": collection,
        "geometry": {"type": "Point", "coordinates": [10.0, 50.0]},
        "bbox": [10.0, 50.0, 10.0, 50.0],
        "properties": {"datetime": "2024-05-01T10:00:00Z"},
        "assets": {"data": {"href": href or f"https://example.com/{collection}/{item_id}.tif"}},
        "links": [],
    }


def ingest_request(collection: str, items: Sequence[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"version": 1, "action": "ingest", "collection": collection, "items": list(items), **extra}


def delete_request(collection: str, item_ids: Sequence[str]) -> dict[str, Any]:
    return {"version": 1, "action": "delete", "collection": collection, "item_ids": list(item_ids)}


@dataclass
class Reply:
    message_id: str | None
    correlation_id: str | None
    session_id: str | None
    application_properties: dict[str, Any]
    body: dict[str, Any]


@dataclass
class WorkerProcess:
    proc: subprocess.Popen[str]
    args: list[str]
    lines: list[str] = field(default_factory=list)
    health_port: int | None = None
    _reader: threading.Thread | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        out = []
        for line in list(self.lines):
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if name is None or event.get("event") == name:
                out.append(event)
        return out

    def output(self) -> str:
        return "\n".join(self.lines)


def _read_lines(worker: WorkerProcess) -> None:
    assert worker.proc.stdout is not None
    for line in worker.proc.stdout:
        line = line.rstrip("\n")
        worker.lines.append(line)
        if worker.health_port is None and "health_server_started" in line:
            with contextlib.suppress(ValueError, KeyError):
                worker.health_port = int(json.loads(line)["port"])


class Harness:
    def __init__(
        self,
        *,
        lock_duration: float = 5.0,
        max_delivery_count: int = 10,
        operation_seconds: float | str = 0.2,
        collections: Iterable[str] = ("c1",),
        faults: Iterable[str] = (),
        request_budget: float | None = None,
        reply_duplicate_detection: bool = True,
        sessions: bool = False,
        servicebus_process: bool = False,
        policies: Iterable[AccessPolicy] = (),
    ) -> None:
        """``servicebus_process=True`` runs the Service Bus emulator as a subprocess (``geocatalog-worker emulator
        servicebus``) so a test can kill the broker outright; ``queue_stats`` is then unavailable. ``policies``:
        shared access policies besides the root one (``servicebus.connection_string_for(name)``)."""
        self.lock_duration = lock_duration
        self.max_delivery_count = max_delivery_count
        self.operation_seconds = operation_seconds
        self.collections = list(collections)
        self.faults = list(faults)
        self.request_budget = request_budget
        self.reply_duplicate_detection = reply_duplicate_detection
        self.sessions = sessions
        self.servicebus_process = servicebus_process
        self.policies = list(policies)
        self.servicebus: ServiceBusEmulator | None = None
        self.servicebus_proc: subprocess.Popen[str] | None = None
        self.connection_string = ""
        self.geocatalog: GeoCatalogEmulator | None = None
        self.workers: list[WorkerProcess] = []
        self._client: ServiceBusClient | None = None
        self._session_client: ServiceBusClient | None = None  # no SDK retries: "no session" returns quickly

    # ---- lifecycle -----------------------------------------------------------------------------------------
    def __enter__(self) -> Harness:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Harness:
        if self.servicebus_process:
            self._start_servicebus_process()
        else:
            self._start_servicebus()
        self.geocatalog = GeoCatalogEmulator(host="127.0.0.1", port=0, **self._geocatalog_options()).start()
        self._client = ServiceBusClient.from_connection_string(self.connection_string)
        self._session_client = ServiceBusClient.from_connection_string(self.connection_string, retry_total=0)
        return self

    def _geocatalog_options(self) -> dict[str, Any]:
        """Keyword arguments of the GeoCatalog emulator (subclasses add theirs)."""
        return {
            "operation_seconds": self.operation_seconds,
            "faults": self.faults,
            "request_budget": self.request_budget,
            "collections": self.collections,
        }

    def _queues(self) -> list[QueueConfig]:
        """The request and reply queues (subclasses may leave the reply queue out)."""
        return [
            QueueConfig(
                REQUEST_QUEUE,
                lock_duration=self.lock_duration,
                max_delivery_count=self.max_delivery_count,
                requires_session=self.sessions,
            ),
            QueueConfig(
                REPLY_QUEUE,
                requires_duplicate_detection=self.reply_duplicate_detection,
                requires_session=self.sessions,
            ),
        ]

    def _start_servicebus_process(self) -> None:
        args = [sys.executable, "-m", "worker", "emulator", "servicebus", "--port", "0"]
        args += ["--queue", REQUEST_QUEUE, "--queue", REPLY_QUEUE, "--lock-duration", str(self.lock_duration)]
        args += ["--max-delivery-count", str(self.max_delivery_count)]
        self.servicebus_proc = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self.servicebus_proc.stdout is not None
        first = self.servicebus_proc.stdout.readline().strip()
        if not first.startswith("Endpoint="):
            self.servicebus_proc.kill()
            raise RuntimeError(f"the Service Bus emulator did not print a connection string: {first!r}")
        self.connection_string = first
        threading.Thread(target=self.servicebus_proc.stdout.read, daemon=True).start()

    def kill_servicebus(self) -> None:
        """SIGKILL the Service Bus emulator subprocess: every connection drops at once."""
        assert self.servicebus_proc is not None, "only with servicebus_process=True"
        self.servicebus_proc.kill()
        self.servicebus_proc.wait(timeout=10)

    def _start_servicebus(self) -> None:
        self.servicebus = ServiceBusEmulator(
            host="127.0.0.1", port=0, queues=self._queues(), policies=self.policies
        ).start()
        self.connection_string = self.servicebus.connection_string

    def stop(self) -> None:
        for worker in self.workers:
            if worker.proc.poll() is None:
                worker.proc.kill()
                worker.proc.wait(timeout=10)
        for client in (self._client, self._session_client):
            if client is not None:
                client.close()
        if self.servicebus is not None:
            self.servicebus.stop()
        if self.servicebus_proc is not None and self.servicebus_proc.poll() is None:
            self.servicebus_proc.kill()
            self.servicebus_proc.wait(timeout=10)
        if self.geocatalog is not None:
            self.geocatalog.stop()

    @property
    def client(self) -> ServiceBusClient:
        assert self._client is not None
        return self._client

    # ---- workers -----------------------------------------------------------------------------------------
    def worker_args(self, **overrides: Any) -> list[str]:
        """``geocatalog-worker run`` flags; ``overrides`` use python names (``drain_seconds=5``); a list value
        repeats the flag; ``None`` drops it."""
        assert self.connection_string and self.geocatalog is not None
        flags: dict[str, Any] = {
            "servicebus_connection_string": self.connection_string,
            "request_queue": REQUEST_QUEUE,
            "reply_queue": REPLY_QUEUE,
            "geocatalog_url": self.geocatalog.url,
            "geocatalog_token": self.geocatalog.token,
            "concurrency": 16,
            "health_host": "127.0.0.1",
            "health_port": 0,
            "drain_seconds": 10,
            "retry_base_seconds": 0.5,
            "retry_max_seconds": 5,
            "breaker_open_seconds": 1,
            "log_level": "INFO",
        }
        if self.sessions:
            flags["sessions"] = True
        flags.update(overrides)
        args: list[str] = []
        for name, value in flags.items():
            flag = "--" + name.replace("_", "-")
            if value is None:
                continue
            if value is True:
                args.append(flag)
            elif value is False:
                args.append("--no-" + name.replace("_", "-"))
            elif isinstance(value, list | tuple):
                for v in value:
                    args += [flag, str(v)]
            else:
                args += [flag, str(value)]
        return args

    def start_worker(self, *, env: dict[str, str] | None = None, **overrides: Any) -> WorkerProcess:
        args = [sys.executable, "-m", "worker", "run", *self.worker_args(**overrides)]
        proc = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        worker = WorkerProcess(proc=proc, args=args)
        worker._reader = threading.Thread(target=_read_lines, args=(worker,), daemon=True)
        worker._reader.start()
        self.workers.append(worker)
        return worker

    def http(self, worker: WorkerProcess, path: str) -> tuple[int, str]:
        assert worker.health_port is not None, "the worker has not logged its health port yet"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{worker.health_port}{path}", timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    def wait_ready(self, worker: WorkerProcess, timeout: float = 30.0) -> None:
        def ready() -> bool:
            if worker.proc.poll() is not None:
                raise AssertionError(f"worker exited with {worker.proc.returncode}:\n{worker.output()[-4000:]}")
            if worker.health_port is None:
                return False
            try:
                return self.http(worker, "/readyz")[0] == 200
            except OSError:
                return False

        if not wait_until(ready, timeout):
            raise AssertionError(f"worker not ready after {timeout}s:\n{worker.output()[-4000:]}")

    def metric(self, worker: WorkerProcess, name: str, labels: str = "") -> float:
        """The value of one sample of ``/metrics`` (0 when absent)."""
        status, text = self.http(worker, "/metrics")
        assert status == 200
        wanted = f"{name}{{{labels}}}" if labels else name
        total = 0.0
        for line in text.splitlines():
            if line.startswith("#"):
                continue
            key, _, value = line.rpartition(" ")
            if key == wanted or (not labels and key.split("{")[0] == name):
                total += float(value)
        return total

    @staticmethod
    def kill(worker: WorkerProcess) -> None:
        worker.proc.send_signal(signal.SIGKILL)
        worker.proc.wait(timeout=10)

    @staticmethod
    def terminate(worker: WorkerProcess, timeout: float = 60.0) -> int:
        worker.proc.send_signal(signal.SIGTERM)
        return worker.proc.wait(timeout=timeout)

    # ---- messages ------------------------------------------------------------------------------------------
    def send(
        self,
        bodies: Sequence[dict[str, Any] | bytes],
        *,
        message_ids: Sequence[str] | None = None,
        correlation_ids: Sequence[str | None] | None = None,
        session_ids: Sequence[str | None] | None = None,
        reply_to_session_ids: Sequence[str | None] | None = None,
        queue: str = REQUEST_QUEUE,
    ) -> list[str]:
        """Send requests; returns their message ids (random ones unless given)."""
        ids = list(message_ids or [f"req-{uuid.uuid4().hex[:12]}" for _ in bodies])
        messages = []
        for i, body in enumerate(bodies):
            raw = body if isinstance(body, bytes) else json.dumps(body).encode()
            messages.append(
                ServiceBusMessage(
                    raw,
                    message_id=ids[i],
                    correlation_id=correlation_ids[i] if correlation_ids else None,
                    session_id=session_ids[i] if session_ids else None,
                    reply_to_session_id=reply_to_session_ids[i] if reply_to_session_ids else None,
                    content_type="application/json",
                )
            )
        with self.client.get_queue_sender(queue) as sender:
            for start in range(0, len(messages), 50):
                sender.send_messages(messages[start : start + 50])
        return ids

    def collect_replies(self, count: int, *, timeout: float = 60.0, settle_extra: float = 0.0) -> list[Reply]:
        """Receive and complete replies until ``count`` arrived (then ``settle_extra`` seconds more, to catch
        duplicates) or ``timeout`` passed."""
        replies: list[Reply] = []
        deadline = time.monotonic() + timeout
        extra_deadline: float | None = None
        kwargs: dict[str, Any] = {}
        client = self.client
        if self.sessions:
            from azure.servicebus import NEXT_AVAILABLE_SESSION

            kwargs["session_id"] = NEXT_AVAILABLE_SESSION
            assert self._session_client is not None
            client = self._session_client
        while True:
            now = time.monotonic()
            if len(replies) >= count and extra_deadline is None:
                extra_deadline = now + settle_extra
            if now >= deadline or (extra_deadline is not None and now >= extra_deadline):
                return replies
            try:
                with client.get_queue_receiver(REPLY_QUEUE, max_wait_time=1, **kwargs) as receiver:
                    for message in receiver.receive_messages(max_message_count=100, max_wait_time=0.5):
                        replies.append(
                            Reply(
                                message_id=message.message_id,
                                correlation_id=message.correlation_id,
                                session_id=message.session_id,
                                application_properties={
                                    (k.decode() if isinstance(k, bytes) else k): v
                                    for k, v in (message.application_properties or {}).items()
                                },
                                body=json.loads(b"".join(message.body)),
                            )
                        )
                        receiver.complete_message(message)
            except Exception as exc:  # no session available yet, etc.
                if "session" not in str(exc).lower() and "timeout" not in type(exc).__name__.lower():
                    raise
                time.sleep(0.2)

    def dead_letters(self, *, max_count: int = 500) -> list[Any]:
        """Peek the request queue's dead-letter sub-queue."""
        with self.client.get_queue_receiver(REQUEST_QUEUE, sub_queue=ServiceBusSubQueue.DEAD_LETTER) as receiver:
            return list(receiver.peek_messages(max_message_count=max_count))

    def queue_stats(self, name: str = REQUEST_QUEUE) -> dict[str, Any]:
        assert self.servicebus is not None
        return self.servicebus.stats()["entities"][name]


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def _bench(argv: Sequence[str] | None = None) -> None:
    """``python -m tests.support.harness --requests 300 --concurrency 64``: end-to-end figures (not a test)."""
    import argparse

    import psutil

    parser = argparse.ArgumentParser(description=_bench.__doc__)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--operation-seconds", type=float, default=0.2)
    args = parser.parse_args(argv)
    with Harness(lock_duration=30, operation_seconds=args.operation_seconds, collections=["c1"]) as h:
        workers = [h.start_worker(concurrency=args.concurrency, geocatalog_budget=1000) for _ in range(args.workers)]
        for w in workers:
            h.wait_ready(w)
        procs = [psutil.Process(w.pid) for w in workers]
        cpu0 = sum(sum(p.cpu_times()[:2]) for p in procs)
        bodies = [ingest_request("c1", [stac_item(f"b{i}", "c1")]) for i in range(args.requests)]
        started = time.monotonic()
        ids = h.send(bodies)
        replies = h.collect_replies(len(ids), timeout=600)
        wall = time.monotonic() - started
        cpu = sum(sum(p.cpu_times()[:2]) for p in procs) - cpu0
        assert h.geocatalog is not None
        posts = h.geocatalog.stats()["requests"].get("POST /stac/collections/{collectionId}/items", {})
        print(
            f"requests={len(ids)} replies={len(replies)} distinct={len({r.body['request_id'] for r in replies})} "
            f"workers={args.workers} concurrency={args.concurrency} wall={wall:.2f}s "
            f"throughput={len(ids) / wall:.1f} req/s (send included) worker_cpu={cpu:.2f}s "
            f"cpu_per_request={cpu / len(ids) * 1000:.2f} ms ingest_posts={sum(posts.values())}"
        )


if __name__ == "__main__":
    _bench()
