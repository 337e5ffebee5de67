"""The chart on a real cluster: every component a real pod, every attempt a real Job whose pod
the node runs. The user's paths, as the README and NOTES.txt give them:

1. `helm install` (the migrate hook is a real Job), `kubectl apply -f
   examples/scheduledjob.yaml`: the operator reconciles, the producer fires, the worker creates
   a Job, the node runs its pod, the result flows back to `kubectl get sj`;
2. the worker pod that holds a running attempt is deleted: its successor adopts the same Job
   (one Job, one pod for the run) and the API's attempt history says so;
3. `helm test` (the chart's test hook schedules a job and waits for it), `helm upgrade` to a
   changed value, `helm uninstall` with a ScheduledJob still there (the pre-delete hook
   deletes it while the operator runs), leaving only what the chart documents it keeps, and
   no Lease.

Each test prints the pods and Jobs it saw. The tests run in this order on one release.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.conftest import BUSYBOX, REPO, Cluster, Release, install_values, wait_until

# The first test's setup may build and bring up the cluster (all cached after the first run).
pytestmark = pytest.mark.timeout(1800)

RUN_LABEL = "hourglass.io/run"
HOURGLASS = Path(sys.executable).with_name("hourglass")
JOB_LABEL = "hourglass.io/job"


def _scheduled_job(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    return cluster.get(namespace, "scheduledjob", name)


def _jobs(cluster: Cluster, namespace: str, selector: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.get(namespace, "jobs", "-l", selector)["items"]
    return items


def _pods_of_job(cluster: Cluster, namespace: str, job: str) -> list[dict[str, Any]]:
    selector = f"batch.kubernetes.io/job-name={job}"
    items: list[dict[str, Any]] = cluster.get(namespace, "pods", "-l", selector)["items"]
    return items


def _run_history(release: Release, job_id: str) -> dict[str, Any]:
    status: dict[str, Any] = json.loads(release.hourglass("status", job_id, "-o", "json"))
    return status


def test_install_ran_migrations_as_a_real_job(cluster: Cluster, release: Release) -> None:
    """The post-install hook ran `hourglass migrate` as a Job whose pod completed (helm
    deletes the Job once it succeeded; its events remain)."""
    events = cluster.kubectl(
        "--namespace", release.namespace, "get", "events",
        "--field-selector", f"involvedObject.name={release.component('migrate')}",
        "-o", "custom-columns=KIND:.involvedObject.kind,REASON:.reason,MESSAGE:.message",
    )  # fmt: skip
    print(f"\nevents of the migrate hook Job:\n{events}")
    assert "SuccessfulCreate" in events and "Created pod" in events
    assert "Completed" in events
    cluster.show(release.namespace, "pods,statefulsets,deployments")


def test_scheduledjob_runs_as_a_job_on_the_node(cluster: Cluster, release: Release) -> None:
    ns = release.namespace
    document = yaml.safe_load((REPO / "examples" / "scheduledjob.yaml").read_text())
    # This node has no registry: the same busybox comes from a local tag.
    document["spec"]["task"]["image"] = BUSYBOX
    cluster.kubectl("--namespace", ns, "apply", "-f", "-", input=yaml.safe_dump(document))
    name = document["metadata"]["name"]

    def last_run() -> dict[str, Any] | None:
        run: dict[str, Any] | None = (
            _scheduled_job(cluster, ns, name).get("status", {}).get("lastRun")
        )
        return run if run and run.get("state") == "succeeded" else None

    run = wait_until("the ScheduledJob's first run to succeed", last_run, timeout=240)
    job_id = _scheduled_job(cluster, ns, name)["status"]["jobId"]
    cluster.show(ns, "pods,jobs", "-l", f"{JOB_LABEL}={job_id}")
    jobs = _jobs(cluster, ns, f"{RUN_LABEL}={run['id']}")
    assert [job["metadata"]["name"] for job in jobs] == [f"hg-{run['id']}-1"]
    job = jobs[0]
    assert job["status"].get("succeeded") == 1
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == BUSYBOX
    pods = _pods_of_job(cluster, ns, job["metadata"]["name"])
    assert len(pods) == 1
    assert pods[0]["status"]["phase"] == "Succeeded"
    assert pods[0]["spec"]["nodeName"] == "hourglass-node"
    log = cluster.kubectl("--namespace", ns, "logs", f"job/{job['metadata']['name']}")
    assert log.strip() == "hello"
    assert run["exitCode"] == 0

    table = cluster.kubectl("--namespace", ns, "get", "sj")
    print(f"\n$ kubectl get sj\n{table}")
    header, row = table.splitlines()[:2]
    assert "LAST RESULT" in header
    assert row.split()[0] == name and "succeeded" in row.split()
    # It stops firing into the next tests: the operator deletes the job in hourglass.
    cluster.kubectl("--namespace", ns, "delete", "sj", name, "--timeout=120s", timeout=150)


def test_a_job_template_pod_reads_its_secret_config_and_service_account(
    cluster: Cluster, release: Release
) -> None:
    """A CronJob-shaped ScheduledJob (examples/scheduledjob-template.yaml) on a real node: the
    Job runs in the ScheduledJob's namespace, owned and labelled by it, and its pod gets the
    ServiceAccount, the secretKeyRef env and the ConfigMap volume the template names."""
    ns = release.namespace
    cluster.kubectl("--namespace", ns, "create", "serviceaccount", "reporter")
    cluster.kubectl(
        "--namespace", ns, "create", "secret", "generic", "db-creds",
        "--from-literal=password=s3cret",
    )  # fmt: skip
    cluster.kubectl(
        "--namespace", ns, "create", "configmap", "report-settings", "--from-literal=limit=100"
    )
    document = yaml.safe_load((REPO / "examples" / "scheduledjob-template.yaml").read_text())
    pod_spec = document["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    pod_spec["containers"][0]["image"] = BUSYBOX  # no registry on this node
    cluster.kubectl("--namespace", ns, "apply", "-f", "-", input=yaml.safe_dump(document))
    name = document["metadata"]["name"]
    # It fires hourly: run it now, as `kubectl create job --from=cronjob/...` would.
    wait_until(
        "the operator to give the ScheduledJob its job",
        lambda: _scheduled_job(cluster, ns, name).get("status", {}).get("jobId"),
        timeout=120,
    )
    cluster.kubectl("--namespace", ns, "annotate", "sj", name, "hourglass.io/trigger=first")

    def succeeded() -> dict[str, Any] | None:
        jobs = _jobs(cluster, ns, f"hourglass.io/scheduledjob={name}")
        done = [job for job in jobs if job["status"].get("succeeded") == 1]
        return done[0] if done else None

    job = wait_until("the triggered Job to succeed on the node", succeeded, timeout=240)
    cluster.show(ns, "pods,jobs", "-l", f"hourglass.io/scheduledjob={name}")
    owner = job["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"]) == ("ScheduledJob", name)
    assert job["metadata"]["labels"]["team"] == "billing"
    (pod,) = _pods_of_job(cluster, ns, job["metadata"]["name"])
    assert pod["spec"]["serviceAccountName"] == "reporter"
    log = cluster.kubectl("--namespace", ns, "logs", f"job/{job['metadata']['name']}")
    print(f"$ kubectl logs job/{job['metadata']['name']}\n{log}")
    # The ConfigMap's value has no newline: `cat` and `echo` share a line.
    assert log.strip() == "100password of 6 characters"
    cluster.kubectl("--namespace", ns, "delete", "sj", name, "--timeout=120s", timeout=150)


def test_deleted_worker_pod_successor_adopts_the_job(cluster: Cluster, release: Release) -> None:
    """The feature no other scheduler has, with real pods: the worker that holds a running
    attempt dies; the claimer takes the run back, the successor worker's attempt 2 finds the
    Job of attempt 1 by its run label and adopts it. One Job, one pod, the output of the one
    process."""
    ns = release.namespace
    job_id = release.hourglass(
        "schedule", "--after", "1s", "--max-attempts", "3", "--image", BUSYBOX,
        "--name", "adopt", "--", "sh", "-c", "sleep 25; echo survived",
    ).strip()  # fmt: skip

    def running_pod() -> dict[str, Any] | None:
        pods = cluster.get(ns, "pods", "-l", f"{JOB_LABEL}={job_id}")["items"]
        return pods[0] if pods and pods[0]["status"]["phase"] == "Running" else None

    pod = wait_until("the attempt's pod to run", running_pod, timeout=180, every=1)
    run_id = pod["metadata"]["labels"][RUN_LABEL]
    workers = cluster.get(ns, "pods", "-l", "app.kubernetes.io/component=worker")["items"]
    assert len(workers) == 1
    doomed = workers[0]["metadata"]["name"]
    cluster.show(ns, "pods,jobs", "-l", f"{JOB_LABEL}={job_id}")
    print(f"deleting worker pod {doomed} while it holds run {run_id}")
    cluster.kubectl("--namespace", ns, "delete", "pod", doomed, "--grace-period=1", "--wait=false")

    def finished() -> dict[str, Any] | None:
        runs = _run_history(release, job_id).get("recentRuns") or []
        done = runs and runs[0]["state"] not in ("RUN_STATE_QUEUED", "RUN_STATE_RUNNING")
        return runs[0] if done else None

    run = wait_until("the run to finish after the worker's death", finished, timeout=300)
    print("\nattempt history from the API:\n" + release.hourglass("status", job_id))
    cluster.show(ns, "pods,jobs", "-l", f"{JOB_LABEL}={job_id}")
    cluster.show(ns, "pods", "-l", "app.kubernetes.io/component=worker")

    assert run["state"] == "RUN_STATE_SUCCEEDED", run
    attempts = run["attempts"]
    assert [a["state"] for a in attempts] == ["RUN_STATE_LOST", "RUN_STATE_SUCCEEDED"], attempts
    assert attempts[0]["workerId"].startswith(doomed)
    assert not attempts[1]["workerId"].startswith(doomed)
    assert attempts[1]["stdoutTail"].strip() == "survived"
    jobs = _jobs(cluster, ns, f"{RUN_LABEL}={run_id}")
    assert [job["metadata"]["name"] for job in jobs] == [f"hg-{run_id}-1"]
    assert len(_pods_of_job(cluster, ns, jobs[0]["metadata"]["name"])) == 1
    worker_log = cluster.kubectl(
        "--namespace", ns, "logs", f"deployment/{release.component('worker')}"
    )
    assert f"run {run_id} attempt 2: adopted Job hg-{run_id}-1" in worker_log


def test_cli_through_port_forward_with_a_token(cluster: Cluster, release: Release) -> None:
    """NOTES.txt's path from a laptop: `kubectl port-forward` to the API's Service, then this
    checkout's CLI on the forwarded loopback port, with a token."""
    ns = release.namespace
    forward = subprocess.Popen(
        [str(cluster.tools / "kubectl"), "--namespace", ns, "port-forward",
         f"service/{release.component('api')}", ":50051"],
        env=cluster.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert forward.stdout is not None
        line = forward.stdout.readline()  # Forwarding from 127.0.0.1:PORT -> 50051
        print(line.strip())
        port = int(line.split("127.0.0.1:")[1].split()[0])
        env = {**os.environ, "HOURGLASS_SERVER": f"127.0.0.1:{port}",
               "HOURGLASS_TOKEN": release.token}  # fmt: skip

        def cli(*args: str) -> str:
            result = subprocess.run(
                [str(HOURGLASS), *args], env=env, capture_output=True, text=True, timeout=60
            )
            assert result.returncode == 0, result.stderr
            return result.stdout

        job_id = cli("schedule", "--after", "1s", "--image", BUSYBOX, "--name", "forwarded",
                     "--", "echo", "through the forward").strip()  # fmt: skip

        def succeeded() -> dict[str, Any] | None:
            runs = json.loads(cli("status", job_id, "-o", "json")).get("recentRuns") or []
            return runs[0] if runs and runs[0]["state"] == "RUN_STATE_SUCCEEDED" else None

        run = wait_until("the forwarded job's run to succeed", succeeded, timeout=180)
        print(cli("status", job_id))
        assert run["attempts"][-1]["stdoutTail"].strip() == "through the forward"
        # Without the token, the same API refuses.
        refused = subprocess.run(
            [str(HOURGLASS), "jobs"], env={**env, "HOURGLASS_TOKEN": ""},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert refused.returncode != 0 and "UNAUTHENTICATED" in refused.stderr, refused.stderr
        cli("delete", job_id)
    finally:
        forward.terminate()
        forward.wait(10)
    cluster.show(ns, "pods,jobs", "-l", f"{RUN_LABEL}={run['id']}")


def test_helm_test_upgrade_and_uninstall(cluster: Cluster, release: Release) -> None:
    ns, name = release.namespace, release.name
    out = cluster.helm("test", name, "--namespace", ns, "--timeout", "6m", timeout=420)
    print(f"\n$ helm test {name}\n{out.split('NOTES:')[0]}")
    assert "Phase:          Succeeded" in out

    # A changed value: two producers; the Deployment follows and the release still works.
    started = time.monotonic()
    cluster.helm(
        "upgrade", name, str(REPO / "charts" / "hourglass"), "--namespace", ns,
        "--values", "-", "--set", "producer.replicas=2", "--timeout", "10m",
        input=install_values(cluster), timeout=660,
    )  # fmt: skip
    producer = release.component("producer")
    cluster.kubectl("--namespace", ns, "rollout", "status", f"deployment/{producer}",
                    "--timeout=300s", timeout=320)  # fmt: skip
    print(f"helm upgrade and rollout: {time.monotonic() - started:.0f}s")
    deployment = cluster.get(ns, "deployment", producer)
    assert deployment["spec"]["replicas"] == 2
    assert deployment["status"].get("readyReplicas") == 2
    history = cluster.helm("history", name, "--namespace", ns)
    print(f"\n$ helm history {name}\n{history}")
    assert "upgrade" in history.lower()
    out = cluster.helm("test", name, "--namespace", ns, "--timeout", "6m", timeout=420)
    assert "Phase:          Succeeded" in out

    # A ScheduledJob left in place, with the operator's finalizer on it: the chart's pre-delete
    # hook deletes it while the operator still runs, so the uninstall does not hang on it.
    document = yaml.safe_load((REPO / "examples" / "scheduledjob.yaml").read_text())
    document["metadata"]["name"] = "left-at-uninstall"
    document["spec"]["task"]["image"] = BUSYBOX
    cluster.kubectl("--namespace", ns, "apply", "-f", "-", input=yaml.safe_dump(document))
    wait_until(
        "the operator to take it (its finalizer and job)",
        lambda: _scheduled_job(cluster, ns, "left-at-uninstall").get("status", {}).get("jobId"),
        timeout=120,
    )
    left_sjs = cluster.kubectl("--namespace", ns, "get", "scheduledjobs", "-o", "name").split()
    print(f"ScheduledJobs before helm uninstall: {left_sjs}")
    assert "scheduledjob.hourglass.io/left-at-uninstall" in left_sjs
    started = time.monotonic()
    out = cluster.helm(
        "uninstall", name, "--namespace", ns, "--wait", "--timeout", "5m", timeout=400
    )
    print(f"\n$ helm uninstall {name} ({time.monotonic() - started:.0f}s)\n{out}")
    assert cluster.kubectl("--namespace", ns, "get", "scheduledjobs", "-o", "name").strip() == ""
    leases = cluster.kubectl("--namespace", ns, "get", "leases", "-o", "name").split()
    # The operator's Lease (named for the release: `<release>-hourglass-operator`) is gone.
    assert not [lease for lease in leases if lease.endswith("hourglass-operator")], leases
    selector = f"app.kubernetes.io/instance={name}"

    def chart_objects_gone() -> list[str] | None:
        left = cluster.kubectl(
            "get", "all,configmaps,secrets,serviceaccounts,roles,rolebindings,"
            "networkpolicies,poddisruptionbudgets,clusterroles,clusterrolebindings",
            "--all-namespaces", "-l", selector, "-o", "name",
        ).split()  # fmt: skip
        # Kept on purpose (helm.sh/resource-policy: keep, see values.yaml): the generated
        # database and Redis passwords, so that a reinstall matches the data on the volumes.
        kept = {f"secret/{release.component('database')}", f"secret/{release.component('cases')}"}
        return left if set(left) <= kept else None

    left = wait_until("the release's objects to go", chart_objects_gone, timeout=180)
    cluster.show(ns, "all,secrets,configmaps,pvc,leases")
    print(f"left with label {selector}: {left}")
    assert not [
        pod["metadata"]["name"]
        for pod in cluster.get(ns, "pods")["items"]
        if pod["metadata"]["name"].startswith(release.component(""))
    ]
    release.uninstalled = True
