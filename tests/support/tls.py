"""A throwaway certificate authority and a server certificate for 127.0.0.1, made with the openssl
command, for tests of TLS paths (STARTTLS to the SMTP receiver)."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class ThrowawayCA:
    ca_file: Path  # the CA certificate a client trusts
    cert_file: Path  # the server's certificate (CN and SAN 127.0.0.1), signed by the CA
    key_file: Path
    client_cert_file: Path  # a client's certificate (CN "orchestra test client"), signed by the CA: mutual TLS
    client_key_file: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx


def make_ca(where: Path) -> ThrowawayCA:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    where.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=where, check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=orchestra test CA")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (where / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "2", "-extfile", "san.ext")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "client.key", "-out", "client.csr",
        "-subj", "/CN=orchestra test client")  # fmt: skip
    (where / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    run("x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "client.pem", "-days", "2", "-extfile", "client.ext")  # fmt: skip
    return ThrowawayCA(
        where / "ca.pem", where / "server.pem", where / "server.key", where / "client.pem", where / "client.key"
    )
