"""Verified TLS in lamina's client: aiohttp is imported without its CA bundle (tls.py),
so every https request must carry the client's own context. A registry on this host's
non-loopback address (loopback is insecure by docker's rule) with a trustme certificate:
trusted through SSL_CERT_FILE it works, untrusted it is refused at once."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from registry_client_support import free_port, outward_ipv4

from helpers.cli import LAMINA
from helpers.images import make_random_image
from lamina.errors import NotFound
from lamina.store.local import LocalStore


@pytest.fixture(scope="module")
def tls_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """(host:port of a TLS lamina registry, the PEM of the CA that signed its cert)."""
    import trustme

    address = outward_ipv4()
    if address is None:
        pytest.skip("no non-loopback IPv4 address to serve verified TLS on")
    tmp = tmp_path_factory.mktemp("tls-registry")
    ca = trustme.CA()
    cert = ca.issue_cert(address)
    cert.cert_chain_pems[0].write_to_path(str(tmp / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp / "key.pem"))
    ca.cert_pem.write_to_path(str(tmp / "ca.pem"))
    host = f"{address}:{free_port()}"
    log = open(tmp / "server.log", "wb")  # noqa: SIM115 - closed once the server has it
    proc = subprocess.Popen(
        [
            *LAMINA,
            *("registry", "serve", "--addr", host, "--storage", str(tmp / "storage")),
            *("--tls-cert", str(tmp / "cert.pem"), "--tls-key", str(tmp / "key.pem")),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()  # the server writes to its own copy of the descriptor
    context = ssl.create_default_context(cafile=str(tmp / "ca.pem"))
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"https://{host}/v2/", timeout=1, context=context).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((tmp / "server.log").read_text()[-2000:]) from None
            time.sleep(0.05)
    yield host, tmp / "ca.pem"
    proc.terminate()
    proc.wait(timeout=10)


def _lamina(root: Path, *args: str, ca: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REGISTRY_AUTH_FILE": str(root.parent / "auth.json")}
    if ca is not None:
        env["SSL_CERT_FILE"] = str(ca)
    return subprocess.run(
        [*LAMINA, "--root", str(root), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_trusted_certificate_push_and_pull(tmp_path: Path, tls_registry: tuple[str, Path]) -> None:
    host, ca = tls_registry
    src = tmp_path / "src"
    make_random_image(LocalStore(src), "docker.io/library/tls:1", seed=61, layers=2)
    pushed = _lamina(src, "push", "tls:1", f"{host}/tls/app:1", "--json", ca=ca)
    assert pushed.returncode == 0, pushed.stderr
    assert json.loads(pushed.stdout)["uploaded"] == 3
    pulled = _lamina(tmp_path / "fresh", "pull", f"{host}/tls/app:1", "--json", ca=ca)
    assert pulled.returncode == 0, pulled.stderr
    assert json.loads(pulled.stdout)["digest"] == json.loads(pushed.stdout)["digest"]


def test_untrusted_certificate_is_refused_without_retries(
    tmp_path: Path, tls_registry: tuple[str, Path]
) -> None:
    host, _ = tls_registry
    started = time.monotonic()
    out = _lamina(tmp_path / "fresh", "pull", f"{host}/tls/app:1")  # the system CAs only
    assert out.returncode != 0
    assert "certificate" in out.stderr and "does not trust" in out.stderr, out.stderr
    assert time.monotonic() - started < 20  # not five backed-off retries of a TLS refusal
    with pytest.raises(NotFound):
        LocalStore(tmp_path / "fresh").get_ref(f"{host}/tls/app:1")


def test_aiohttp_defaults_hold_no_ca_and_the_environment_is_restored(tmp_path: Path) -> None:
    script = (
        "import os, sys\n"
        "import lamina.registry.client.remote, lamina.image.transfer.pull\n"
        "print('aiohttp' in sys.modules)\n"  # a pull from plain HTTP needs none of it
        "import lamina.http.tls as tls, aiohttp.connector as c\n"
        "print(c._SSL_CONTEXT_VERIFIED.cert_store_stats()['x509_ca'],"
        " os.environ.get('SSL_CERT_FILE'), os.environ.get('SSL_CERT_DIR', '-'),"
        " tls.verified_context().cert_store_stats()['x509_ca'] > 0)\n"
    )
    env = {**os.environ, "SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt"}
    env.pop("SSL_CERT_DIR", None)
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.split() == ["False", "0", "/etc/ssl/certs/ca-certificates.crt", "-", "True"]
