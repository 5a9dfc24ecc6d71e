"""TLS certificates for the local emulators: the one module that makes them.

Two kinds, for two lifetimes:

- ``self_signed_certificate`` (Azurite, the GeoCatalog emulator: one run) writes a fresh certificate and key
  (EC P-256, valid one day) whose subject alternative names cover the given hosts (IP addresses as IP SANs, names
  as DNS SANs). The certificate is its own CA (``BasicConstraints(ca=True)``), so a client trusts it by pointing
  ``REQUESTS_CA_BUNDLE`` (``requests``, azure-core), ``SSL_CERT_FILE`` (``urllib``, ``aiohttp``) or
  ``connection_verify`` at the PEM file.
- ``ensure_certificates`` (the Service Bus emulator's management HTTPS and AMQPS ports, which may keep a data
  directory across restarts) writes a local CA (``ca.pem``: what a client trusts) and a server certificate signed
  by it, valid for ``localhost``, ``127.0.0.1``, ``::1`` and the given hosts; files that exist and still cover
  those hosts are reused, so a client that trusted ``ca.pem`` once keeps working across restarts.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOCAL_HOSTS = ("127.0.0.1", "localhost")
DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")  # what the local CA's server certificate always covers
CA_VALIDITY = dt.timedelta(days=825)


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    """The private key as PKCS#8 PEM, readable by the owner only (the mode is set before the bytes are written)."""
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


def self_signed_certificate(
    directory: Path, host: str = "127.0.0.1", *, stem: str = "cert", extra_hosts: Iterable[str] = ()
) -> tuple[Path, Path]:
    """Write ``<stem>-cert.pem`` and ``<stem>-key.pem`` under ``directory`` for ``host`` (common name) plus
    ``extra_hosts`` (deduplicated SANs); returns (cert, key) paths. The key file is readable by the owner only."""
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
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{stem}-cert.pem", directory / f"{stem}-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key_path, key)
    return cert_path, key_path


def server_context(cert: Path | str, key: Path | str) -> ssl.SSLContext:
    """A TLS server context (TLS 1.2+) serving ``cert``/``key``; raises ``ssl.SSLError``/``OSError`` if unusable."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), str(key))
    return context


@dataclass(frozen=True)
class Certificates:
    """``ca``: what clients trust; ``cert`` / ``key``: what the server serves."""

    ca: Path
    cert: Path
    key: Path


def ensure_certificates(directory: str | Path, hosts: tuple[str, ...] = ()) -> Certificates:
    """The local CA and server certificate under ``directory`` for ``hosts`` (reused while they cover them)."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    paths = Certificates(folder / "ca.pem", folder / "server.pem", folder / "server-key.pem")
    wanted = tuple(dict.fromkeys(DEFAULT_HOSTS + tuple(h for h in hosts if h)))
    if all(p.exists() for p in (paths.ca, paths.cert, paths.key)) and _covers(paths.cert, wanted):
        return paths
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "geocatalog-worker emulator local CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names = [_san(host) for host in wanted]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, wanted[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(paths.key, key)
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    return paths


def _covers(cert_file: Path, hosts: tuple[str, ...]) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    present = {str(n) for n in san.get_values_for_type(x509.DNSName)}
    present |= {str(n) for n in san.get_values_for_type(x509.IPAddress)}
    fresh = cert.not_valid_after_utc > dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    return fresh and all(str(ipaddress.ip_address(h)) in present if _is_ip(h) else h in present for h in hosts)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
