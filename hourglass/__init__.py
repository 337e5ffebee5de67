"""hourglass: a Kubernetes-native job scheduler.

The core package holds what every component shares: domain types (`domain`), schedule
arithmetic (`schedules`), the PostgreSQL store (`store`), etcd leases and fencing (`locks`),
the embedded servers of `hourglass dev` (`embedded`) and the CLI (`cli`). The components
`hourglass.api`, `hourglass.workers` and `hourglass.operator` are built on it; it never
imports them.
"""

__version__ = "0.1.0"
