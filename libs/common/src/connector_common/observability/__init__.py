"""What operators see beyond traces: the Prometheus endpoint, database spans and pool gauges,
and the collector of queue and account signals (JetStream, DLQ, outbox, breakers, statuses)."""
