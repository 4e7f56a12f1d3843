"""Telemetry built on pypgflow's lifecycle events (:mod:`pypgflow.events`), each part optional
and off until turned on:

- :mod:`pypgflow.telemetry.otel`: OpenTelemetry traces (``pip install pypgflow[otel]``);
  ``otel.instrument(app)``.
- :mod:`pypgflow.telemetry.prometheus`: Prometheus metrics (``pypgflow[prometheus]``);
  ``prometheus.register(app, registry)``, ``prometheus.serve(app, port)`` or
  ``pypgflow worker --metrics-port``.
- :mod:`pypgflow.telemetry.logs`: :class:`~pypgflow.telemetry.logs.JsonFormatter`, one JSON
  object per log line (``pypgflow worker --log-format json``).

Nothing here is imported by the rest of pypgflow: an app that does not ask for telemetry
never loads it. See docs/telemetry.md.
"""
