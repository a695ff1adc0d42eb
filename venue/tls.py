"""TLS for the venue: the operator's certificate, or a generated self-signed pair.

Some clients cannot be told to use plain HTTP everywhere (the JS SDK 3.x builds
a `wss://` market-data URL from its data base URL whatever scheme it is
given), so the venue can speak TLS. With `tls_self_signed_dir` it makes a
throwaway CA and a server certificate for the loopback names (localhost,
127.0.0.1, ::1 and the configured host) and writes them there:

    ca.pem      the CA certificate: what a client trusts (NODE_EXTRA_CA_CERTS,
                REQUESTS_CA_BUNDLE, SSL_CERT_FILE, ssl.create_default_context(cafile=...))
    cert.pem    the server certificate
    key.pem     its private key (mode 0600)

A fresh pair is made at every start (nothing long-lived to leak). The
`cryptography` package does the X.509 work: certificates are not something
to hand-write.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from pathlib import Path

from stockade.venue.config import VenueConfig

CA_FILE, CERT_FILE, KEY_FILE = "ca.pem", "cert.pem", "key.pem"
_VALID_FOR = dt.timedelta(days=30)
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def server_ssl_context(config: VenueConfig) -> ssl.SSLContext | None:
    """The server-side TLS context the config asks for, or None for plain HTTP."""
    if config.tls_self_signed_dir is not None:
        cert, key, _ca = generate_self_signed(Path(config.tls_self_signed_dir), config.host)
    elif config.tls_cert_file is not None and config.tls_key_file is not None:
        cert, key = Path(config.tls_cert_file), Path(config.tls_key_file)
    else:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot load TLS certificate {cert} with key {key}: {exc}") from None
    return context


def generate_self_signed(out_dir: Path, host: str = "127.0.0.1") -> tuple[Path, Path, Path]:
    """Write a new CA and a server certificate for the loopback names and `host`; (cert, key, ca)."""
    try:  # imported here: only a self-signed start needs it
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError:
        raise ValueError(
            "a self-signed certificate needs the cryptography package (pip install cryptography)"
        ) from None

    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)  # tolerate a little clock skew
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stockade paper venue CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + _VALID_FOR)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for name in dict.fromkeys((*_LOOPBACK_NAMES, host)):
        if not name or name in ("0.0.0.0", "::"):
            continue
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            names.append(x509.DNSName(name))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stockade paper venue")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + _VALID_FOR)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    ca_path, cert_path, key_path = out_dir / CA_FILE, out_dir / CERT_FILE, out_dir / KEY_FILE
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fh.fileno(), 0o600)  # an existing file keeps its old mode otherwise
        fh.write(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return cert_path, key_path, ca_path
