"""TLS on the bus with certificates the test makes (a throwaway CA): the embedded server serves TLS,
clients verify it against the CA, and with ``verify_clients`` only clients with a certificate signed by
the CA get in (mutual TLS). Authentication and permissions stay on underneath."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bus.connect import connect
from bus.errors import ConnectError
from bus.server import EmbeddedNats
from schemas.config.bus import BusCfg, NatsAuthCfg, NatsTlsCfg
from tests.support.tls import ThrowawayCA, make_ca


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> ThrowawayCA:
    return make_ca(tmp_path_factory.mktemp("ca"))


def server_tls(ca: ThrowawayCA, *, verify_clients: bool) -> NatsTlsCfg:
    return NatsTlsCfg(
        enabled=True,
        ca_file=str(ca.ca_file),
        server_cert_file=str(ca.cert_file),
        server_key_file=str(ca.key_file),
        verify_clients=verify_clients,
    )


@pytest.fixture(params=[False, True], ids=["tls", "mutual-tls"])
def tls_server(request: pytest.FixtureRequest, tmp_path: Path, ca: ThrowawayCA) -> Iterator[EmbeddedNats]:
    server = EmbeddedNats(
        store_dir=tmp_path / "nats", auth_dir=tmp_path / "auth", tls=server_tls(ca, verify_clients=request.param)
    )
    server.start()
    yield server
    server.stop()


def bus_for(server: EmbeddedNats, tls: NatsTlsCfg) -> BusCfg:
    assert server.auth is not None
    return BusCfg(servers=[server.url], auth=NatsAuthCfg(credentials_dir=str(server.auth.path)), tls=tls)


async def test_a_client_that_trusts_the_ca_connects_over_tls(tls_server: EmbeddedNats, ca: ThrowawayCA) -> None:
    assert tls_server.url.startswith("tls://")
    tls = NatsTlsCfg(enabled=True, ca_file=str(ca.ca_file), cert_file=str(ca.client_cert_file),
                     key_file=str(ca.client_key_file))  # fmt: skip
    nc = await connect(bus_for(tls_server, tls), name="tls-test", role="router", wait=5)
    try:
        assert nc.is_connected
        await nc.flush(timeout=2)  # a round trip over the TLS connection
    finally:
        await nc.close()


async def test_a_client_that_does_not_trust_the_ca_is_refused(tls_server: EmbeddedNats) -> None:
    tls = NatsTlsCfg(enabled=True)  # the system CAs only: the throwaway CA is unknown to them
    assert not await connects(bus_for(tls_server, tls))


async def test_mutual_tls_refuses_a_client_without_a_certificate(tmp_path: Path, ca: ThrowawayCA) -> None:
    tls = server_tls(ca, verify_clients=True)
    server = EmbeddedNats(store_dir=tmp_path / "nats", auth_dir=tmp_path / "auth", tls=tls)
    server.start()
    try:
        bare = NatsTlsCfg(enabled=True, ca_file=str(ca.ca_file))  # trusts the server, but shows no certificate
        assert not await connects(bus_for(server, bare))
        mutual = NatsTlsCfg(enabled=True, ca_file=str(ca.ca_file), cert_file=str(ca.client_cert_file),
                            key_file=str(ca.client_key_file))  # fmt: skip
        assert await connects(bus_for(server, mutual))
    finally:
        server.stop()


async def connects(bus: BusCfg) -> bool:
    try:
        nc = await connect(bus, name="tls-test", role="router", wait=2, quiet=True)
    except ConnectError:
        return False
    await nc.close()
    return True
