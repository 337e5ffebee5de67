"""Executors run one attempt of a run somewhere and report how it ended."""

from hourglass.workers.executors.base import AttemptContext, Executor

__all__ = ["AttemptContext", "Executor"]
