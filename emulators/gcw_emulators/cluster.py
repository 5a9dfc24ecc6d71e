"""A whole deployment on one machine: the emulators and N ``geocatalog-worker run`` processes, over sockets.

The one way the tests (``tests/support/harness.py`` ``Harness`` is this class with the tests' worker flags),
the ``demo`` command and the benchmarks start the system, so that all of them run the worker exactly as
production does: separate processes talking to a Service Bus (AMQP 1.0) and a GeoCatalog (HTTP) over sockets::

    with Cluster(lock_duration=3, operation_seconds=0.2, collections=["c1"]) as c:
        w = c.start_worker(concurrency=8)
        c.wait_ready(w)
        c.send([ingest_request("c1", [stac_item("a", "c1")])], message_ids=["m1"])
        replies = c.collect_replies(1, timeout=30)

The Service Bus emulator runs in this process (``queue_stats`` reads its counters; ``durable=True`` gives it a
data directory so ``restart_servicebus`` keeps accepted messages) or as a subprocess (``servicebus_process=True``,
so that ``kill_servicebus`` can drop every connection at once, and so that the broker has a GIL of its own: the
benchmarks run it so), with the same queues (``write_config_json``). The GeoCatalog emulator (with its SAS API) runs in
this process. Each worker's stdout and stderr are read by a thread into ``WorkerProcess.lines`` and written to
``<log_dir>/worker-<n>.log``; the health port is learnt from the ``health_server_started`` event (workers bind
``--health-port 0``). Without a ``log_dir`` the logs go to a temporary directory removed at stop unless
``GCW_KEEP_LOGS`` is set.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from azure.servicebus import (
    NEXT_AVAILABLE_SESSION,
    ServiceBusClient,
    ServiceBusMessage,
    ServiceBusReceivedMessage,
    ServiceBusSubQueue,
)

from gcw_emulators.demo.traffic import send_batched
from gcw_emulators.geocatalog import GeoCatalogEmulator
from gcw_emulators.servicebus import QueueConfig, ServiceBusEmulator
from gcw_emulators.servicebus.access import AccessPolicy

REQUEST_QUEUE = "requests"
REPLY_QUEUE = "replies"

# The demo's and the benchmarks' workers: as deployed (see docs/configuration.md), signing blob hrefs through the
# GeoCatalog emulator's SAS API (``sas_api=True``).
DEMO_WORKER_FLAGS: Mapping[str, object] = {
    "concurrency": 32,
    "max_attempts": 5,
    "sign_host": ["*.blob.core.windows.net"],
}


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds passed; returns its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def start_servicebus_process(
    queues: Sequence[str], *, lock_duration: float = 60.0, max_delivery_count: int = 10, config: Path | None = None
) -> tuple[subprocess.Popen[str], str]:
    """Start ``geocatalog-worker emulator servicebus`` as a subprocess on a free port with these queues (or the
    entities of a ``Config.json``, see ``write_config_json``); returns the process and the connection string it
    printed (its further output is discarded)."""
    args = [sys.executable, "-m", "worker", "emulator", "servicebus", "--port", "0"]
    if config is not None:
        args += ["--config", str(config)]
    else:
        for queue in queues:
            args += ["--queue", queue]
        args += ["--lock-duration", str(lock_duration), "--max-delivery-count", str(max_delivery_count)]
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    assert proc.stdout is not None
    first = proc.stdout.readline().strip()
    if not first.startswith("Endpoint="):
        proc.kill()
        proc.wait(timeout=10)
        raise RuntimeError(f"the Service Bus emulator did not print a connection string: {first!r}")
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    return proc, first


def write_config_json(path: Path, queues: Sequence[QueueConfig]) -> Path:
    """The queues as a Microsoft Service Bus emulator ``Config.json`` (durations in seconds, which the emulator's
    ``--config`` reads as well as ISO-8601), so that a broker in its own process has the same entities."""
    entries = [
        {
            "Name": q.name,
            "Properties": {
                "LockDuration": q.lock_duration,
                "MaxDeliveryCount": q.max_delivery_count,
                "RequiresSession": q.requires_session,
                "RequiresDuplicateDetection": q.requires_duplicate_detection,
                "DuplicateDetectionHistoryTimeWindow": q.duplicate_detection_window,
            },
        }
        for q in queues
    ]
    doc = {"UserConfig": {"Namespaces": [{"Name": "sbemulatorns", "Queues": entries}]}}
    path.write_text(json.dumps(doc, indent=2))
    return path


def _text_keys(properties: Mapping[Any, Any] | None) -> dict[str, Any]:
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in (properties or {}).items()}


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
    log_path: Path | None = None
    lines: list[str] = field(default_factory=list)
    health_port: int | None = None
    _reader: threading.Thread | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """The JSON log events so far (all, or those named ``name``)."""
        out = []
        for line in list(self.lines):
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and (name is None or event.get("event") == name):
                out.append(event)
        return out

    def output(self) -> str:
        return "\n".join(self.lines)


def _read_lines(worker: WorkerProcess) -> None:
    assert worker.proc.stdout is not None
    log = worker.log_path.open("a", buffering=1) if worker.log_path is not None else None
    try:
        for line in worker.proc.stdout:
            if log is not None:
                log.write(line)
            line = line.rstrip("\n")
            worker.lines.append(line)
            if worker.health_port is None and "health_server_started" in line:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    worker.health_port = int(json.loads(line)["port"])
    finally:
        if log is not None:
            log.close()


class Cluster:
    def __init__(
        self,
        *,
        workers: int = 0,
        lock_duration: float = 5.0,
        max_delivery_count: int = 10,
        sessions: bool = False,
        reply_queue: bool = True,
        reply_duplicate_detection: bool = True,
        servicebus_process: bool = False,
        durable: bool = False,
        operation_seconds: float | str = 0.2,
        collections: Iterable[str] = ("c1",),
        faults: Iterable[str] = (),
        request_budget: float | None = None,
        private_hosts: Iterable[str] | None = None,
        sas_expiry_seconds: float = 3600,
        seed: int = 0,
        token: str | None = None,
        worker_flags: Mapping[str, object] | None = None,
        sas_api: bool = False,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        log_dir: Path | None = None,
        stop_timeout: float | None = None,
        policies: Iterable[AccessPolicy] = (),
    ) -> None:
        """Queues: ``lock_duration``, ``max_delivery_count`` and ``sessions`` of the request queue; the reply
        queue (absent with ``reply_queue=False`` until ``add_reply_queue``) with duplicate detection unless
        ``reply_duplicate_detection=False``. GeoCatalog: ``operation_seconds`` (a number or a duration spec such
        as ``"uniform:3,6"``), the ``collections`` that exist, injected ``faults``, ``request_budget``,
        ``private_hosts`` (``None``: the emulator's default), SAS token lifetime, fault ``seed`` and bearer
        ``token`` (``None``: the emulator's dev token). Workers: ``workers`` are started by ``start()``;
        ``worker_flags`` are every worker's ``run`` flags in python spelling (see ``worker_args``), ``sas_api``
        adds ``--sas-api-url`` (the emulator's), ``extra_args`` are raw flags appended to every command line,
        ``env`` is added to their environment. ``stop_timeout``: at stop, SIGTERM the workers and allow them this
        long to drain (``None``: SIGKILL them)."""
        self.n_workers = workers
        self.lock_duration = lock_duration
        self.max_delivery_count = max_delivery_count
        self.sessions = sessions
        self.with_reply_queue = reply_queue
        self.reply_duplicate_detection = reply_duplicate_detection
        self.servicebus_process = servicebus_process
        self.durable = durable
        self.operation_seconds = operation_seconds
        self.collections = list(collections)
        self.faults = list(faults)
        self.request_budget = request_budget
        self.private_hosts = None if private_hosts is None else list(private_hosts)
        self.sas_expiry_seconds = sas_expiry_seconds
        self.seed = seed
        self.token = token
        self.worker_flags = dict(worker_flags or {})
        self.sas_api = sas_api
        self.extra_args = list(extra_args)
        self.env = dict(env or {})
        self.stop_timeout = stop_timeout
        self.policies = list(policies)  # shared access policies besides the root one (connection_string_for(name))
        self._own_log_dir = log_dir is None
        self.log_dir = Path(log_dir) if log_dir is not None else Path(tempfile.mkdtemp(prefix="gcw-cluster-"))
        self.servicebus: ServiceBusEmulator | None = None
        self.servicebus_proc: subprocess.Popen[str] | None = None
        self.connection_string = ""
        self.geocatalog: GeoCatalogEmulator | None = None
        self.workers: list[WorkerProcess] = []
        self._data_dir = Path(tempfile.mkdtemp(prefix="gcw-cluster-sb-")) if durable else None
        self._sb_port = 0
        self._client: ServiceBusClient | None = None
        self._session_client: ServiceBusClient | None = None  # no SDK retries: "no session" returns quickly

    # ---- lifecycle -----------------------------------------------------------------------------------------
    def __enter__(self) -> Cluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Cluster:
        if self.servicebus_process:
            self._start_servicebus_process()
        else:
            self._start_servicebus()
        self.geocatalog = GeoCatalogEmulator(host="127.0.0.1", port=0, **self._geocatalog_options()).start()
        self._client = ServiceBusClient.from_connection_string(self.connection_string)
        self._session_client = ServiceBusClient.from_connection_string(self.connection_string, retry_total=0)
        for _ in range(self.n_workers):
            self.start_worker()
        return self

    def stop(self) -> None:
        self._stop_workers()
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
        if self._data_dir is not None:
            shutil.rmtree(self._data_dir, ignore_errors=True)
        if self._own_log_dir and not os.environ.get("GCW_KEEP_LOGS"):
            shutil.rmtree(self.log_dir, ignore_errors=True)

    def _stop_workers(self) -> None:
        running = [w for w in self.workers if w.proc.poll() is None]
        for worker in running:
            worker.proc.send_signal(signal.SIGKILL if self.stop_timeout is None else signal.SIGTERM)
        deadline = time.monotonic() + (10.0 if self.stop_timeout is None else self.stop_timeout)
        for worker in running:
            try:
                worker.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:  # did not drain in time
                worker.proc.kill()
                worker.proc.wait(timeout=10)
        for worker in self.workers:
            if worker._reader is not None:
                worker._reader.join(timeout=5)  # the log file is complete and closed

    @property
    def client(self) -> ServiceBusClient:
        assert self._client is not None, "the cluster is not started"
        return self._client

    # ---- Service Bus -----------------------------------------------------------------------------------------
    def _queues(self) -> list[QueueConfig]:
        queues = [
            QueueConfig(
                REQUEST_QUEUE,
                lock_duration=self.lock_duration,
                max_delivery_count=self.max_delivery_count,
                requires_session=self.sessions,
            )
        ]
        if self.with_reply_queue:
            queues.append(self._reply_queue())
        return queues

    def _reply_queue(self) -> QueueConfig:
        return QueueConfig(
            REPLY_QUEUE, requires_duplicate_detection=self.reply_duplicate_detection, requires_session=self.sessions
        )

    def _start_servicebus(self) -> None:
        self.servicebus = ServiceBusEmulator(
            host="127.0.0.1",
            port=self._sb_port,
            queues=self._queues(),
            data_dir=self._data_dir,
            policies=self.policies,
        ).start()
        self._sb_port = self.servicebus.port
        self.connection_string = self.servicebus.connection_string

    def _start_servicebus_process(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        config = write_config_json(self.log_dir / "servicebus-config.json", self._queues())
        self.servicebus_proc, self.connection_string = start_servicebus_process([], config=config)

    def kill_servicebus(self) -> None:
        """SIGKILL the Service Bus emulator subprocess: every connection drops at once."""
        assert self.servicebus_proc is not None, "only with servicebus_process=True"
        self.servicebus_proc.kill()
        self.servicebus_proc.wait(timeout=10)

    def restart_servicebus(self, down_seconds: float = 1.0) -> None:
        """Stop the Service Bus emulator (every connection drops, locks are lost) and start it again on the same
        port from its data_dir: accepted messages survive, in-flight locks do not."""
        assert self.durable and self.servicebus is not None, "only with durable=True"
        self.servicebus.stop()
        time.sleep(down_seconds)  # the outage itself: workers see the broker gone for this long
        failure: list[Exception] = []

        def started() -> bool:
            try:
                self._start_servicebus()
            except Exception as exc:  # the port may not be free again yet
                failure[:] = [exc]
                return False
            return True

        if not wait_until(started, 20, interval=0.5):
            raise failure[-1]

    def add_reply_queue(self) -> None:
        """The reply queue appears (it was missing): as an operator creating it would."""
        assert self.servicebus is not None and self.servicebus.store is not None and not self.with_reply_queue
        self.with_reply_queue = True
        self.servicebus.store.add_queue(self._reply_queue())

    def queue_stats(self, name: str = REQUEST_QUEUE) -> dict[str, Any]:
        """The in-process emulator's counters of one queue (``active``, ``locked``, ``dead_letter``, ...)."""
        assert self.servicebus is not None, "not with servicebus_process=True"
        return self.servicebus.stats()["entities"][name]

    # ---- GeoCatalog ------------------------------------------------------------------------------------------
    def _geocatalog_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "operation_seconds": self.operation_seconds,
            "faults": self.faults,
            "request_budget": self.request_budget,
            "collections": self.collections,
            "sas_expiry_seconds": self.sas_expiry_seconds,
            "seed": self.seed,
        }
        if self.private_hosts is not None:
            options["private_hosts"] = self.private_hosts
        if self.token is not None:
            options["token"] = self.token
        return options

    # ---- workers -----------------------------------------------------------------------------------------
    def worker_args(self, **overrides: object) -> list[str]:
        """``geocatalog-worker run`` flags; ``overrides`` (over the cluster's ``worker_flags``) use python names
        (``drain_seconds=5``); ``True``/``False`` give ``--flag``/``--no-flag``, a list value repeats the flag,
        ``None`` drops it."""
        assert self.connection_string and self.geocatalog is not None, "the cluster is not started"
        flags: dict[str, object] = {
            "servicebus_connection_string": self.connection_string,
            "request_queue": REQUEST_QUEUE,
            "reply_queue": REPLY_QUEUE,
            "geocatalog_url": self.geocatalog.url,
            "geocatalog_token": self.geocatalog.token,
            "health_host": "127.0.0.1",
            "health_port": 0,
        }
        if self.sas_api:
            flags["sas_api_url"] = self.geocatalog.url
        if self.sessions:
            flags["sessions"] = True
        flags.update(self.worker_flags)
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
        return args + self.extra_args

    def start_worker(self, *, env: Mapping[str, str] | None = None, **overrides: object) -> WorkerProcess:
        """Start one ``geocatalog-worker run`` process (not waiting for it: see ``wait_ready``)."""
        args = [sys.executable, "-m", "worker", "run", *self.worker_args(**overrides)]
        proc = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env, **(env or {})},
        )
        self.log_dir.mkdir(parents=True, exist_ok=True)
        worker = WorkerProcess(proc=proc, args=args, log_path=self.log_dir / f"worker-{len(self.workers)}.log")
        worker._reader = threading.Thread(target=_read_lines, args=(worker,), daemon=True)
        worker._reader.start()
        self.workers.append(worker)
        return worker

    def worker_pids(self) -> list[int]:
        """The pids of the workers still running."""
        return [w.pid for w in self.workers if w.proc.poll() is None]

    def http(self, worker: WorkerProcess, path: str) -> tuple[int, str]:
        """GET ``path`` on the worker's health server: (status, body)."""
        assert worker.health_port is not None, "the worker has not logged its health port yet"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{worker.health_port}{path}", timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    def wait_ready(self, worker: WorkerProcess, timeout: float = 30.0) -> None:
        """Until ``/readyz`` answers 200; fails with the worker's output if it exits or times out."""

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
        """The value of one sample of ``/metrics`` (without ``labels``: the sum over all; 0 when absent)."""
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
        """SIGTERM: the worker drains and exits; returns its exit code."""
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
        """Send requests (JSON documents or raw bodies); returns their message ids (random ones unless given)."""
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
        self.send_messages(messages, queue=queue)
        return ids

    def send_messages(self, messages: Sequence[ServiceBusMessage], *, queue: str = REQUEST_QUEUE) -> None:
        """Send ready-made messages in batches that fit the broker's limit (one larger than a batch alone)."""
        send_batched(self.client, queue, messages)

    def collect_replies(self, count: int, *, timeout: float = 60.0, settle_extra: float = 0.0) -> list[Reply]:
        """Receive and complete replies until ``count`` arrived (then ``settle_extra`` seconds more, to catch
        duplicates) or ``timeout`` passed."""
        replies: list[Reply] = []
        deadline = time.monotonic() + timeout
        extra_deadline: float | None = None
        kwargs: dict[str, Any] = {}
        client = self.client
        if self.sessions:
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
                                application_properties=_text_keys(message.application_properties),
                                body=json.loads(b"".join(message.body)),
                            )
                        )
                        receiver.complete_message(message)
            except Exception as exc:  # no session available yet, etc.
                if "session" not in str(exc).lower() and "timeout" not in type(exc).__name__.lower():
                    raise
                time.sleep(0.2)  # a pause before asking the broker for a session again, not a synchronisation

    def dead_letters(self, *, max_count: int = 500) -> list[ServiceBusReceivedMessage]:
        """Peek the request queue's dead-letter sub-queue (the SDK's messages)."""
        with self.client.get_queue_receiver(REQUEST_QUEUE, sub_queue=ServiceBusSubQueue.DEAD_LETTER) as receiver:
            return list(receiver.peek_messages(max_message_count=max_count))

    def dead_letter_records(self, max_count: int = 5000) -> list[dict[str, Any]]:
        """Every dead-lettered request: message id, reason, description, properties (peeked, not removed)."""
        return [
            {
                "message_id": msg.message_id,
                "reason": msg.dead_letter_reason,
                "description": msg.dead_letter_error_description,
                "properties": _text_keys(msg.application_properties),
            }
            for msg in self.dead_letters(max_count=max_count)
        ]
