"""``/metrics`` in Prometheus text, from the same OpenTelemetry instruments that OTLP exports.

Why OpenTelemetry's Prometheus exporter rather than ``prometheus_client`` instruments: every
metric of the connector is an OpenTelemetry instrument already (eBay calls, refreshes, HTTP
durations, lag), and OTLP export must stay available. A second metric reader on the same meter
provider serves both from one set of instruments, with the names and units of the OpenTelemetry
to Prometheus compatibility rules (``ebay.call.duration`` in ``s`` becomes
``ebay_call_duration_seconds``, counters get ``_total``). ``prometheus_client`` is still what
renders the text: the exporter hands it its metric families, in a registry private to this
process's telemetry (tests run many in one interpreter).
"""

from __future__ import annotations

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

# The classic text format every Prometheus (2.x and 3.x) and agent reads.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4


class PrometheusExposition:
    """A metric reader whose collection is rendered on demand as Prometheus text."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        # No scope labels (otel_scope_name ...) on every series: they add nothing to a query.
        self.reader = PrometheusMetricReader(registry=self.registry, scope_info_enabled=False)

    def render(self) -> bytes:
        """The current value of every instrument (observable callbacks run now)."""
        return generate_latest(self.registry)
