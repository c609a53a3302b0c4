"""Fixture trees built from compact specs, and a local TLS server with a generated certificate."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import socket
import ssl
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

# A spec maps an absolute in-tree path to: text (a 0644 file), ("file", text, mode), ("dir", mode),
# ("link", target), ("fifo",), or None (remove it).
Spec = dict[str, object]


def build_tree(root: Path, spec: Spec) -> Path:
    """Create (or modify) a tree under `root` from a spec; parents are created 0755."""
    for path, value in spec.items():
        real = root / path.lstrip("/")
        if value is None:
            if real.is_symlink() or real.is_file():
                real.unlink()
            elif real.is_dir():
                shutil.rmtree(real)
            continue
        real.parent.mkdir(parents=True, exist_ok=True)
        if real.is_symlink() or real.is_file():
            real.unlink()
        if isinstance(value, str):
            value = ("file", value, 0o644)
        kind = value[0]
        if kind == "file":
            real.write_text(value[1])
            os.chmod(real, value[2])
        elif kind == "dir":
            real.mkdir(exist_ok=True)
            os.chmod(real, value[1])
        elif kind == "link":
            os.symlink(value[1], real)
        elif kind == "fifo":
            os.mkfifo(real)
        else:  # pragma: no cover - a typo in a spec
            raise ValueError(f"bad spec entry {path}: {value!r}")
    return root


@pytest.fixture
def make_tree(tmp_path: Path):
    """make_tree(spec, *overrides) -> a fresh tree directory."""
    counter = iter(range(10_000))

    def make(spec: Spec, *overrides: Spec) -> Path:
        root = tmp_path / f"tree{next(counter)}"
        root.mkdir()
        build_tree(root, spec)
        for extra in overrides:
            build_tree(root, extra)
        return root

    return make


def make_cert(directory: Path, days: int) -> tuple[Path, Path]:
    """A self-signed EC certificate for 127.0.0.1, valid from yesterday for `days` more days."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=days)).sign(key, hashes.SHA256()))
    cert_path, key_path = directory / f"cert{days}.pem", directory / f"key{days}.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class TLSServer:
    """A TLS server on 127.0.0.1:<random port> that completes handshakes until stopped."""

    def __init__(self, directory: Path, days: int = 365, min_version: str = "TLSv1_2") -> None:
        cert, key = make_cert(directory, days)
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            if min_version != "TLSv1_2":
                self.ctx.set_ciphers("ALL:@SECLEVEL=0")
            self.ctx.minimum_version = getattr(ssl.TLSVersion, min_version)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.endpoint = f"127.0.0.1:{self.port}"
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            conn.settimeout(2)
            try:
                with self.ctx.wrap_socket(conn, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                conn.close()

    def stop(self) -> None:
        self._stop = True
        self.thread.join(2)
        self.sock.close()


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator:
    """tls_server(days=365, min_version="TLSv1_2") -> a running TLSServer (stopped at teardown)."""
    servers: list[TLSServer] = []

    def start(days: int = 365, min_version: str = "TLSv1_2") -> TLSServer:
        server = TLSServer(tmp_path, days, min_version)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def free_port() -> int:
    """A loopback port nothing listens on (bound and released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
