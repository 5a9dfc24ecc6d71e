"""A whole deployment on one machine: both emulators in process and N worker processes.

Used by the ``demo`` command, the end-to-end tests and the benchmarks, so that all of them run the worker
exactly as production does: separate ``geocatalog-worker run`` processes talking over sockets.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gcw_emulators.geocatalog import GeoCatalogEmulator
from gcw_emulators.servicebus import QueueConfig, ServiceBusEmulator

REQUEST_QUEUE = "requests"
REPLY_QUEUE = "replies"


@dataclass
class ClusterSettings:
    workers: int = 3
    concurrency: int = 32
    operation_seconds: float | str = 1.0
    lock_duration: float = 30.0
    max_delivery_count: int = 10
    max_attempts: int = 5
    private_hosts: Sequence[str] = ()
    sign_hosts: Sequence[str] = ("*.blob.core.windows.net",)
    faults: Sequence[str] = ()
    request_budget: float | None = None
    geocatalog_budget: float | None = None
    collections: Sequence[str] = ()
    seed: int = 7
    extra_worker_args: Sequence[str] = ()
    log_dir: Path | None = None
    env: dict[str, str] = field(default_factory=dict)


class LocalCluster:
    """Start with ``with LocalCluster(settings) as cluster:``; workers are subprocesses, emulators threads."""

    def __init__(self, settings: ClusterSettings) -> None:
        self.settings = settings
        self.servicebus: ServiceBusEmulator | None = None
        self.geocatalog: GeoCatalogEmulator | None = None
        self.workers: dict[int, subprocess.Popen[bytes]] = {}
        self.health_ports: dict[int, int] = {}
        self._own_log_dir = settings.log_dir is None
        self.log_dir = Path(settings.log_dir or tempfile.mkdtemp(prefix="gcw-cluster-"))

    # -- lifecycle ---------------------------------------------------------------------------------------
    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        s = self.settings
        self.servicebus = ServiceBusEmulator(
            host="127.0.0.1",
            port=0,
            queues=[
                QueueConfig(REQUEST_QUEUE, lock_duration=s.lock_duration, max_delivery_count=s.max_delivery_count),
                QueueConfig(REPLY_QUEUE, requires_duplicate_detection=True),
            ],
        ).start()
        self.geocatalog = GeoCatalogEmulator(
            host="127.0.0.1",
            port=0,
            operation_seconds=s.operation_seconds,
            private_hosts=list(s.private_hosts),
            faults=list(s.faults),
            seed=s.seed,
            request_budget=s.request_budget,
        ).start()
        for collection in s.collections:
            self.geocatalog.create_collection(collection)
        for index in range(s.workers):
            self.start_worker(index)

    def stop(self) -> None:
        for index in list(self.workers):
            self.terminate_worker(index, timeout=15)
        if self.servicebus is not None:
            self.servicebus.stop()
        if self.geocatalog is not None:
            self.geocatalog.stop()
        if self._own_log_dir and not os.environ.get("GCW_KEEP_LOGS"):
            shutil.rmtree(self.log_dir, ignore_errors=True)

    # -- workers ---------------------------------------------------------------------------------------------
    def worker_command(self, index: int) -> list[str]:
        s = self.settings
        assert self.servicebus is not None and self.geocatalog is not None
        cmd = [
            sys.executable,
            "-m",
            "worker",
            "run",
            "--servicebus-connection-string",
            self.servicebus.connection_string,
            "--request-queue",
            REQUEST_QUEUE,
            "--reply-queue",
            REPLY_QUEUE,
            "--geocatalog-url",
            self.geocatalog.url,
            "--geocatalog-token",
            self.geocatalog.token,
            "--sas-api-url",
            self.geocatalog.url,
            "--concurrency",
            str(s.concurrency),
            "--health-port",
            "0",
            "--max-attempts",
            str(s.max_attempts),
        ]
        for host in s.sign_hosts:
            cmd += ["--sign-host", host]
        if s.geocatalog_budget:
            cmd += ["--geocatalog-budget", str(s.geocatalog_budget)]
        return cmd + list(s.extra_worker_args)

    def start_worker(self, index: int) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"worker-{index}.log").open("ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.settings.env}
        proc = subprocess.Popen(self.worker_command(index), stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        self.workers[index] = proc
        return proc

    def terminate_worker(self, index: int, timeout: float = 30) -> int:
        """SIGTERM: the worker drains and exits; returns its exit code."""
        proc = self.workers.pop(index)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                return proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                return proc.wait(timeout=10)
        return proc.returncode

    def worker_pids(self) -> list[int]:
        return [p.pid for p in self.workers.values() if p.poll() is None]
