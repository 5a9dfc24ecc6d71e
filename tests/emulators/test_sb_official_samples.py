"""Microsoft's own azure-servicebus samples, unmodified, against the Service Bus emulator (issue 19).

The samples come from the source distribution of the installed azure-servicebus (``pip download --no-binary``,
once, under a file lock, into the tools folder; nothing is copied into the repository). Each runs as its own
process with the environment its docstring asks for, pointed at one emulator started for the module:

* ``SERVICEBUS_FULLY_QUALIFIED_NAMESPACE`` is a loopback address of the module's own; the SDK dials AMQP over
  TLS on 5671 there (``--amqps-port 5671``) and the administration client HTTPS on 443 (``--management-port
  443`` when this process may bind it, else a free port given as ``host:port`` to the samples that only use the
  administration client).
* ``DefaultAzureCredential`` gets its token from a local managed-identity endpoint (``TokenEndpoint``);
  ``SERVICEBUS_CONNECTION_STR`` is the emulator's connection string; SAS policy and key are any values.
* Trust: ``REQUESTS_CA_BUNDLE`` and ``SSL_CERT_FILE`` name the emulator's ``ca.pem``. pyamqp ignores both: it
  verifies against ``certifi.where()`` unless the caller passes ``connection_verify``, which the samples do not.
  So the samples' ``PYTHONPATH`` starts with a ``certifi`` whose ``where()`` is certifi's own bundle plus
  ``ca.pem`` (what a distribution's certifi pointing at the system store does), never a disabled check.
* Every sample gets entities of its own (queue, session queue, topic with a subscription), created through the
  administration API, so the samples run side by side without seeing each other's messages.

A sample passes when it exits 0 with no traceback in its output. The samples that loop on a receiver forever are
stopped once they have printed the messages they were given. The ones that cannot apply are listed in
``NOT_APPLICABLE`` with the reason (and in docs/emulators.md).
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from azure.servicebus import ServiceBusClient, ServiceBusMessage
from azure.servicebus.management import ServiceBusAdministrationClient
from gcw_emulators.servicebus import ServiceBusEmulator

from tests.emulators.sdk_live import pc, sb

pytestmark = [pytest.mark.xdist_group("sb-amqps-5671"), pytest.mark.timeout(900)]

VERSION = sb.VERSION
SAMPLE_TIMEOUT = 90.0
SLOW_SAMPLE_TIMEOUT = 600.0
PARALLEL = 6

# Keyed by the sample's name without ``_async``: the reason it cannot run against the emulator.
NOT_APPLICABLE = {
    "client_identity_authentication": "EnvironmentCredential: a service principal or user signs in to a real Entra "
    "ID tenant (AZURE_TENANT_ID / AZURE_CLIENT_ID / AZURE_CLIENT_SECRET)",
    "connection_to_custom_endpoint_address": "custom_endpoint_address makes pyamqp speak AMQP over WebSockets to a "
    "placeholder endpoint ('<custom_endpoint_hostname>:<custom_endpoint_port>'); the emulator serves no WebSockets",
    "proxy": "an HTTP proxy with placeholder address and credentials (127.0.0.1:8899, 'admin'/'123456'); a proxy "
    "makes pyamqp use AMQP over WebSockets (the sync one needs websocket-client), which the emulator does not serve",
}
# samples that sleep for minutes by design (auto_lock_renew: 100 s three times and 80 s once, about 8 minutes in
# all): they start first, so that the others run meanwhile; GCW_SB_SLOW_SAMPLES=0 leaves them out
SLOW = {"auto_lock_renew"}
NEEDS_BOTH_PORTS = {"topic_subscription_with_rule_operations"}  # administration client and AMQP, one namespace


@dataclass(frozen=True)
class Forever:
    """A sample that receives until it is stopped: it passes once ``marker`` appeared ``count`` times."""

    marker: str
    count: int
    presend: int = 0  # messages the test puts in the sample's queue first (the sample sends none)


FOREVER = {
    "receive_iterator_queue": Forever("official-sample-test", 3, presend=3),
    "failure_and_recovery": Forever("Data ", 10),
}


@dataclass
class Outcome:
    returncode: int | None
    output: str
    seconds: float
    note: str = ""


def _stem(path: Path) -> str:
    return path.stem.removesuffix("_async")


def _download_samples() -> Path:
    try:
        return sb.sdist() / "samples"
    except pc.Unavailable as exc:
        pytest.skip(str(exc))


def _sample_files() -> list[Path]:
    """Collected without downloading: the names are listed from the sdist when it is there, else predicted."""
    samples = sb.unpacked() / "samples"
    if not samples.is_dir():
        try:
            samples = _download_samples()
        except pytest.skip.Exception:
            return []
    return sorted(samples.glob("*_samples/*.py"))


SAMPLES = _sample_files()


@dataclass
class Namespace:
    emulator: ServiceBusEmulator
    host: str
    env: dict[str, str]
    admin: ServiceBusAdministrationClient

    @property
    def management_on_443(self) -> bool:
        return self.emulator.management_port == 443


@pytest.fixture(scope="module")
def samples_dir() -> Path:
    return _download_samples()


@pytest.fixture(scope="module")
def namespace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Namespace]:
    ns = sb.Namespace.start(tmp_path_factory.mktemp("trust"))
    emu = ns.emulator
    env = {**ns.env, "SERVICEBUS_SESSION_ID": "official-sample-session"}
    admin = ServiceBusAdministrationClient.from_connection_string(
        emu.management_connection_string, connection_verify=str(emu.ca_cert)
    )
    try:
        yield Namespace(emu, ns.host, env, admin)
    finally:
        admin.close()
        ns.stop()


def _entities(ns: Namespace, index: int, sample: Path) -> dict[str, str]:
    queue, session_queue, topic, subscription = f"q{index}", f"sq{index}", f"t{index}", "s"
    ns.admin.create_queue(queue, lock_duration=dt.timedelta(seconds=10))
    ns.admin.create_queue(session_queue, requires_session=True, lock_duration=dt.timedelta(seconds=10))
    ns.admin.create_topic(topic)
    ns.admin.create_subscription(topic, subscription, lock_duration=dt.timedelta(seconds=10))
    fqns = ns.host
    if _stem(sample).startswith("mgmt_") and not ns.management_on_443:
        fqns = f"{ns.host}:{ns.emulator.management_port}"  # administration client only
    return {
        "SERVICEBUS_FULLY_QUALIFIED_NAMESPACE": fqns,
        "SERVICEBUS_QUEUE_NAME": queue,
        "SERVICEBUS_SESSION_QUEUE_NAME": session_queue,
        "SERVICEBUS_TOPIC_NAME": topic,
        "SERVICEBUS_SUBSCRIPTION_NAME": subscription,
    }


def _presend(ns: Namespace, queue: str, count: int) -> None:
    client = ServiceBusClient.from_connection_string(ns.emulator.connection_string)
    with client, client.get_queue_sender(queue) as sender:
        sender.send_messages([ServiceBusMessage(f"official-sample-test {i}") for i in range(count)])


def _run(sample: Path, env: dict[str, str]) -> Outcome:
    start = time.monotonic()
    forever = FOREVER.get(_stem(sample))
    proc = subprocess.Popen(
        [sys.executable, str(sample)],
        cwd=sample.parent,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    )
    lines: list[str] = []
    assert proc.stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or ()), daemon=True)
    reader.start()
    note = ""
    limit = SLOW_SAMPLE_TIMEOUT if _stem(sample) in SLOW else SAMPLE_TIMEOUT
    deadline = start + limit
    while proc.poll() is None and time.monotonic() < deadline:
        if forever is not None and sum(forever.marker in line for line in list(lines)) >= forever.count:
            note = "stopped after its messages"
            break
        time.sleep(0.1)
    if proc.poll() is None:
        note = note or f"timed out after {limit:g} s"
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    reader.join(timeout=10)
    code = 0 if note == "stopped after its messages" else proc.returncode
    return Outcome(code, "".join(lines), time.monotonic() - start, note)


def _applicable(ns: Namespace, sample: Path) -> str | None:
    """None when the sample runs here, else why not."""
    stem = _stem(sample)
    if stem in SLOW and os.environ.get("GCW_SB_SLOW_SAMPLES") == "0":
        return "sleeps for minutes by design, left out with GCW_SB_SLOW_SAMPLES=0"
    if stem in NOT_APPLICABLE:
        return NOT_APPLICABLE[stem]
    if stem in NEEDS_BOTH_PORTS and not ns.management_on_443:
        return "needs the administration API on 443 of the AMQP host, and this process may not bind port 443"
    return None


@pytest.fixture(scope="module")
def outcomes(request: pytest.FixtureRequest, namespace: Namespace, samples_dir: Path) -> dict[str, Outcome]:
    """Runs every selected sample that applies, ``PARALLEL`` at a time (most of a sample's time is waiting)."""
    wanted = {
        item.callspec.params["sample"]
        for item in request.session.items
        if item.module is request.module and hasattr(item, "callspec") and "sample" in item.callspec.params
    }
    runnable = [s for s in SAMPLES if _rel(s) in wanted and _applicable(namespace, s) is None]
    runnable.sort(key=lambda s: _stem(s) not in SLOW)  # the slow ones first: the pool runs the rest meanwhile
    jobs = []
    for index, sample in enumerate(runnable):
        env = {**namespace.env, **_entities(namespace, index, sample)}
        forever = FOREVER.get(_stem(sample))
        if forever is not None and forever.presend:
            _presend(namespace, env["SERVICEBUS_QUEUE_NAME"], forever.presend)
        jobs.append((sample, env))
    with ThreadPoolExecutor(PARALLEL) as pool:
        results = list(pool.map(lambda job: _run(*job), jobs))
    return {_rel(sample): outcome for (sample, _), outcome in zip(jobs, results, strict=True)}


def _rel(sample: Path) -> str:
    return f"{sample.parent.name}/{sample.name}"


@pytest.mark.parametrize("sample", [_rel(s) for s in SAMPLES] or ["(no samples: sdist not available)"])
def test_official_sample(sample: str, namespace: Namespace, samples_dir: Path, outcomes: dict[str, Outcome]) -> None:
    path = samples_dir / sample
    if not path.exists():
        pytest.skip(f"the azure-servicebus {VERSION} sdist could not be downloaded")
    reason = _applicable(namespace, path)
    if reason is not None:
        pytest.skip(f"not applicable: {reason}")
    outcome = outcomes[sample]
    tail = outcome.output[-4000:]
    assert outcome.returncode == 0, f"{sample}: exit {outcome.returncode} ({outcome.note})\n{tail}"
    assert "Traceback" not in outcome.output, f"{sample}: traceback in the output\n{tail}"


def test_not_applicable_list_names_real_samples(samples_dir: Path) -> None:
    """The documented exceptions stay true: each names a sample of this version."""
    stems = {_stem(p) for p in samples_dir.glob("*_samples/*.py")}
    assert set(NOT_APPLICABLE) | set(FOREVER) | NEEDS_BOTH_PORTS | SLOW <= stems
    doc = (Path(__file__).parents[2] / "docs" / "emulators.md").read_text()
    for stem in NOT_APPLICABLE:
        assert stem in doc, f"docs/emulators.md does not list {stem}"
