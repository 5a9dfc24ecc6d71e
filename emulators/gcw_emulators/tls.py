"""Self-signed TLS for the local emulators (Azurite, the GeoCatalog emulator): one certificate helper for all.

``self_signed_certificate`` writes a fresh certificate and key (EC P-256, valid one day) whose subject alternative
names cover the given hosts (IP addresses as IP SANs, names as DNS SANs). The certificate is its own CA
(``BasicConstraints(ca=True)``), so a client trusts it by pointing ``REQUESTS_CA_BUNDLE`` (``requests``,
azure-core), ``SSL_CERT_FILE`` (``urllib``, ``aiohttp``) or ``connection_verify`` at the PEM file.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from collections.abc import Iterable
from pathlib import Path

LOCAL_HOSTS = ("127.0.0.1", "localhost")


def _san(host: str) -> object:
    from cryptography import x509

    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def self_signed_certificate(
    directory: Path, host: str = "127.0.0.1", *, stem: str = "cert", extra_hosts: Iterable[str] = ()
) -> tuple[Path, Path]:
    """Write ``<stem>-cert.pem`` and ``<stem>-key.pem`` under ``directory`` for ``host`` (common name) plus
    ``extra_hosts`` (deduplicated SANs); returns (cert, key) paths. The key file is readable by the owner only."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    hosts = list(dict.fromkeys([host, *extra_hosts]))
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = dt.datetime.now(dt.UTC)
    sans = [_san(h) for h in hosts]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)  # type: ignore[arg-type]
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{stem}-cert.pem", directory / f"{stem}-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.touch(mode=0o600, exist_ok=True)
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def server_context(cert: Path | str, key: Path | str) -> ssl.SSLContext:
    """A TLS server context (TLS 1.2+) serving ``cert``/``key``; raises ``ssl.SSLError``/``OSError`` if unusable."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), str(key))
    return context
