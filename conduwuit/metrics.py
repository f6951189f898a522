"""Prometheus metrics: request counters and latency histograms, plus gauges read at scrape.

The text exposition format (version 0.0.4) is a few lines per series, so it is
written here rather than pulled in with ``prometheus-client``: that library
keeps process-global registries (two servers in one test process would share
them), wants collector classes for values computed at scrape time, and brings
locks for threads we do not use. Everything here runs on the event loop.

Cardinality stays bounded: requests are labelled with the route *template*
(``/_matrix/client/v3/rooms/<room_id>/send/<event_type>/<txn_id>``), never the
raw path, and unmatched paths share one label; federation destinations are
summed, not listed; trees are the fixed list of ``store/trees.py``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import attrs

from conduwuit import __version__

if TYPE_CHECKING:
    from conduwuit.server import Server

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Seconds; /sync long-polls land in the last buckets, media and joins in the middle.
BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                              30.0, 60.0)

UNMATCHED = "unmatched"


def escape(value: str) -> str:
    """A label value as the text format wants it."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def labels(pairs: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f'{name}="{escape(value)}"' for name, value in pairs)
    return "{" + inner + "}" if inner else ""


def number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


@attrs.define
class _Histogram:
    counts: list[int] = attrs.field(factory=lambda: [0] * len(BUCKETS))
    total: int = 0
    sum: float = 0.0

    def observe(self, seconds: float) -> None:
        for i, bound in enumerate(BUCKETS):
            if seconds <= bound:
                self.counts[i] += 1
                break
        self.total += 1
        self.sum += seconds


@attrs.define
class RequestMetrics:
    """Counts and latencies of answered requests, per method, route template and status."""

    requests: dict[tuple[str, str, str], int] = attrs.field(factory=dict)
    latency: dict[tuple[str, str], _Histogram] = attrs.field(factory=dict)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, str(status))
        self.requests[key] = self.requests.get(key, 0) + 1
        histogram = self.latency.get((method, route))
        if histogram is None:
            histogram = self.latency[(method, route)] = _Histogram()
        histogram.observe(seconds)

    def render(self) -> Iterator[str]:
        yield "# HELP conduwuit_http_requests_total HTTP requests answered, by route template."
        yield "# TYPE conduwuit_http_requests_total counter"
        for (method, route, status), count in sorted(self.requests.items()):
            pairs = (("method", method), ("route", route), ("status", status))
            yield f"conduwuit_http_requests_total{labels(pairs)} {count}"
        name = "conduwuit_http_request_duration_seconds"
        yield f"# HELP {name} Time from routing to the response, by route template."
        yield f"# TYPE {name} histogram"
        for (method, route), h in sorted(self.latency.items()):
            base = (("method", method), ("route", route))
            running = 0
            for bound, count in zip(BUCKETS, h.counts, strict=True):
                running += count
                yield f"{name}_bucket{labels((*base, ('le', number(bound))))} {running}"
            yield f"{name}_bucket{labels((*base, ('le', '+Inf')))} {h.total}"
            yield f"{name}_sum{labels(base)} {number(h.sum)}"
            yield f"{name}_count{labels(base)} {h.total}"


def gauge(name: str, help_text: str, values: Iterable[tuple[Iterable[tuple[str, str]], float]],
          kind: str = "gauge") -> Iterator[str]:
    yield f"# HELP {name} {help_text}"
    yield f"# TYPE {name} {kind}"
    for pairs, value in values:
        yield f"{name}{labels(pairs)} {number(value)}"


async def render(server: Server, requests: RequestMetrics) -> str:
    """The whole scrape: request series plus what the server's parts report right now."""
    lines: list[str] = []
    lines += gauge("conduwuit_build_info", "Version of the running server.",
                   [((("version", __version__),), 1)])
    lines += gauge("conduwuit_start_time_seconds", "Unix time the server started.",
                   [((), server.started_at)])
    lines += requests.render()
    services = server.services
    if services is not None:
        lines += gauge("conduwuit_sync_waiters", "Long-polling /sync requests waiting now.",
                       [((), services.notifier.waiting)])
        lines += await _federation(server)
    lines += _jobs(server)
    lines += _store(server)
    lines.append("")
    return "\n".join(lines)


def _jobs(server: Server) -> Iterator[str]:
    statuses = server.supervisor.statuses()
    yield from gauge(
        "conduwuit_job_state", "1 for the state each background job is in now.",
        [((("job", s.full_name), ("state", s.state.value)), 1) for s in statuses])
    yield from gauge(
        "conduwuit_job_restarts_total", "Restarts of each background job after a crash.",
        [((("job", s.full_name),), s.restarts) for s in statuses], kind="counter")


async def _federation(server: Server) -> list[str]:
    assert server.services is not None
    destinations = await server.services.federation.sender.destinations()
    queued = sum(d.queued for d in destinations)
    states = {"queued": 0, "in_flight": 0, "backing_off": 0, "dormant": 0}
    for d in destinations:
        if d.queued:
            states["queued"] += 1
        if d.in_flight:
            states["in_flight"] += 1
        if d.retry_in > 0:
            states["backing_off"] += 1
        if d.dormant:
            states["dormant"] += 1
    lines = list(gauge("conduwuit_federation_queued_items",
                       "PDUs and EDUs waiting in the outbound federation queues.",
                       [((), queued)]))
    lines += gauge("conduwuit_federation_destinations",
                   "Outbound federation destinations, by what they are doing.",
                   [((("state", state),), count) for state, count in sorted(states.items())])
    return lines


def _store(server: Server) -> Iterator[str]:
    store = server.store
    if store is None or store.closed:
        return
    stats = store.stats()
    tree_bytes = stats["tree_bytes"]
    assert isinstance(tree_bytes, dict)
    yield from gauge("conduwuit_store_tree_bytes",
                     "Approximate on-disk size of each tree (LevelDB estimate; 0 until compacted "
                     "out of the write buffer).",
                     [((("tree", name),), size) for name, size in sorted(tree_bytes.items())])
    disk = stats["disk_bytes"]
    memory = stats["memory_bytes"]
    assert isinstance(disk, int) and isinstance(memory, int)
    yield from gauge("conduwuit_store_disk_bytes", "Size of the database directory's files.",
                     [((), disk)])
    yield from gauge("conduwuit_store_memory_bytes", "LevelDB's estimate of its memory use.",
                     [((), memory)])


