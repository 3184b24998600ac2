"""Certificates made for a test with the `openssl` command: a CA, a server certificate for 127.0.0.1
(subjectAltName IP:127.0.0.1 and DNS:localhost), a client certificate signed by the CA, and a client
certificate signed by another CA (which the server must refuse). EC P-256 keys: quick to make."""

from __future__ import annotations

import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

DAYS = "2"
KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass(frozen=True)
class KeyPair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    ca: Path
    server: KeyPair
    client: KeyPair
    stranger: KeyPair
    """A client certificate signed by a CA the server does not trust."""


def _openssl(*args: str, cwd: Path) -> None:
    executable = shutil.which("openssl")
    assert executable is not None, "the openssl command is needed to make test certificates"
    subprocess.run([executable, *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _ca(directory: Path, name: str) -> KeyPair:
    pair = KeyPair(directory / f"{name}.pem", directory / f"{name}.key")
    _openssl(
        "req", "-x509", *KEY, "-keyout", str(pair.key), "-out", str(pair.cert), "-days", DAYS,
        "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip
    return pair


def _signed(directory: Path, name: str, ca: KeyPair, extensions: str) -> KeyPair:
    pair = KeyPair(directory / f"{name}.pem", directory / f"{name}.key")
    request = directory / f"{name}.csr"
    extension_file = directory / f"{name}.ext"
    extension_file.write_text(extensions)
    _openssl(
        "req", *KEY, "-keyout", str(pair.key), "-out", str(request), "-subj", f"/CN={name}", cwd=directory
    )
    _openssl(
        "x509", "-req", "-in", str(request), "-CA", str(ca.cert), "-CAkey", str(ca.key),
        "-set_serial", str(secrets.randbits(63)), "-days", DAYS, "-out", str(pair.cert),
        "-extfile", str(extension_file),
        cwd=directory,
    )  # fmt: skip
    return pair


def make_pki(directory: Path) -> Pki:
    """Write the certificates and keys into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = _ca(directory, "test-ca")
    other_ca = _ca(directory, "other-ca")
    server = _signed(
        directory,
        "server",
        ca,
        "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    client_extensions = "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n"
    client = _signed(directory, "client", ca, client_extensions)
    stranger = _signed(directory, "stranger", other_ca, client_extensions)
    return Pki(ca.cert, server, client, stranger)
