"""The shipped systemd unit and container file agree with how the server behaves."""

from __future__ import annotations

import configparser
from pathlib import Path

from conduwuit.config import Config
from conduwuit.server import LAST_RESORT_MARGIN

ROOT = Path(__file__).resolve().parents[1]


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(ROOT / "packaging" / "conduwuit.service")
    return parser


def test_unit_is_type_notify_and_waits_longer_than_the_grace_period() -> None:
    service = _unit()["Service"]
    assert service["Type"] == "notify"
    assert service["ExecStart"] == "/opt/conduwuit/bin/conduwuit"
    grace = Config(server_name="example.com").client_request_timeout
    assert int(service["TimeoutStopSec"]) > grace + LAST_RESORT_MARGIN
    assert service["KillSignal"] == "SIGTERM"
    text = (ROOT / "packaging" / "conduwuit.service").read_text()
    assert 'Environment="CONDUWUIT_CONFIG=/etc/conduwuit/conduwuit.toml"' in text


def test_container_listens_beyond_loopback_and_stops_with_sigterm() -> None:
    text = (ROOT / "packaging" / "Containerfile").read_text()
    assert 'CONDUWUIT_ADDRESS="0.0.0.0"' in text
    assert "STOPSIGNAL SIGTERM" in text
    assert 'ENTRYPOINT ["conduwuit"]' in text
