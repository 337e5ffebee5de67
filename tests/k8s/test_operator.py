"""The ScheduledJob operator against a real kube-apiserver and a real hourglass API on a real
PostgreSQL: what `kubectl apply` of a ScheduledJob does is what a gRPC call does.

The CRD comes from charts/hourglass/crds/ (the file the chart installs). The operator runs in
a thread of this process, the way `hourglass operator` runs it, with leader election on a
Lease in the test's namespace, and serves only that namespace: earlier tests' namespaces stay
Terminating (no namespace controller runs) with their resources in them.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import ssl
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
import yaml
from kubernetes import client

from hourglass import artifacts
from hourglass.api import auth
from hourglass.api import server as api_server
from hourglass.operator import leader, main, resources
from hourglass.store import db, tokens
from hourglass.v1 import scheduler_pb2 as pb
from hourglass.v1 import scheduler_pb2_grpc as pb_grpc
from tests.k8s.conftest import KubeApiServer

REPO = Path(__file__).resolve().parents[2]
CRDS = REPO / "charts" / "hourglass" / "crds"
EXAMPLE = REPO / "examples" / "scheduledjob.yaml"
GROUP, VERSION, PLURAL = resources.GROUP, resources.VERSION, resources.PLURAL
DIFFBASE = f"{GROUP}/last-handled-configuration"
WAIT = 20.0

T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = WAIT) -> T:
    """Polls until `probe` returns something truthy, and returns it."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


# -- the CRD ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def crds(k8s_client: client.ApiClient) -> list[str]:
    """Installs every CRD of the chart and waits until the server serves them."""
    extensions = client.ApiextensionsV1Api(k8s_client)
    names = []
    for path in sorted(CRDS.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            name = document["metadata"]["name"]
            try:
                extensions.create_custom_resource_definition(document)
            except client.ApiException as error:
                if error.status != 409:
                    raise
                current = extensions.read_custom_resource_definition(name)
                document["metadata"]["resourceVersion"] = current.metadata.resource_version
                extensions.replace_custom_resource_definition(name, document)
            names.append(name)

    def established(name: str) -> bool:
        crd = extensions.read_custom_resource_definition(name)
        return any(
            c.type == "Established" and c.status == "True" for c in crd.status.conditions or ()
        )

    for name in names:
        wait_for(f"CRD {name} established", lambda name=name: established(name))
    assert "scheduledjobs.hourglass.io" in names
    return names


def example() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    return document


class ScheduledJobs:
    """ScheduledJobs of one namespace, through the admin's client."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.namespace = namespace

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        # Strict, as `kubectl apply` validates by default: unknown fields are errors.
        created: dict[str, Any] = self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, body, field_validation="Strict"
        )
        return created

    def get(self, name: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name
            )
        except client.ApiException as error:
            if error.status == 404:
                return None
            raise
        return found

    def status(self, name: str) -> dict[str, Any]:
        found = self.get(name)
        assert found is not None, f"{name} is gone"
        status: dict[str, Any] = found.get("status") or {}
        return status

    def patch(self, name: str, body: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name, body
        )

    def patch_status(self, name: str, status: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, self.namespace, PLURAL, name, {"status": status}
        )

    def delete(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)

    def events(self, name: str) -> list[client.CoreV1Event]:
        found: list[client.CoreV1Event] = self.core.list_namespaced_event(
            self.namespace, field_selector=f"involvedObject.name={name}"
        ).items
        return found


def table(server: KubeApiServer, namespace: str) -> dict[str, dict[str, Any]]:
    """The server-side table that `kubectl get sj -o wide` prints: name -> column -> cell."""
    request = urllib.request.Request(
        f"{server.url}/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}",
        headers={
            "Authorization": f"Bearer {server.token}",
            "Accept": "application/json;as=Table;v=v1;g=meta.k8s.io",
        },
    )
    context = ssl.create_default_context(cafile=str(server.ca_file))
    with urllib.request.urlopen(request, context=context, timeout=5) as response:
        answer = json.load(response)
    columns = [column["name"] for column in answer["columnDefinitions"]]
    return {
        row["cells"][0]: dict(zip(columns, row["cells"], strict=True)) for row in answer["rows"]
    }


def ready(status: dict[str, Any]) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions") or () if c["type"] == "Ready"), None)


# -- the hourglass API, in a thread with its own event loop -------------------------------------


@dataclass
class HourglassApi:
    """A real API server (token authentication, as in production) and a client for it."""

    address: str
    token: str
    stub: pb_grpc.JobSchedulerStub
    metadata: tuple[tuple[str, str], ...] = ()
    # Stops the server (as an outage would); the fixture's teardown then finds it stopped.
    stop: Callable[[], None] = lambda: None

    def call(self, method: str, request: Any) -> Any:
        return getattr(self.stub, method)(request, metadata=self.metadata, timeout=10)

    def job(self, job_id: str) -> pb.GetJobStatusResponse:
        response: pb.GetJobStatusResponse = self.call(
            "GetJobStatus", pb.GetJobStatusRequest(job_id=job_id)
        )
        return response

    def jobs(self) -> list[pb.Job]:
        response: pb.ListJobsResponse = self.call("ListJobs", pb.ListJobsRequest(page_size=500))
        return list(response.jobs)


@pytest.fixture
def hourglass_api(database_url: str, tmp_path: Path, k8s_namespace: str) -> Iterator[HourglassApi]:
    started = threading.Event()
    state: dict[str, Any] = {}

    async def serve() -> None:
        pool = await db.open_pool(database_url)
        try:
            async with db.transaction(pool) as conn:
                _, token = await tokens.create(
                    conn, namespace=k8s_namespace, name="operator", now=datetime.now(UTC)
                )
            server = await api_server.start(
                pool,
                "127.0.0.1:0",
                dsn=database_url,
                auth=auth.Tokens(pool),
                artifact_store=artifacts.LocalArtifactStore(tmp_path / "artifacts"),
            )
            stop = asyncio.Event()
            state.update(loop=asyncio.get_running_loop(), stop=stop, port=server.port, token=token)
            started.set()
            await stop.wait()
            await server.stop(grace=None)
        except BaseException as error:
            state["error"] = error
            started.set()
            raise
        finally:
            await pool.close()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), name="hourglass-api")
    thread.start()
    assert started.wait(30), "the API server did not start"
    if "error" in state:
        raise state["error"]
    address = f"127.0.0.1:{state['port']}"

    def stop() -> None:
        if thread.is_alive():
            state["loop"].call_soon_threadsafe(state["stop"].set)
        thread.join(30)

    with grpc.insecure_channel(address) as channel:
        yield HourglassApi(
            address=address,
            token=state["token"],
            stub=pb_grpc.JobSchedulerStub(channel),
            metadata=(("authorization", f"Bearer {state['token']}"),),
            stop=stop,
        )
    stop()


# -- the operator -------------------------------------------------------------------------------


@dataclass
class RunningOperator:
    thread: threading.Thread
    stop: threading.Event
    ready: threading.Event
    errors: list[BaseException] = field(default_factory=list)

    def shutdown(self) -> None:
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), "the operator did not stop within 30s"
        assert not self.errors, f"the operator failed: {self.errors!r}"


OperatorFactory = Callable[..., RunningOperator]


@pytest.fixture
def start_operator(
    kube_apiserver: KubeApiServer,
    crds: list[str],
    k8s_namespace: str,
    hourglass_api: HourglassApi,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[OperatorFactory]:
    """Starts operators (in threads) for the test's namespace; stops them afterwards."""
    monkeypatch.setenv("KUBECONFIG", str(kube_apiserver.kubeconfig))
    started: list[RunningOperator] = []

    def start(
        identity: str = "first", wait: bool = True, kubeconfig: Path | None = None
    ) -> RunningOperator:
        if kubeconfig is not None:
            monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        stop, ready_flag = threading.Event(), threading.Event()
        errors: list[BaseException] = []

        def target() -> None:
            try:
                main.run(
                    hourglass_api.address,
                    [k8s_namespace],
                    "hourglass-operator",
                    token=hourglass_api.token,
                    lease_namespace=k8s_namespace,
                    identity=identity,
                    refresh_interval=1.0,
                    lease_duration=6.0,
                    stop=stop,
                    ready=ready_flag,
                )
            except BaseException as error:
                errors.append(error)

        thread = threading.Thread(target=target, name=f"operator-{identity}", daemon=True)
        running = RunningOperator(thread, stop, ready_flag, errors)
        started.append(running)
        thread.start()
        if wait:
            assert ready_flag.wait(30), f"operator {identity} not ready: {errors!r}"
        return running

    yield start
    for running in started:
        running.shutdown()


@pytest.fixture
def operator(start_operator: OperatorFactory) -> RunningOperator:
    return start_operator()


@pytest.fixture
def sj(k8s_client: client.ApiClient, k8s_namespace: str) -> ScheduledJobs:
    return ScheduledJobs(k8s_client, k8s_namespace)


# -- 1. the schema ------------------------------------------------------------------------------


def test_the_example_is_a_valid_scheduled_job(crds: list[str], sj: ScheduledJobs) -> None:
    created = sj.create(example())
    assert created["kind"] == "ScheduledJob"
    assert created["spec"]["schedule"] == {"every": {"interval": "30s"}}
    assert created["spec"]["task"]["command"] == ["echo", "hello"]
    # What the schema defaults, the server fills in.
    created = sj.create({**example(), "metadata": {"name": "bare"}, "spec": _bare_spec()})
    assert created["spec"]["maxAttempts"] == 1
    assert created["spec"]["overlap"] == "allow"


def _bare_spec() -> dict[str, Any]:
    return {"schedule": {"after": "10m"}, "task": {"command": ["true"]}}


def _spec_with(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    spec = copy.deepcopy(example()["spec"])
    change(spec)
    return spec


INVALID = {
    "bad duration": (
        _spec_with(lambda s: s["schedule"]["every"].update(interval="30 seconds")),
        ["spec.schedule.every.interval", "'30 seconds' is not a duration"],
    ),
    "bad timeout": (
        _spec_with(lambda s: s.update(timeout="1 hour")),
        ["spec.timeout", "'1 hour' is not a duration"],
    ),
    "unknown overlap": (
        _spec_with(lambda s: s.update(overlap="sometimes")),
        ["spec.overlap", "'sometimes' is not one of allow, skip, buffer_one, replace"],
    ),
    "unknown catch-up policy": (
        _spec_with(lambda s: s.update(catchUp={"policy": "never"})),
        ["spec.catchUp.policy", "'never' is not one of all, latest, skip"],
    ),
    "missing schedule": (
        _spec_with(lambda s: s.pop("schedule")),
        ["spec", "schedule is required"],
    ),
    "two schedule kinds": (
        _spec_with(lambda s: s["schedule"].update(cron={"expression": "0 * * * *"})),
        ["spec.schedule", "set exactly one of at, after, cron or every"],
    ),
    "no schedule kind": (
        _spec_with(lambda s: s.update(schedule={"start": "2030-01-01T00:00:00Z"})),
        ["spec.schedule", "set exactly one of at, after, cron or every"],
    ),
    "cron of three fields": (
        _spec_with(lambda s: s.update(schedule={"cron": {"expression": "* * *"}})),
        ["spec.schedule.cron.expression", "has fewer than 5 fields"],
    ),
    "too many attempts": (
        _spec_with(lambda s: s.update(maxAttempts=101)),
        ["spec.maxAttempts", "less than or equal to 100"],
    ),
    "no attempts": (
        _spec_with(lambda s: s.update(maxAttempts=0)),
        ["spec.maxAttempts", "greater than or equal to 1"],
    ),
    "neither command nor binary": (
        _spec_with(lambda s: s["task"].pop("command")),
        ["spec.task", "set task.command or task.binary, or a jobTemplate"],
    ),
    "both command and binary": (
        _spec_with(lambda s: s["task"].update(binary="sha256:" + "ab" * 32)),
        ["spec.task", "set only one of command or binary"],
    ),
    "not a date-time": (
        _spec_with(lambda s: s.update(schedule={"at": "tomorrow"})),
        ["spec.schedule.at", "date-time"],
    ),
    "an unknown field": (
        _spec_with(lambda s: s.update(maxAttempt=3)),
        ['unknown field "spec.maxAttempt"'],
    ),
}


@pytest.mark.parametrize("case", list(INVALID))
def test_the_server_refuses_a_bad_spec_naming_the_field(
    crds: list[str], sj: ScheduledJobs, case: str
) -> None:
    spec, expected = INVALID[case]
    body = {**example(), "metadata": {"name": "bad"}, "spec": spec}
    with pytest.raises(client.ApiException) as refused:
        sj.create(body)
    answer = json.loads(refused.value.body)
    # A schema violation is 422 Invalid; an unknown field under Strict is a decoding error.
    if case == "an unknown field":
        assert (refused.value.status, answer["reason"]) == (400, "BadRequest"), answer
    else:
        assert (refused.value.status, answer["reason"]) == (422, "Invalid"), answer
    text = answer["message"]
    for fragment in expected:
        assert fragment in text, f"{fragment!r} not in {text}"
    assert sj.get("bad") is None


# -- 2. create, update, idempotency ------------------------------------------------------------


def _scheduled(sj: ScheduledJobs, name: str) -> Callable[[], dict[str, Any] | None]:
    def probe() -> dict[str, Any] | None:
        status = sj.status(name)
        condition = ready(status)
        if status.get("jobId") and status.get("nextFireAt") and condition:
            return status if condition["status"] == "True" else None
        return None

    return probe


def test_applying_a_scheduled_job_schedules_it_and_a_change_updates_it(
    operator: RunningOperator,
    sj: ScheduledJobs,
    hourglass_api: HourglassApi,
    k8s_namespace: str,
    kube_apiserver: KubeApiServer,
) -> None:
    sj.create(example())
    status = wait_for("jobId and nextFireAt in the status", _scheduled(sj, "hello"))
    job_id = status["jobId"]
    assert status["schedule"] == "every 30s"
    assert status["state"] == "active"
    assert status["observedGeneration"] == 1
    assert ready(status)["reason"] == "Scheduled"

    job = hourglass_api.job(job_id).job
    assert job.revision == 1
    assert job.spec.name == f"{k8s_namespace}/hello"
    assert list(job.spec.task.command) == ["echo", "hello"]
    assert job.spec.task.image == "busybox:1.36"  # tagged: an untagged image is always pulled
    assert job.spec.schedule.every.interval.ToTimedelta().total_seconds() == 30
    assert job.spec.max_attempts == 3
    assert job.spec.timeout.ToTimedelta().total_seconds() == 60
    assert job.spec.overlap == pb.OVERLAP_POLICY_SKIP
    fire = job.next_fire_at.ToDatetime(tzinfo=UTC)
    assert status["nextFireAt"].startswith(fire.strftime("%Y-%m-%dT%H:%M:%S"))
    # What `kubectl get sj` shows.
    row = table(kube_apiserver, k8s_namespace)["hello"]
    assert row["Schedule"] == "every 30s"
    assert row["Next Fire"] == status["nextFireAt"]
    assert row["Last Result"] is None  # no run yet
    assert row["Ready"] == "True"
    assert row["Age"]

    # The create handler once more for the same generation, as after a crash between
    # ScheduleJob and the status patch: kopf sees no handled state and no job id...
    sj.patch_status("hello", {"jobId": None})
    sj.patch("hello", {"metadata": {"annotations": {DIFFBASE: None}}})
    wait_for(
        "the create handler to run again",
        lambda: (
            sj.status("hello").get("jobId")
            and DIFFBASE in (sj.get("hello") or {})["metadata"].get("annotations", {})
        ),
    )
    # ... and the request id (uid/generation) gets it the same job, not a second one.
    assert sj.status("hello")["jobId"] == job_id
    assert [j.id for j in hourglass_api.jobs()] == [job_id]

    # A change of the spec updates the same job: a new revision.
    sj.patch("hello", {"spec": {"schedule": {"every": {"interval": "45s"}}}})
    status = wait_for(
        "generation 2 to be observed",
        lambda: (
            (s := sj.status("hello")).get("observedGeneration") == 2
            and s.get("schedule") == "every 45s"
            and s
        ),
    )
    assert status["jobId"] == job_id
    job = hourglass_api.job(job_id).job
    assert job.revision == 2
    assert job.spec.schedule.every.interval.ToTimedelta().total_seconds() == 45
    assert [j.id for j in hourglass_api.jobs()] == [job_id]
    reasons = [event.reason for event in sj.events("hello")]
    assert "Scheduled" in reasons
    assert "Updated" in reasons


def test_a_restarted_operator_leaves_an_unchanged_job_alone(
    start_operator: OperatorFactory,
    sj: ScheduledJobs,
    hourglass_api: HourglassApi,
    caplog: pytest.LogCaptureFixture,
) -> None:
    first = start_operator("first")
    sj.create(example())
    job_id = wait_for("the job", _scheduled(sj, "hello"))["jobId"]
    first.shutdown()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="kopf.objects"):
        start_operator("second")
        wait_for(
            "the resume handler of the second operator",
            lambda: any("'resume' succeeded" in r.getMessage() for r in caplog.records),
        )
    # It found the job running this very spec: no UpdateJob, no second job.
    assert hourglass_api.job(job_id).job.revision == 1
    assert [j.id for j in hourglass_api.jobs()] == [job_id]
    assert ready(sj.status("hello"))["status"] == "True"


# -- 3. delete ----------------------------------------------------------------------------------


def test_deleting_the_resource_deletes_the_job(
    operator: RunningOperator, sj: ScheduledJobs, hourglass_api: HourglassApi
) -> None:
    sj.create(example())
    job_id = wait_for("the job", _scheduled(sj, "hello"))["jobId"]
    assert (sj.get("hello") or {})["metadata"]["finalizers"] == ["hourglass.io/finalizer"]
    sj.delete("hello")
    wait_for("the resource to disappear", lambda: sj.get("hello") is None)
    with pytest.raises(grpc.RpcError) as missing:
        hourglass_api.job(job_id)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert hourglass_api.jobs() == []


def test_a_users_delete_is_refused_and_a_forced_one_is_scheduled_again(
    operator: RunningOperator,
    sj: ScheduledJobs,
    hourglass_api: HourglassApi,
    k8s_namespace: str,
) -> None:
    sj.create(example())
    job_id = wait_for("the job", _scheduled(sj, "hello"))["jobId"]
    with pytest.raises(grpc.RpcError) as refused:
        hourglass_api.call("DeleteJob", pb.DeleteJobRequest(job_id=job_id))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"kubectl delete scheduledjob hello -n {k8s_namespace}" in refused.value.details()
    assert hourglass_api.job(job_id).job.managed_by == f"ScheduledJob {k8s_namespace}/hello"
    # Forced: the job goes, and the ScheduledJob, which still asks for it, gets a new one.
    hourglass_api.call("DeleteJob", pb.DeleteJobRequest(job_id=job_id, force=True))
    status = wait_for(
        "a new job", lambda: (s := sj.status("hello")).get("jobId") not in (None, job_id) and s
    )
    assert [j.id for j in hourglass_api.jobs()] == [status["jobId"]]
    assert "JobNotFound" in [event.reason for event in sj.events("hello")]


# -- 4. a spec only the API can refuse ----------------------------------------------------------


def test_a_spec_the_api_refuses_ends_ready_false_without_retries(
    operator: RunningOperator, sj: ScheduledJobs, hourglass_api: HourglassApi
) -> None:
    body = example()
    body["spec"]["schedule"] = {"cron": {"expression": "0 0 30 2 *"}}
    sj.create(body)  # every field in range, but February has no 30th: only the API knows

    def refused() -> dict[str, Any] | None:
        condition = ready(sj.status("hello"))
        return condition if condition and condition["status"] == "False" else None

    condition = wait_for("Ready=False", refused)
    assert condition["reason"] == "InvalidSpec"
    assert "spec.schedule.cron.expression" in condition["message"]
    assert "jobId" not in sj.status("hello")
    assert hourglass_api.jobs() == []
    events = [e for e in sj.events("hello") if e.reason == "InvalidSpec"]
    assert events and events[0].type == "Warning"
    assert "spec.schedule.cron.expression" in events[0].message

    # A permanent error: kopf does not retry it, so the resource stays as it is.
    version = (sj.get("hello") or {})["metadata"]["resourceVersion"]
    time.sleep(3)
    assert (sj.get("hello") or {})["metadata"]["resourceVersion"] == version
    assert len([e for e in sj.events("hello") if e.reason == "InvalidSpec"]) == 1

    # Fixing the spec schedules the job.
    sj.patch("hello", {"spec": {"schedule": {"cron": {"expression": "0 * * * *"}}}})
    status = wait_for("the fixed spec scheduled", _scheduled(sj, "hello"))
    assert status["schedule"] == "cron 0 * * * *"
    assert status["observedGeneration"] == 2
    assert [j.id for j in hourglass_api.jobs()] == [status["jobId"]]


# -- runs: status and events --------------------------------------------------------------------


def test_a_finished_run_shows_in_the_status_and_as_an_event(
    operator: RunningOperator, sj: ScheduledJobs, hourglass_api: HourglassApi
) -> None:
    sj.create(example())
    job_id = wait_for("the job", _scheduled(sj, "hello"))["jobId"]
    # No worker runs: a run that is triggered and then cancelled is the terminal run here.
    run = hourglass_api.call("TriggerJob", pb.TriggerJobRequest(job_id=job_id)).run
    wait_for("lastRun queued", lambda: (sj.status("hello").get("lastRun") or {}).get("id"))
    hourglass_api.call("CancelRun", pb.CancelRunRequest(run_id=run.id))
    last = wait_for(
        "lastRun cancelled",
        lambda: (r := sj.status("hello").get("lastRun") or {}).get("state") == "cancelled" and r,
    )
    assert last["id"] == run.id
    assert last["finishedAt"]
    event = wait_for(
        "the RunCancelled event",
        lambda: next((e for e in sj.events("hello") if e.reason == "RunCancelled"), None),
    )
    assert run.id in event.message
    # Reported once, not on every refresh.
    time.sleep(2.5)
    assert len([e for e in sj.events("hello") if e.reason == "RunCancelled"]) == 1


# -- one active operator ------------------------------------------------------------------------


def test_a_second_operator_waits_until_the_first_lets_go(
    start_operator: OperatorFactory, sj: ScheduledJobs, hourglass_api: HourglassApi
) -> None:
    first = start_operator("first")
    second = start_operator("second", wait=False)
    assert not second.ready.wait(3), "the second operator started while the first leads"
    first.shutdown()  # releases the Lease
    assert second.ready.wait(10), "the second operator did not take over"
    sj.create(example())
    wait_for("the job, scheduled by the second operator", _scheduled(sj, "hello"))
    lease = client.CoordinationV1Api(sj.custom.api_client).read_namespaced_lease(
        "hourglass-operator", sj.namespace
    )
    assert lease.spec.holder_identity == "second"


def test_a_lease_that_is_not_renewed_passes_to_another_candidate(
    k8s_client: client.ApiClient, k8s_namespace: str
) -> None:
    lease_name = f"lease-{uuid.uuid4().hex[:6]}"

    def elector(identity: str) -> leader.LeaseElector:
        return leader.LeaseElector(
            k8s_client,
            name=lease_name,
            namespace=k8s_namespace,
            identity=identity,
            lease_duration=2.0,
            renew_deadline=1.5,
            retry_period=0.5,
        )

    a, b = elector("a"), elector("b")
    assert a.try_acquire_or_renew()
    assert a.try_acquire_or_renew()  # a renewal
    assert not b.try_acquire_or_renew()
    a.release()
    assert b.try_acquire_or_renew()  # released: at once
    # b stops renewing; a sees the record unchanged for a whole lease duration.
    assert not a.try_acquire_or_renew()
    time.sleep(2.2)
    assert a.try_acquire_or_renew()
    lease = client.CoordinationV1Api(k8s_client).read_namespaced_lease(lease_name, k8s_namespace)
    assert lease.spec.holder_identity == "a"
    assert lease.spec.lease_transitions == 2


ROUND_TRIP = {
    "the example": example()["spec"],
    "every with jitter and bounds": {
        "schedule": {
            "every": {"interval": "1h30m", "jitter": "1.5s"},
            "start": "2031-01-01T00:00:00+01:00",
            "end": "2032-06-01T12:00:00.250Z",
        },
        "task": {
            "command": ["sh", "-c"],
            "args": ["echo $GREETING"],
            "env": [{"name": "GREETING", "value": "hi"}, {"name": "EMPTY"}],
            "image": "busybox:1.37",
            "workingDir": "/tmp",
            "resources": {"cpuRequest": "250m", "memoryLimit": "256Mi"},
        },
        "retryBackoff": "500ms",
        "overlap": "buffer_one",
        "catchUp": {"policy": "skip", "window": "30s"},
    },
    "cron in a time zone": {
        "schedule": {"cron": {"expression": "*/10 * * * * *", "timeZone": "Europe/Berlin"}},
        "task": {"command": ["true"]},
        "maxAttempts": 100,
        "timeout": "7d",
        "catchUp": {"policy": "latest"},
    },
    "at": {"schedule": {"at": "2031-05-04T03:02:01.5-07:00"}, "task": {"command": ["true"]}},
    "after": {"schedule": {"after": "90m"}, "task": {"command": ["true"]}},
    "job template with history limits": {
        "schedule": {"every": {"interval": "1h"}},
        "successfulJobsHistoryLimit": 5,
        "failedJobsHistoryLimit": 0,
        "jobTemplate": {
            "metadata": {"labels": {"team": "a"}},
            "spec": {
                "template": {
                    "spec": {
                        "containers": [
                            {
                                "name": "main",
                                "image": "busybox:1.37",
                                "resources": {"limits": {"cpu": 0.5}},
                            }
                        ],
                        "nodeSelector": {"pool": "batch"},
                    }
                }
            },
        },
    },
}


@pytest.mark.parametrize("case", list(ROUND_TRIP))
def test_the_api_returns_the_spec_as_the_operator_sends_it(
    hourglass_api: HourglassApi, case: str
) -> None:
    """The operator skips UpdateJob when the stored spec equals the one it would send (a
    resumed resource, a retried handler): that needs the API to return it unchanged."""
    desired = resources.job_spec("ns", "name", ROUND_TRIP[case], uid=str(uuid.uuid4()))
    response = hourglass_api.call("ScheduleJob", pb.ScheduleJobRequest(spec=desired))
    stored = hourglass_api.job(response.job_id).job.spec
    assert resources.same_spec(stored, desired), f"{stored}\n!=\n{desired}"


def test_an_operator_that_loses_its_lease_stops_until_it_leads_again(
    operator: RunningOperator, sj: ScheduledJobs, k8s_namespace: str
) -> None:
    leases = client.CoordinationV1Api(sj.custom.api_client)
    lease = leases.read_namespaced_lease("hourglass-operator", k8s_namespace)
    assert lease.spec.holder_identity == "first"
    # Another process takes the Lease (as after a partition in which "first" looked dead).
    lease.spec.holder_identity = "intruder"
    lease.spec.lease_duration_seconds = 3
    lease.spec.lease_transitions += 1
    leases.replace_namespaced_lease("hourglass-operator", k8s_namespace, lease)
    time.sleep(1.5)  # "first" notices at its next renewal and stops handling
    sj.create(example())
    time.sleep(1.5)
    assert "jobId" not in sj.status("hello"), "handled while another process held the Lease"
    # The intruder never renews: once its Lease runs out, "first" leads again and catches up.
    wait_for("the job, once the operator leads again", _scheduled(sj, "hello"))
    lease = leases.read_namespaced_lease("hourglass-operator", k8s_namespace)
    assert lease.spec.holder_identity == "first"
    assert lease.spec.lease_transitions == 2


# What the operator needs, and nothing more: the Helm chart's RBAC should grant these (as a
# ClusterRole when it serves every namespace; Leases only in its own namespace).
OPERATOR_RULES = [
    {"apiGroups": ["hourglass.io"], "resources": ["scheduledjobs"],
     "verbs": ["get", "list", "watch", "patch"]},
    {"apiGroups": ["hourglass.io"], "resources": ["scheduledjobs/status"],
     "verbs": ["get", "patch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
     "verbs": ["get", "create", "update"]},
]  # fmt: skip


def test_the_operator_works_with_only_the_documented_permissions(
    kube_apiserver: KubeApiServer,
    k8s_client: client.ApiClient,
    k8s_namespace: str,
    start_operator: OperatorFactory,
    sj: ScheduledJobs,
    hourglass_api: HourglassApi,
    tmp_path: Path,
) -> None:
    rbac = client.RbacAuthorizationV1Api(k8s_client)
    rbac.create_namespaced_role(
        k8s_namespace, {"metadata": {"name": "hourglass-operator"}, "rules": OPERATOR_RULES}
    )
    rbac.create_namespaced_role_binding(
        k8s_namespace,
        {
            "metadata": {"name": "hourglass-operator"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "hourglass-operator",
            },
            "subjects": [
                {"kind": "ServiceAccount", "name": "hourglass-operator", "namespace": k8s_namespace}
            ],
        },
    )
    token = kube_apiserver.service_account_token(k8s_namespace, "hourglass-operator")
    kubeconfig = kube_apiserver.write_kubeconfig(
        "hourglass-operator", token, tmp_path / "kubeconfig-operator.yaml"
    )
    start_operator(kubeconfig=kubeconfig)
    sj.create(example())
    job_id = wait_for("the job", _scheduled(sj, "hello"))["jobId"]
    wait_for("the Scheduled event", lambda: "Scheduled" in [e.reason for e in sj.events("hello")])
    sj.patch("hello", {"spec": {"maxAttempts": 5}})
    wait_for("the update", lambda: hourglass_api.job(job_id).job.spec.max_attempts == 5)
    sj.delete("hello")
    wait_for("the resource to disappear", lambda: sj.get("hello") is None)
    assert hourglass_api.jobs() == []
