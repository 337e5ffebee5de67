"""The bounds a job's spec must keep, in one place: the API enforces them
(hourglass.api.validation, hourglass.schedules) and the ScheduledJob CRD's rules are generated
from them (hourglass.operator.sj_crd), so `kubectl apply` and the API can never disagree."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

MAX_ATTEMPTS = 100
# An attempt is killed after at most this long.
MAX_TIMEOUT = timedelta(days=7)
# The delay before the first retry.
MAX_BACKOFF = timedelta(hours=1)
# An interval schedule's period, and a one-shot `after` delay.
MIN_INTERVAL = timedelta(milliseconds=100)
MAX_INTERVAL = timedelta(days=3650)
MAX_AFTER = timedelta(days=3650)
# Instants a spec may name: from the Unix epoch to the year 9000. Later ones leave no room for
# the date arithmetic of fire times (Python's datetime ends with the year 9999).
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)
# google.protobuf.Duration's own range: about 10,000 years either way.
MAX_DURATION_SECONDS = 315_576_000_000
