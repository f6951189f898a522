"""The Prometheus listener, per-request access lines, and Sentry wiring."""

from __future__ import annotations

import gzip
import http.server
import json
import logging
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import brotli
import httpx
import pytest
import trio

from conduwuit import sentry
from conduwuit.config import Config
from conduwuit.metrics import BUCKETS, RequestMetrics, escape
from tests.support.config import free_port, make_config
from tests.support.inprocess import running_server
from tests.support.process import REPO
from tests.support.users import make_user

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)'
                    r'(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})?'
                    r" (-?[0-9.e+-]+|\+Inf|-Inf|NaN)$")


def parse(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Parse the text format strictly: every line is a comment or a valid sample."""
    series: dict[str, list[tuple[dict[str, str], float]]] = {}
    assert text.endswith("\n")
    for line in text.splitlines():
        if not line or line.startswith("# HELP ") or line.startswith("# TYPE "):
            continue
        match = SAMPLE.match(line)
        assert match, f"not a valid sample line: {line!r}"
        labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"',
                                 match.group(2) or ""))
        series.setdefault(match.group(1), []).append((labels, float(match.group(3))))
    return series


def value(series: dict[str, list[tuple[dict[str, str], float]]], name: str,
          **labels: str) -> float:
    found = [v for have, v in series.get(name, []) if all(have.get(k) == x
                                                          for k, x in labels.items())]
    assert len(found) == 1, (name, labels, series.get(name))
    return found[0]


def metrics_config(tmp_path: Path, **options: Any) -> Config:
    return make_config(tmp_path, allow_metrics=True, metrics_port=free_port(), **options)


async def test_metrics_are_absent_by_default(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    assert not config.allow_metrics
    async with running_server(config) as server:
        assert server.metrics_bound == []
        async with httpx.AsyncClient() as http:
            r = await http.get(server.bound[0] + "/metrics")
            assert r.status_code == 404 and r.json()["errcode"] == "M_UNRECOGNIZED"
            with pytest.raises(httpx.ConnectError):
                await http.get(f"http://127.0.0.1:{config.metrics_port}/metrics")


async def test_metrics_listener_serves_the_named_series(tmp_path: Path) -> None:
    config = metrics_config(tmp_path)
    async with running_server(config) as server:
        assert server.metrics_bound == [f"http://127.0.0.1:{config.metrics_port}"]
        user = await make_user(server, "alice")
        async with httpx.AsyncClient(base_url=server.bound[0]) as http, trio.open_nursery() as n:
            # The main listener never serves /metrics.
            assert (await http.get("/metrics")).status_code == 404
            for _ in range(3):
                assert (await http.get("/_matrix/client/versions")).status_code == 200
            await http.get("/_matrix/client/v3/register/available?username=bob")
            await http.get("/_matrix/client/v3/profile/@alice:test.local/displayname")
            await http.get("/_matrix/client/v3/profile/@nobody:test.local/displayname")
            await http.get("/no/such/path/abc123")
            # A long-polling sync is one waiter.
            r = await http.get("/_matrix/client/v3/sync", headers=user.headers)
            since = r.json()["next_batch"]

            async def long_poll() -> None:
                await http.get("/_matrix/client/v3/sync", headers=user.headers,
                               params={"since": since, "timeout": "30000"}, timeout=40)

            n.start_soon(long_poll)
            await trio.sleep(0.3)
            scrape = await http.get(server.metrics_bound[0] + "/metrics")
            assert server.services is not None
            server.services.notifier.wake_all()
        assert scrape.status_code == 200
        assert scrape.headers["content-type"].startswith("text/plain; version=0.0.4")
        series = parse(scrape.text)

    requests = "conduwuit_http_requests_total"
    assert value(series, requests, method="GET", route="/_matrix/client/versions",
                 status="200") == 3
    # Route templates, not raw paths: two users, one series per status.
    profile_routes = {labels["route"] for labels, _ in series[requests]
                      if "profile" in labels["route"]}
    assert len(profile_routes) == 1, profile_routes
    assert "alice" not in scrape.text and "abc123" not in scrape.text
    # /metrics asked of the main listener and /no/such/path share one label.
    assert value(series, requests, method="GET", route="unmatched", status="404") == 2
    # Histograms: cumulative buckets ending at +Inf == count.
    name = "conduwuit_http_request_duration_seconds"
    base = {"method": "GET", "route": "/_matrix/client/versions"}
    buckets = [v for labels, v in series[name + "_bucket"]
               if labels.items() >= base.items()]
    assert len(buckets) == len(BUCKETS) + 1
    assert buckets == sorted(buckets) and buckets[-1] == 3
    assert value(series, name + "_count", **base) == 3
    assert value(series, name + "_sum", **base) >= 0
    assert value(series, "conduwuit_sync_waiters") == 1
    assert value(series, "conduwuit_job_state", job="typing/expiry", state="running") == 1
    assert value(series, "conduwuit_job_restarts_total", job="typing/expiry") == 0
    assert value(series, "conduwuit_federation_queued_items") == 0
    assert value(series, "conduwuit_federation_destinations", state="queued") == 0
    trees = {labels["tree"] for labels, _ in series["conduwuit_store_tree_bytes"]}
    assert {"userid_password", "global"} <= trees
    assert value(series, "conduwuit_store_disk_bytes") > 0
    assert value(series, "conduwuit_build_info", version=server.services.diagnostics.version) == 1


async def test_metrics_listener_answers_only_metrics(tmp_path: Path) -> None:
    async with running_server(metrics_config(tmp_path)) as server, httpx.AsyncClient() as http:
        base = server.metrics_bound[0]
        assert (await http.get(base + "/_matrix/client/versions")).status_code == 404
        assert (await http.post(base + "/metrics")).status_code == 405
        head = await http.head(base + "/metrics")
        assert head.status_code == 200 and head.content == b""


async def test_metrics_port_in_use_is_a_startup_refusal(tmp_path: Path) -> None:
    from conduwuit.server import Server, StartupError
    from conduwuit.systemd import Notifier

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with running_server(metrics_config(tmp_path / "a")) as first:
        taken = first.config.metrics_port
        config = make_config(tmp_path / "b", allow_metrics=True, metrics_port=taken)
        with pytest.raises(StartupError, match=r"cannot listen for metrics on 127\.0\.0\.1:"):
            await Server(config, notifier=Notifier({})).run()


def test_label_values_are_escaped() -> None:
    metrics = RequestMetrics()
    metrics.observe("GET", 'a"b\\c\nd', 200, 0.002)
    text = "\n".join(metrics.render()) + "\n"
    assert escape('a"b\\c\nd') in text
    parse(text)


async def test_every_request_gets_an_access_line_with_id_and_latency(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with running_server(make_config(tmp_path)) as server, httpx.AsyncClient() as http:
        with caplog.at_level(logging.DEBUG, logger="conduwuit.access"):
            await http.get(server.bound[0] + "/_matrix/client/versions")
            await http.options(server.bound[0] + "/_matrix/client/versions")
    lines = [r.getMessage() for r in caplog.records if r.name == "conduwuit.access"]
    assert re.fullmatch(r"request [0-9a-f]{6}-\d+ GET /_matrix/client/versions -> 200 in "
                        r"\d+\.\d ms", lines[0]), lines
    assert "OPTIONS /_matrix/client/versions -> 204" in lines[1]


# --- Sentry ------------------------------------------------------------------------------


def test_sentry_options_follow_the_config(tmp_path: Path) -> None:
    config = make_config(tmp_path, sentry=True, sentry_endpoint="https://k@sentry.example/1",
                         sentry_traces_sample_rate=0.5, sentry_attach_stacktrace=True)
    options = sentry.options(config)
    assert options["dsn"] == "https://k@sentry.example/1"
    assert options["traces_sample_rate"] == 0.5 and options["attach_stacktrace"]
    assert options["server_name"] == "" and not options["send_default_pii"]
    named = make_config(tmp_path, sentry=True, sentry_send_server_name=True)
    assert sentry.options(named)["server_name"] == "test.local"


def test_sentry_is_off_by_default_and_warns_when_it_cannot_start(
        tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert not sentry.init(make_config(tmp_path))
    with caplog.at_level(logging.WARNING, logger="conduwuit.sentry"):
        assert not sentry.init(make_config(tmp_path, sentry=True))
        assert "sentry_endpoint is not set" in caplog.text
        monkeypatch.setitem(sys.modules, "sentry_sdk", None)  # as if not installed
        config = make_config(tmp_path, sentry=True, sentry_endpoint="http://k@127.0.0.1:9/1")
        assert not sentry.init(config)
        assert "sentry-sdk package is not installed" in caplog.text
    assert not sentry.active()


class _Collector(http.server.BaseHTTPRequestHandler):
    received: list[bytes] = []  # noqa: RUF012 (one class per test, see the fixture)

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length)
        encoding = self.headers.get("content-encoding")
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "br":
            body = brotli.decompress(body)
        type(self).received.append(body)
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def sentry_server() -> Iterator[tuple[str, list[bytes]]]:
    handler = type("Collector", (_Collector,), {"received": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://publickey@127.0.0.1:{server.server_address[1]}/42", handler.received
    finally:
        server.shutdown()
        server.server_close()


_REPORTER = """
import logging, sys
from conduwuit import sentry
from conduwuit.config import load_config
from conduwuit.log import log_control
config = load_config(sys.argv[1], env={}).config
log_control.install("info")
assert sentry.init(config)
logging.getLogger("conduwuit.services.test").error("something broke: %s", "disk on fire")
sentry.close()
"""


def test_sentry_reports_an_error_log_line_to_the_dsn(
        tmp_path: Path, sentry_server: tuple[str, list[bytes]]) -> None:
    pytest.importorskip("sentry_sdk")
    dsn, received = sentry_server
    from tests.support.config import write_config

    path = write_config(tmp_path, sentry=True, sentry_endpoint=dsn, sentry_send_server_name=True)
    # Its own process: the SDK patches logging and sys.excepthook process-wide.
    done = subprocess.run([sys.executable, "-c", _REPORTER, str(path)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    events = []
    for envelope in received:
        for line in envelope.split(b"\n"):
            if line.startswith(b"{") and (b'"message"' in line or b'"logentry"' in line):
                events.append(json.loads(line))
    assert events, received
    event = events[0]
    assert "disk on fire" in json.dumps(event)
    assert event["level"] == "error"
    assert event["server_name"] == "test.local"
    assert event["release"].startswith("conduwuit@")
