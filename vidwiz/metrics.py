"""Prometheus series of every process of the tree, and the multiprocess plumbing.

This module depends on prometheus-client only, so the actors and the supervisor can count
without loading the web layer; the request middleware, the scrape-time database counts and
`GET /metrics` are vidwiz/system/metrics.py.

Multiprocess: the supervisor gives every child PROMETHEUS_MULTIPROC_DIR (a fresh directory
under DATA_DIR); each process writes its samples to its own files there and `/metrics` in
any web process sums them all. prometheus_client picks that storage when a series is
created, so the variable must be set before this module is imported: children have it from
their start, and the supervisor sets it before it imports this module. Without it (tests, a
lone web process) each process serves its own default registry.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from vidwiz.constants import METRICS_ENV

# Long polls and SSE streams last up to a minute: the top buckets keep them apart from +Inf.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

REQUESTS = Counter("vidwiz_http_requests", "HTTP requests answered", ["method", "route", "status"])
REQUEST_SECONDS = Histogram(
    "vidwiz_http_request_duration_seconds",
    "Time to answer an HTTP request (SSE: the whole stream)",
    ["method", "route", "status"],
    buckets=LATENCY_BUCKETS,
)
SSE_STREAMS = Gauge(
    "vidwiz_sse_streams_open", "Open SSE streams (readiness and Wiz chat)", ["route"], multiprocess_mode="livesum"
)
POLLERS_WAITING = Gauge(
    "vidwiz_task_pollers_waiting",
    "Workers waiting in a /v2/internal/tasks long poll",
    ["task_type"],
    multiprocess_mode="livesum",
)
ACTOR_JOBS = Counter("vidwiz_actor_jobs", "Actor job runs by outcome", ["function", "outcome"])
QUOTA_REFUSALS = Counter("vidwiz_wiz_quota_refusals", "Wiz messages refused by the daily quota", ["viewer"])
THROTTLE_REFUSALS = Counter("vidwiz_auth_throttle_refusals", "Auth attempts refused by throttling", ["scope"])
SUPERVISOR_RESTARTS = Counter("vidwiz_supervisor_restarts", "Children restarted by the supervisor", ["child"])

# Label values known in advance, so each series exists at zero from its process's start
# (absent() alerts and rate() need the series before its first event). The label values
# vidwiz/conversations/quota.py and vidwiz/auth/throttle.py count under:
QUOTA_VIEWERS = ("user", "guest")
THROTTLE_SCOPES = ("login", "register", "google")
JOB_OUTCOMES = ("success", "failure", "retry", "cancelled")


def create_series(metric: Counter | Gauge, *label_sets: Iterable[str]) -> None:
    """Create the series of every combination of these label values (at zero)."""
    for labels in itertools.product(*label_sets):
        metric.labels(*labels)


def zero_web_series(sse_routes: Iterable[str], task_types: Iterable[str]) -> None:
    """At a web process's start: its labelled series (HTTP requests excepted: routes times
    statuses is unbounded, and they appear with the first request)."""
    create_series(SSE_STREAMS, sse_routes)
    create_series(POLLERS_WAITING, task_types)
    create_series(QUOTA_REFUSALS, QUOTA_VIEWERS)
    create_series(THROTTLE_REFUSALS, THROTTLE_SCOPES)


def zero_actor_series(function_names: Iterable[str]) -> None:
    """At an actor worker's start: every job function × outcome."""
    create_series(ACTOR_JOBS, function_names, JOB_OUTCOMES)


def zero_supervisor_series(children: Iterable[str]) -> None:
    """At the supervisor's start: restarts of each child it may restart."""
    create_series(SUPERVISOR_RESTARTS, children)


def multiprocess_dir() -> str | None:
    return os.environ.get(METRICS_ENV) or None


def mark_process_dead(pid: int) -> None:
    """A child has exited: drop its live gauges (its counters keep counting in the sums)."""
    if multiprocess_dir():
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]  # unannotated in prometheus_client


class _Families(Collector):
    """Metric families computed before the scrape (e.g. counts read from the database)."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self._families


def exposition(extra_families: Iterable[Metric] = ()) -> bytes:
    """The text exposition of every process's series (summed in multiprocess mode) plus
    `extra_families`. Sync (file reads in multiprocess mode): run it off the event loop."""
    directory = multiprocess_dir()
    if directory:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]  # unannotated
    else:
        registry = REGISTRY
    extra = CollectorRegistry()
    extra.register(_Families(extra_families))
    return generate_latest(registry) + generate_latest(extra)
