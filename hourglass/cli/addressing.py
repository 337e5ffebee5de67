"""Which job or run a word on the command line means.

A job is named by its id, by a unique prefix of its id (4+ hex digits, as `hourglass jobs`
prints them), by its name (`hello`: in the caller's namespace, the token's; "default" on a
server without tokens), or by NAMESPACE/NAME (`team-a/hello`). The operator names the jobs it
makes `<kubernetes-namespace>/<scheduledjob>`, so `ux2/hello` also finds the job of the
ScheduledJob ux2/hello. A run is named by its id or a unique prefix of it.

Every reading that matches counts: one match is the answer, none is "not found" (exit 3), and
more than one is refused with the candidates listed (exit 2), never a guess. The decisions are
plain functions (`lookups`, `choose`); `resolve_job` and `resolve_run` ask the API for the
candidates of each lookup (ListJobs and ListRuns filter by name and by id prefix)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from hourglass import describe, ids
from hourglass.cli import exit_codes
from hourglass.cli.exit_codes import Failure
from hourglass.v1 import scheduler_pb2 as pb
from hourglass.v1 import scheduler_pb2_grpc as pb_grpc

# Candidates asked for per lookup: enough to list, few enough to read.
MAX_CANDIDATES = 10


@dataclass(frozen=True)
class Lookup:
    """One reading of the word: a filter for ListJobs, and the namespace a match must be in."""

    name: str = ""
    id_prefix: str = ""
    namespace: str | None = None


@dataclass(frozen=True)
class Candidate:
    id: str
    label: str


def full_id(text: str) -> str | None:
    """The canonical id when `text` is a whole UUID (any case, with or without dashes)."""
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return None


def lookups(text: str) -> list[Lookup]:
    """Every way `text` (not a whole id) may name a job."""
    found = [Lookup(name=text)]
    namespace, slash, name = text.partition("/")
    if slash and namespace and name:
        found.append(Lookup(name=name, namespace=namespace))
    if ids.is_prefix(text.lower()):
        found.append(Lookup(id_prefix=text.lower()))
    return found


def choose(text: str, *, kind: str, candidates: list[Candidate], more: bool = False) -> str:
    """The one id `text` names among the candidates that matched one of its readings."""
    unique = list({c.id: c for c in candidates}.values())
    if not unique:
        hint = ""
        if kind == "run" and ids.prefix_problem(text.lower()) is not None:
            hint = f" (a run is named by its id or 4+ of its first hex digits: {text!r}"
            hint += f" {ids.prefix_problem(text.lower())})"
        raise Failure(f"{kind} {text!r} not found{hint}", exit_codes.NOT_FOUND)
    if len(unique) == 1:
        return unique[0].id
    lines = [
        f"{kind} {text!r} is ambiguous: it names {len(unique)}{'+' if more else ''}"
        f" {kind}s. Give more of the id, or NAMESPACE/NAME:"
    ]
    lines += [f"  {c.id}  {c.label}" for c in unique]
    raise Failure("\n".join(lines), exit_codes.USAGE)


def _job_label(job: pb.Job) -> str:
    return f"{job.namespace}/{job.spec.name}  {describe.state(job.state, 'job')}"


def resolve_job(stub: pb_grpc.JobSchedulerStub, text: str) -> str:
    """The id of the job `text` names; raises Failure (not found, ambiguous) otherwise."""
    whole = full_id(text)
    if whole is not None:
        return whole
    if not text:
        raise Failure("give a job: its id, an id prefix, NAME or NAMESPACE/NAME", exit_codes.USAGE)
    candidates: list[Candidate] = []
    more = False
    for lookup in lookups(text):
        reply = stub.ListJobs(
            pb.ListJobsRequest(
                page_size=MAX_CANDIDATES, name=lookup.name, id_prefix=lookup.id_prefix
            ),
            timeout=30,
        )
        more = more or bool(reply.next_page_token)
        candidates += [
            Candidate(job.id, _job_label(job))
            for job in reply.jobs
            if lookup.namespace is None or job.namespace == lookup.namespace
        ]
    return choose(text, kind="job", candidates=candidates, more=more)


def resolve_run(stub: pb_grpc.JobSchedulerStub, text: str) -> str:
    """The id of the run `text` names (its id or a unique prefix of it)."""
    whole = full_id(text)
    if whole is not None:
        return whole
    prefix = text.lower()
    if not ids.is_prefix(prefix):
        return choose(text, kind="run", candidates=[])
    reply = stub.ListRuns(
        pb.ListRunsRequest(id_prefix=prefix, page_size=MAX_CANDIDATES), timeout=30
    )
    candidates = [
        Candidate(
            run.id,
            f"job {run.job_id}  {describe.state(run.state, 'run')}",
        )
        for run in reply.runs
    ]
    return choose(text, kind="run", candidates=candidates, more=bool(reply.next_page_token))
