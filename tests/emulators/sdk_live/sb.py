"""The ``azure-servicebus`` sdist and a Service Bus namespace on the emulator that its samples and tests reach.

Used by ``tests/emulators/test_sb_official_samples.py`` (the samples) and ``test_sb_sdk_live_tests.py`` (the
package's own tests in live mode). A namespace is one emulator on a loopback address of its own (``127.a.b.c``),
with AMQP over TLS on 5671 and the administration API on 443 (where this process may bind it) as the SDK dials a
``fully_qualified_namespace``; the tests' processes trust its CA through ``certifi`` (see ``Namespace``).
"""

from __future__ import annotations

import fcntl
import importlib.metadata
import os
import random
import socket
import subprocess
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import certifi
from gcw_emulators.azurite import tools_dir
from gcw_emulators.identity import TokenEndpoint
from gcw_emulators.servicebus import ServiceBusEmulator

from tests.emulators.sdk_live.pc import Unavailable

VERSION = importlib.metadata.version("azure-servicebus")
# what the package's tests import besides the SDK (installed into the tools folder, not the project's environment):
# servicebus_preparer.py imports the ARM clients at module level, and every test module imports that file
TEST_DEPENDENCIES = (
    "pytest-asyncio==1.5.0",
    "azure-mgmt-resource==23.4.0",  # 24+ moved ResourceManagementClient out of azure.mgmt.resource
    "azure-mgmt-servicebus==10.0.0",
    "azure-mgmt-core==1.6.0",
    "azure-common==1.1.28",
    # the sync WebSocket transport's library (pyamqp imports it lazily; the async one uses aiohttp, which the
    # project's environment has): a test that expects a connection error from a placeholder
    # custom_endpoint_address (test_custom_endpoint_connection_verify_exception) otherwise gets ImportError
    "websocket-client==1.9.2",
)


def _root() -> Path:
    return tools_dir() / f"azure-servicebus-{VERSION}-sdist"


def unpacked() -> Path:
    """Where the sdist is (or will be) unpacked; it may not exist yet."""
    return _root() / f"azure_servicebus-{VERSION}"


def sdist() -> Path:
    """The unpacked sdist of the installed azure-servicebus (downloaded once into the tools folder, under a lock)."""
    root = _root()
    root.mkdir(parents=True, exist_ok=True)
    with (root / "download.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (unpacked() / "samples").is_dir() and (unpacked() / "tests").is_dir():
            return unpacked()
        cmd = [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps", "--quiet"]
        proc = subprocess.run(
            [*cmd, f"azure-servicebus=={VERSION}", "-d", str(root)], capture_output=True, text=True, timeout=300
        )
        archives = sorted(root.glob("azure_servicebus-*.tar.gz"))
        if proc.returncode != 0 or not archives:
            raise Unavailable(f"cannot download the azure-servicebus {VERSION} sdist: {proc.stderr.strip()[-500:]}")
        with tarfile.open(archives[0]) as tar:
            tar.extractall(root, filter="data")
    return unpacked()


def test_dependencies() -> Path:
    """A directory with the tests' own dependencies (``pip install --target``), for their ``PYTHONPATH``."""
    target = _root() / "test-deps"
    _root().mkdir(parents=True, exist_ok=True)
    with (_root() / "download.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = target / ".complete"
        if not done.exists() or done.read_text() != "\n".join(TEST_DEPENDENCIES):
            pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--upgrade", "--target"]
            proc = subprocess.run([*pip, str(target), *TEST_DEPENDENCIES], capture_output=True, text=True, timeout=300)
            if proc.returncode != 0:
                raise Unavailable(f"cannot install {', '.join(TEST_DEPENDENCIES)}: {proc.stderr.strip()[-500:]}")
            done.write_text("\n".join(TEST_DEPENDENCIES))
    return target


# the test process's resolver for the namespaces the Resource Manager stand-in creates (names under one suffix)
_RESOLVER = """\
import socket

_SUFFIX = {suffix!r}
_ADDRESS = {address!r}
_getaddrinfo = socket.getaddrinfo


def _resolve(host, *args, **kwargs):
    name = host.decode() if isinstance(host, bytes) else host
    if isinstance(name, str) and name.lower().rstrip(".").endswith(_SUFFIX):
        host = _ADDRESS
    return _getaddrinfo(host, *args, **kwargs)


socket.getaddrinfo = _resolve
"""


def _can_bind(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


@dataclass
class Namespace:
    """One emulator as a namespace: ``host`` is its fully qualified name, ``env`` what a client process needs.

    Trust: ``REQUESTS_CA_BUNDLE`` and ``SSL_CERT_FILE`` name the emulator's ``ca.pem``. pyamqp ignores both: it
    verifies against ``certifi.where()`` unless the caller passes ``connection_verify``, which Microsoft's code
    does not. So ``env["PYTHONPATH"]`` starts with a ``certifi`` whose ``where()`` is certifi's own bundle plus
    ``ca.pem`` (what a distribution's certifi pointing at the system store does), never a disabled check.

    With ``arm=True`` the emulator also serves Azure Resource Manager (``gcw_emulators.servicebus.arm``), where
    the data-plane tests' preparers create namespaces ``<name>.servicebus.gcw.test``: ``env`` points
    ``SERVICEBUS_RESOURCE_MANAGER_URL`` and ``SERVICEBUS_ENDPOINT_SUFFIX`` (read by ``servicebus_preparer.py``) at
    it, and a ``sitecustomize.py`` next to the certifi stand-in resolves names under that suffix (only those) to
    the emulator's address, as a DNS zone for the namespaces would.
    """

    emulator: ServiceBusEmulator
    host: str
    identity: TokenEndpoint
    env: dict[str, str] = field(default_factory=dict)

    @property
    def management_on_443(self) -> bool:
        return self.emulator.management_port == 443

    @property
    def management_host(self) -> str:
        """The address of the administration API: the namespace, or ``host:port`` when 443 was not available."""
        return self.host if self.management_on_443 else f"{self.host}:{self.emulator.management_port}"

    @classmethod
    def start(cls, trust: Path, *, arm: bool = False) -> Namespace:
        """A namespace on a free loopback address; ``trust`` is an empty folder for the certifi stand-in."""
        for _ in range(50):
            host = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"
            if _can_bind(host, 5671):
                break
        management_port = 443 if _can_bind(host, 443) else 0
        emu = ServiceBusEmulator(
            host=host, port=0, amqps_port=5671, management_port=management_port, arm_port=0 if arm else None
        ).start()
        assert emu.ca_cert is not None
        bundle = trust / "bundle.pem"
        bundle.write_text(Path(certifi.where()).read_text() + "\n" + emu.ca_cert.read_text())
        (trust / "certifi").mkdir()
        (trust / "certifi" / "__init__.py").write_text(
            f"def where():\n    return {str(bundle)!r}\n\n\ndef contents():\n    return open(where()).read()\n"
        )
        identity = TokenEndpoint().start()
        keep = ("AZURE_", "SERVICEBUS_", "MSI_", "IDENTITY_")
        env = {k: v for k, v in os.environ.items() if not k.startswith(keep)}
        env.update(
            identity.env(),
            PYTHONPATH=str(trust),
            SSL_CERT_FILE=str(emu.ca_cert),
            REQUESTS_CA_BUNDLE=str(emu.ca_cert),
            SERVICEBUS_CONNECTION_STR=emu.connection_string,
            SERVICEBUS_SAS_POLICY="RootManageSharedAccessKey",
            SERVICEBUS_SAS_KEY="SAS_KEY_VALUE",  # the root policy (servicebus/access.py)
            # what follows the namespace's name in its host (".servicebus.windows.net" on Azure): the tests check
            # forwarding URLs with it, and the namespace 127.a.b.c is "127" in ".a.b.c"
            SERVICEBUS_ENDPOINT_SUFFIX=host[host.index(".") :],
        )
        if arm:
            (trust / "sitecustomize.py").write_text(_RESOLVER.format(suffix=emu.namespace_suffix, address=host))
            env.update(
                SERVICEBUS_RESOURCE_MANAGER_URL=emu.arm_url,
                SERVICEBUS_ENDPOINT_SUFFIX=emu.namespace_suffix,
                AZURE_SUBSCRIPTION_ID="00000000-0000-0000-0000-000000000000",
                # what Microsoft's pipelines set: the preparer then creates namespaces with local (SAS) auth on
                AZURESUBSCRIPTION_SERVICE_CONNECTION_ID="gcw-emulator",
            )
        return cls(emu, host, identity, env)

    def stop(self) -> None:
        self.identity.stop()
        self.emulator.stop()
