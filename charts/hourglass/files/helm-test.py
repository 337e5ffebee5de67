"""`helm test`: schedule a one-shot job through the API, wait until its run succeeded, delete
the job. Run by the chart's test pod (templates/tests/schedule-test.yaml) with the image's
Python. It speaks gRPC itself, like the operator: the CLI sends a token only over TLS or to a
loopback server, and inside the cluster the API may be plain TCP.

Environment: HOURGLASS_SERVER, HOURGLASS_TOKEN or HOURGLASS_TOKEN_FILE (neither: an --insecure
API), HOURGLASS_TLS_CA (optional), TEST_IMAGE (the image of the job's pod), TEST_TIMEOUT
(seconds).
"""

import os
import sys
import time
import uuid

import grpc

from hourglass.v1 import scheduler_pb2 as pb
from hourglass.v1 import scheduler_pb2_grpc as pb_grpc

FINAL = {
    pb.RUN_STATE_SUCCEEDED,
    pb.RUN_STATE_FAILED,
    pb.RUN_STATE_TIMED_OUT,
    pb.RUN_STATE_CANCELLED,
    pb.RUN_STATE_SKIPPED,
}


def channel(server: str) -> grpc.Channel:
    ca = os.environ.get("HOURGLASS_TLS_CA")
    if ca:
        with open(ca, "rb") as file:
            return grpc.secure_channel(server, grpc.ssl_channel_credentials(file.read()))
    return grpc.insecure_channel(server)


def main() -> int:
    server = os.environ["HOURGLASS_SERVER"]
    token = os.environ.get("HOURGLASS_TOKEN", "")
    token_file = os.environ.get("HOURGLASS_TOKEN_FILE", "")
    if token_file:  # the operator's projected service account token (TokenReview)
        with open(token_file) as f:
            token = f.read().strip()
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    deadline = time.monotonic() + float(os.environ.get("TEST_TIMEOUT", "300"))
    with channel(server) as chan:
        stub = pb_grpc.JobSchedulerStub(chan)
        grpc.channel_ready_future(chan).result(timeout=60)
        spec = pb.JobSpec(
            name="helm-test",
            task=pb.Task(image=os.environ["TEST_IMAGE"], command=["echo", "hourglass-helm-test"]),
            max_attempts=3,
        )
        spec.schedule.after.FromSeconds(1)
        request = pb.ScheduleJobRequest(request_id=str(uuid.uuid4()), spec=spec)
        job = stub.ScheduleJob(request, metadata=metadata, timeout=30).job_id
        print(f"scheduled job {job} on {server}; waiting for its run", flush=True)
        try:
            while time.monotonic() < deadline:
                status = stub.GetJobStatus(
                    pb.GetJobStatusRequest(job_id=job), metadata=metadata, timeout=30
                )
                run = status.recent_runs[0] if status.recent_runs else None
                if run is not None and run.state in FINAL:
                    for attempt in run.attempts:
                        print(
                            f"attempt {attempt.number}: {pb.RunState.Name(attempt.state)} "
                            f"on {attempt.worker_id}: {attempt.stdout_tail.strip()!r}"
                        )
                    print(f"run {run.id}: {pb.RunState.Name(run.state)}")
                    return 0 if run.state == pb.RUN_STATE_SUCCEEDED else 1
                time.sleep(2)
            print("the run did not finish in time", file=sys.stderr)
            return 1
        finally:
            stub.DeleteJob(pb.DeleteJobRequest(job_id=job), metadata=metadata, timeout=30)


if __name__ == "__main__":
    sys.exit(main())
