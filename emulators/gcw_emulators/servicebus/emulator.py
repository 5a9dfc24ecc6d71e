"""``ServiceBusEmulator``: the broker on a background thread, with optional durability and status endpoint."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import structlog
from proton.reactor import Container

from gcw_emulators.servicebus.access import ROOT_KEY_NAME, ROOT_KEY_VALUE, AccessControl, AccessPolicy, parse_policies
from gcw_emulators.servicebus.broker import Broker
from gcw_emulators.servicebus.config import ConfigError, QueueConfig, TopicConfig, parse_config, read_config_json
from gcw_emulators.servicebus.store import Store

log = structlog.get_logger(__name__)

SAS_KEY_NAME = ROOT_KEY_NAME
SAS_KEY_VALUE = ROOT_KEY_VALUE


class EmulatorError(RuntimeError):
    """The emulator could not start (bad configuration, port in use, ...)."""


class ServiceBusEmulator:
    """An AMQP 1.0 broker the unmodified azure-servicebus SDK connects to (``UseDevelopmentEmulator=true``).

    ``port=0`` picks a free port; read ``emu.port`` after ``start()``. ``status_port=0`` picks one for the HTTP
    status endpoint (``emu.status_url``). ``data_dir`` keeps accepted messages in SQLite across restarts.
    ``max_message_size`` is advertised on sender links (256 KiB like the Standard tier; the SDK then caps
    batches at 256 KiB too, or at 1 MiB when this is 1 MiB or more).

    ``policies`` are shared access policies
    besides ``RootManageSharedAccessKey`` (also read from ``config_file``); ``connection_string_for(name)``
    gives a connection string signing with one of them.

    ``management_port`` (0 picks one) serves the ``ServiceBusAdministrationClient`` API over HTTPS
    (``emu.management_connection_string``); ``amqps_port`` adds an AMQP-over-TLS listener for clients that do not
    use ``UseDevelopmentEmulator`` (5671 is the port the SDK dials then). Both use a certificate signed by a local
    CA written to ``tls_dir`` (default: ``data_dir``/tls, else a temporary folder); trust ``emu.ca_cert``.

    ``arm_port`` (0 picks one) serves the Azure Resource Manager calls that provision namespaces and their
    entities (``arm.py``, ``emu.arm_url``): every namespace is ``<name><namespace_suffix>``, all served by this
    emulator, and the certificate also covers ``*<namespace_suffix>`` (the client resolves those names to ``host``).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, queues: Sequence[QueueConfig] = (),
                 topics: Sequence[TopicConfig] = (), config_file: str | Path | None = None,
                 data_dir: str | Path | None = None, status_port: int | None = None,
                 tick_interval: float = 0.05, max_message_size: int = 256 * 1024,
                 management_port: int | None = None, amqps_port: int | None = None,
                 tls_dir: str | Path | None = None,
                 policies: Sequence[AccessPolicy] = (), arm_port: int | None = None,
                 namespace_suffix: str = ".servicebus.gcw.test") -> None:
        self.host = host
        self._arm_port = arm_port
        self._arm: Any = None
        self.arm_port: int | None = None
        self.namespace_suffix = namespace_suffix if namespace_suffix.startswith(".") else f".{namespace_suffix}"
        self._management_port = management_port
        self._amqps_port = amqps_port
        self._tls_dir = Path(tls_dir) if tls_dir is not None else None
        self._management: Any = None
        self._amqps: Any = None
        self.management_port: int | None = None
        self.amqps_port: int | None = None
        self.ca_cert: Path | None = None
        self._tls: Any = None
        self._tmp: Any = None
        self.port = port
        self._requested_port = port
        self._status_port = status_port
        self._data_dir = Path(data_dir) if data_dir is not None else None
        self._tick_interval = tick_interval
        self._max_message_size = max_message_size
        all_queues = list(queues)
        all_topics = list(topics)
        all_policies = list(policies)
        if config_file is not None:
            doc = read_config_json(config_file)
            file_queues, file_topics = parse_config(doc)
            all_queues += file_queues
            all_topics += file_topics
            all_policies += parse_policies(doc)
        seen: set[str] = set()
        for name in [q.name for q in all_queues] + [t.name for t in all_topics]:
            if name.lower() in seen:
                raise ConfigError(f"entity {name!r} is declared more than once (names are case-insensitive)")
            seen.add(name.lower())
        self._queues = all_queues
        self._topics = all_topics
        self.access = AccessControl(all_policies)
        self.access.check_entities(seen)
        self._journal: Any = None
        self.store: Store | None = None
        self._broker: Broker | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._status: Any = None
        self.status_url: str | None = None

    # ------------------------------------------------------------------ lifecycle
    def _build_store(self) -> Store:
        if self._data_dir is not None:
            from gcw_emulators.servicebus.persistence import SqliteJournal

            self._journal = SqliteJournal(self._data_dir / "servicebus.sqlite3")
        from gcw_emulators.servicebus.codec import with_app_properties
        from gcw_emulators.servicebus.management import ManagementApi

        store = Store(journal=self._journal, rewrite=with_app_properties)
        for q in self._queues:
            store.add_queue(q)
        for t in self._topics:
            store.add_topic(t)
        persist = self._journal.save_definition if self._journal is not None else None
        self._api = ManagementApi(store, namespace=self.host, persist=persist, access=self.access)
        if self._journal is not None:
            for path, kind, xml in self._journal.definitions():
                self._api.restore(path, kind, xml)
            self._journal.load_into(store)
        return store

    def _certificates(self) -> Any:
        from gcw_emulators.tls import ensure_certificates

        folder = self._tls_dir
        if folder is None and self._data_dir is not None:
            folder = self._data_dir / "tls"
        if folder is None:
            import tempfile

            self._tmp = tempfile.TemporaryDirectory(prefix="sb-emulator-tls-")
            folder = Path(self._tmp.name)
        wildcard = (f"*{self.namespace_suffix}",) if self._arm_port is not None else ()
        return ensure_certificates(folder, (self.host, *wildcard))

    def start(self, timeout: float = 15.0) -> ServiceBusEmulator:
        if self._thread is not None:
            raise EmulatorError("the emulator is already started")
        self.store = self._build_store()
        self._ready.clear()
        self._failure = None

        def ready(port: int) -> None:
            if port < 0:
                assert self._broker is not None
                self._failure = self._broker.start_error
            else:
                self.port = port
            self._ready.set()

        commit = self._journal.commit if self._journal is not None else None
        if self._management_port is not None or self._amqps_port is not None or self._arm_port is not None:
            self._tls = self._certificates()
            self.ca_cert = self._tls.ca
        self._broker = Broker(self.store, self.host, self._requested_port, on_ready=ready, on_commit=commit,
                              tick_interval=self._tick_interval, max_message_size=self._max_message_size,
                              access=self.access)
        self._thread = threading.Thread(target=self._run, name="servicebus-emulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise EmulatorError(f"the emulator did not start within {timeout} s")
        if self._failure is not None:
            raise EmulatorError(f"the emulator failed to start on {self.host}:{self._requested_port}: "
                                f"{self._failure}") from self._failure
        if self._amqps_port is not None:
            from gcw_emulators.servicebus.amqps import TlsTerminator

            # TLS ends in front of the plain listener, so sequencing.py still reads the frames (see amqps.py)
            self._amqps = TlsTerminator(self.host, self._amqps_port, self.port, certfile=self._tls.cert,
                                        keyfile=self._tls.key)
            try:
                self._amqps.start()
            except OSError as exc:
                self._amqps = None
                self.stop()
                raise EmulatorError(f"the emulator failed to start AMQPS on {self.host}:{self._amqps_port}: "
                                    f"{exc}") from exc
            self.amqps_port = self._amqps.port
        if self._management_port is not None:
            from gcw_emulators.servicebus.management import ManagementServer

            self._management = ManagementServer(self._api, self.host, self._management_port,
                                                certfile=str(self._tls.cert), keyfile=str(self._tls.key)).start()
            self.management_port = self._management.port
            self._api.namespace = f"{self.host}:{self.management_port}"
        if self._arm_port is not None:
            from gcw_emulators.servicebus.arm import ArmApi, ArmServer

            self._arm = ArmServer(ArmApi(self.store, self.access, self.namespace_suffix), self.host,
                                  self._arm_port, certfile=self._tls.cert, keyfile=self._tls.key).start()
            self.arm_port = self._arm.port
        if self._status_port is not None:
            from gcw_emulators.servicebus.status import StatusServer

            self._status = StatusServer(self.host, self._status_port, self.stats).start()
            self.status_url = self._status.url
        log.info("servicebus_emulator_started", host=self.host, port=self.port, status_url=self.status_url,
                 durable=self._data_dir is not None)
        return self

    def _run(self) -> None:
        assert self._broker is not None
        try:
            Container(self._broker).run()
        except BaseException as exc:
            self._failure = exc
            log.exception("servicebus_emulator_stopped_with_error")
        finally:
            self._ready.set()

    def stop(self, timeout: float = 10.0) -> None:
        if self._amqps is not None:
            self._amqps.stop()
            self._amqps = None
        if self._management is not None:
            self._management.stop()
            self._management = None
        if self._arm is not None:
            self._arm.stop()
            self._arm = None
        if self._status is not None:
            self._status.stop()
            self._status = None
        if self._thread is not None and self._broker is not None:
            if self._thread.is_alive():
                self._broker.request_stop()
                self._thread.join(timeout)
            self._thread = None
        if self._journal is not None:
            self._journal.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
            self._journal = None
        log.info("servicebus_emulator_stopped", port=self.port)

    def __enter__(self) -> ServiceBusEmulator:
        if self._thread is None:
            self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # ------------------------------------------------------------------ info
    @property
    def connection_string(self) -> str:
        return self.connection_string_for(SAS_KEY_NAME)

    def connection_string_for(self, policy: str, entity: str | None = None) -> str:
        """The connection string of a shared access policy (``entity``: the queue or topic it is declared on)."""
        found = self.access.policy(policy, entity)
        return (f"Endpoint=sb://{self.host}:{self.port};SharedAccessKeyName={found.name};"
                f"SharedAccessKey={found.key};UseDevelopmentEmulator=true")

    @property
    def arm_url(self) -> str:
        """The Resource Manager endpoint (``https://host:port/``): ``base_url`` of the ARM clients."""
        if self.arm_port is None:
            raise EmulatorError("the Resource Manager stand-in is off: start the emulator with arm_port")
        return f"https://{self.host}:{self.arm_port}/"

    @property
    def management_connection_string(self) -> str:
        """For ``ServiceBusAdministrationClient.from_connection_string`` (HTTPS to the management port)."""
        if self.management_port is None:
            raise EmulatorError("the management API is off: start the emulator with management_port")
        return (f"Endpoint=sb://{self.host}:{self.management_port};SharedAccessKeyName={SAS_KEY_NAME};"
                f"SharedAccessKey={SAS_KEY_VALUE};UseDevelopmentEmulator=true")

    def stats(self) -> dict[str, Any]:
        """Per-entity counts, plus ``wire``: transfers renumbered (clients that sent delivery-ids out of order)
        and frames dropped because they came on a session the client had already ended."""
        if self.store is None:
            return {"entities": {}}
        stats = self.store.stats()
        if self._broker is not None:
            stats["wire"] = dataclasses.asdict(self._broker.wire)
        return stats
