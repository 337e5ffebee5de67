"""The components that turn due jobs into finished runs.

`producer` queues a run for every due fire; `worker` claims queued runs, holds each under an
etcd lease and executes it through an executor; `claimer` takes back runs whose holder died.
"""
