//! Parsers for the Prometheus text exposition format and OpenMetrics text.
