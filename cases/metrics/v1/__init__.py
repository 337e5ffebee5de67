"""Generated from protos/hourglass/metrics/v1/metrics.proto (scripts/generate-protos)."""
