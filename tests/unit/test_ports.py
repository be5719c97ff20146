"""A test profile opens no fixed port: the suite must pass while `make run` holds the defaults (the gateway's
8080, the monitor's 9464, the embedded nats-server's 4222) on the same machine."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.config import load_config
from tests.support.profile import write_profile


@pytest.mark.parametrize("base", ["local", "lab"])
def test_a_test_profile_listens_only_on_ports_the_os_picks(tmp_path: Path, base: str) -> None:
    cfg = load_config(write_profile(tmp_path / "p", "nats://127.0.0.1:1", base=base))
    assert cfg.gateway.port == 0 and cfg.monitor.metrics_port == 0
    assert not cfg.bus.embedded.enabled  # the test's own nats-server (port -1) instead


def test_a_test_may_still_name_its_port(tmp_path: Path) -> None:
    cfg = load_config(write_profile(tmp_path / "p", "nats://127.0.0.1:1", overrides={"gateway": {"port": 18123}}))
    assert cfg.gateway.port == 18123 and cfg.monitor.metrics_port == 0
