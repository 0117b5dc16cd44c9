"""The inter-core channel's trust: a per-run CA, one certificate per core, mutual TLS 1.3 contexts.

spec: inter-sno-mobility §4.2: "secure connectivity is established between
the core networks of different SNOs over the terrestrial Internet". This
kernel has no IPsec or WireGuard, so the signalling channel is TLS 1.3 with
client certificates: each core proves its name (the certificate's common
name and DNS SAN) and accepts only peers whose certificate the run's CA
signed. The CA key is made for one run and written beside its certificate
in the run directory (mode 0600); nothing is reused across runs.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "leo-emu run"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(path: Path, key) -> None:
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


def mint(directory: Path, cores: dict[str, str], days: int = 7) -> dict[str, dict[str, str]]:
    """A fresh CA and a certificate per core (name -> its public IPv4 address); returns the paths per core."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    until = now + dt.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(f"leo-emu run CA {directory.parent.name}")
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now).not_valid_after(until)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    ca_path = directory / "ca.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    _write_key(directory / "ca.key", ca_key)
    out = {}
    for name, addr in cores.items():
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(ca_name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now).not_valid_after(until)
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(name),
                                                            x509.IPAddress(ipaddress.IPv4Address(addr))]),
                               critical=False)
                .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH,
                                                      x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .sign(ca_key, hashes.SHA256()))
        cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key_path, key)
        out[name] = {"ca": str(ca_path), "cert": str(cert_path), "key": str(key_path)}
    return out


def _context(purpose, pki: dict[str, str]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(purpose, cafile=pki["ca"])
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(pki["cert"], pki["key"])
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def server_context(pki: dict[str, str]) -> ssl.SSLContext:
    """Accepts only clients with a certificate from this run's CA."""
    return _context(ssl.Purpose.CLIENT_AUTH, pki)


def client_context(pki: dict[str, str]) -> ssl.SSLContext:
    """Checks the server's certificate and name (``server_hostname`` = the peer core's name)."""
    ctx = _context(ssl.Purpose.SERVER_AUTH, pki)
    ctx.check_hostname = True
    return ctx


def peer_name(ssl_object) -> str | None:
    """The common name of the certificate the other end presented (already verified by the handshake)."""
    cert = ssl_object.getpeercert() if ssl_object is not None else None
    if not cert:
        return None
    for rdn in cert.get("subject", ()):
        for k, v in rdn:
            if k == "commonName":
                return v
    return None
