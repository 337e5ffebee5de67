"""hourglass end to end on a real Kubernetes API server: the gRPC API, the producer and
workers with the Kubernetes executor, on real PostgreSQL and etcd. The test plays the Job
controller by patching Job status, and watches the answers of GetJobStatus and CancelRun."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
from kubernetes import client

from hourglass.api import server as api_server
from hourglass.api.auth import Insecure
from hourglass.locks import Etcd
from hourglass.store import db
from hourglass.v1 import scheduler_pb2 as pb
from hourglass.v1 import scheduler_pb2_grpc as pb_grpc
from hourglass.workers.claimer import Claimer, ClaimerConfig
from hourglass.workers.executors.kubernetes import KubernetesConfig, KubernetesExecutor
from hourglass.workers.producer import Producer, ProducerConfig
from hourglass.workers.worker import Worker
from hourglass.workers.worker_config import WorkerConfig
from tests.k8s.conftest import finish_job


@pytest.fixture
async def stub(pool: db.Pool, database_url: str) -> AsyncIterator[pb_grpc.JobSchedulerStub]:
    server = await api_server.start(pool, "127.0.0.1:0", dsn=database_url, auth=Insecure())
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield pb_grpc.JobSchedulerStub(channel)
    await server.stop()


class Cluster:
    """Producer, claimer and named workers, each a task in this event loop."""

    def __init__(
        self, pool: db.Pool, dsn: str, etcd: Etcd, api: client.ApiClient, namespace: str
    ) -> None:
        self.pool, self.dsn, self.etcd, self.api, self.namespace = pool, dsn, etcd, api, namespace
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.workers: dict[str, Worker] = {}

    def start_worker(self, name: str) -> Worker:
        executor = KubernetesExecutor(
            KubernetesConfig(namespace=self.namespace), api_client=self.api
        )
        worker = Worker(
            pool=self.pool,
            dsn=self.dsn,
            etcd=self.etcd,
            executor=executor,
            config=WorkerConfig(lease_ttl=2, max_idle=0.2, shutdown_grace=1, worker_id=name),
        )
        self.workers[name] = worker
        self.tasks[name] = asyncio.create_task(worker.run())
        return worker

    def start(self) -> None:
        producer = Producer(pool=self.pool, dsn=self.dsn, config=ProducerConfig(max_idle=0.2))
        claimer = Claimer(
            pool=self.pool, etcd=self.etcd, config=ClaimerConfig(interval=0.2, lease_ttl=2)
        )
        self.tasks["producer"] = asyncio.create_task(producer.run())
        self.tasks["claimer"] = asyncio.create_task(claimer.run())

    async def kill(self, name: str) -> None:
        """A worker dies: its task is gone and its lease is revoked (as its TTL would)."""
        task = self.tasks.pop(name)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def stop(self) -> None:
        for name, worker in self.workers.items():
            if name in self.tasks:
                worker.stop()
        for task in self.tasks.values():
            if not task.done():
                task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)


@pytest.fixture
async def cluster(
    pool: db.Pool, database_url: str, etcd: Etcd, k8s_client: client.ApiClient, k8s_namespace: str
) -> AsyncIterator[Cluster]:
    running = Cluster(pool, database_url, etcd, k8s_client, k8s_namespace)
    running.start()
    yield running
    await running.stop()


async def eventually(check: Callable[[], Any], timeout: float = 20) -> Any:
    for _ in range(int(timeout * 10)):
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        await asyncio.sleep(0.1)
    raise AssertionError("condition not met in time")


def jobs_of_run(cluster: Cluster, run_id: str) -> list[Any]:
    return list(
        client.BatchV1Api(cluster.api)
        .list_namespaced_job(cluster.namespace, label_selector=f"hourglass.io/run={run_id}")
        .items
    )


async def schedule(stub: pb_grpc.JobSchedulerStub, **spec: Any) -> tuple[str, str]:
    request = pb.ScheduleJobRequest(
        spec=pb.JobSpec(task=pb.Task(image="busybox:1.36", command=["echo", "hi"]), **spec)
    )
    request.spec.schedule.after.FromSeconds(0)
    job_id = (await stub.ScheduleJob(request)).job_id

    async def queued_run() -> str | None:
        status = await stub.GetJobStatus(pb.GetJobStatusRequest(job_id=job_id))
        return status.recent_runs[0].id if status.recent_runs else None

    return job_id, await eventually(queued_run)


async def run_state(stub: pb_grpc.JobSchedulerStub, job_id: str) -> pb.Run:
    status = await stub.GetJobStatus(pb.GetJobStatusRequest(job_id=job_id))
    return status.recent_runs[0]


async def test_a_run_becomes_a_job_and_its_status_comes_back_through_the_api(
    cluster: Cluster, stub: pb_grpc.JobSchedulerStub
) -> None:
    cluster.start_worker("w1")
    job_id, run_id = await schedule(stub)
    (job,) = await eventually(lambda: jobs_of_run(cluster, run_id))
    assert job.metadata.name == f"hg-{run_id}-1"
    assert job.spec.backoff_limit == 0
    assert job.metadata.labels["hourglass.io/job"] == job_id
    running = await run_state(stub, job_id)
    assert running.state == pb.RUN_STATE_RUNNING
    assert job.metadata.annotations["hourglass.io/fencing-token"] == str(
        running.attempts[0].fencing_token
    )

    finish_job(cluster.api, cluster.namespace, job.metadata.name)
    done = await eventually(lambda: _terminal(stub, job_id))
    assert done.state == pb.RUN_STATE_SUCCEEDED and done.attempts[0].exit_code == 0


async def _terminal(stub: pb_grpc.JobSchedulerStub, job_id: str) -> pb.Run | None:
    run = await run_state(stub, job_id)
    return run if run.state not in (pb.RUN_STATE_QUEUED, pb.RUN_STATE_RUNNING) else None


async def test_a_failed_job_is_reported_as_failed(
    cluster: Cluster, stub: pb_grpc.JobSchedulerStub
) -> None:
    cluster.start_worker("w1")
    job_id, run_id = await schedule(stub)
    (job,) = await eventually(lambda: jobs_of_run(cluster, run_id))
    finish_job(
        cluster.api,
        cluster.namespace,
        job.metadata.name,
        failed="BackoffLimitExceeded",
        message="exit 3",
    )
    done = await eventually(lambda: _terminal(stub, job_id))
    assert done.state == pb.RUN_STATE_FAILED
    assert job.metadata.name in done.attempts[0].error


async def test_a_second_worker_adopts_the_job_of_a_dead_one(
    cluster: Cluster, stub: pb_grpc.JobSchedulerStub
) -> None:
    cluster.start_worker("w1")
    job_id, run_id = await schedule(stub, max_attempts=3)
    (job,) = await eventually(lambda: jobs_of_run(cluster, run_id))
    await cluster.kill("w1")  # dies mid-run; its lease runs out
    cluster.start_worker("w2")

    async def adopted() -> pb.Run | None:
        run = await run_state(stub, job_id)
        return run if run.attempt == 2 and run.state == pb.RUN_STATE_RUNNING else None

    run = await eventually(adopted)
    assert [(a.number, a.state, a.worker_id) for a in run.attempts] == [
        (1, pb.RUN_STATE_LOST, "w1"),
        (2, pb.RUN_STATE_RUNNING, "w2"),
    ]
    # No second Job: the one attempt 1 started now carries attempt 2's token.
    (same,) = await eventually(
        lambda: [
            j
            for j in jobs_of_run(cluster, run_id)
            if j.metadata.annotations["hourglass.io/fencing-token"]
            == str(run.attempts[1].fencing_token)
        ]
    )
    assert same.metadata.name == job.metadata.name
    finish_job(cluster.api, cluster.namespace, job.metadata.name)
    done = await eventually(lambda: _terminal(stub, job_id))
    assert done.state == pb.RUN_STATE_SUCCEEDED and done.attempt == 2
    assert len(jobs_of_run(cluster, run_id)) == 1


async def test_cancel_run_deletes_the_job(cluster: Cluster, stub: pb_grpc.JobSchedulerStub) -> None:
    cluster.start_worker("w1")
    job_id, run_id = await schedule(stub)
    await eventually(lambda: jobs_of_run(cluster, run_id))
    await eventually(lambda: _is_running(stub, job_id))
    await stub.CancelRun(pb.CancelRunRequest(run_id=run_id))
    done = await eventually(lambda: _terminal(stub, job_id))
    assert done.state == pb.RUN_STATE_CANCELLED
    await eventually(lambda: not jobs_of_run(cluster, run_id))


async def _is_running(stub: pb_grpc.JobSchedulerStub, job_id: str) -> bool:
    return (await run_state(stub, job_id)).state == pb.RUN_STATE_RUNNING
