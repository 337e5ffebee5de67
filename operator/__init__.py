"""The Kubernetes operator (kopf): `ScheduledJob` custom resources reconciled through the gRPC
API. Imported as `hourglass.operator`, since a top-level `operator` would be shadowed by the
standard library's module of that name. Its handlers arrive with the Kubernetes work."""
