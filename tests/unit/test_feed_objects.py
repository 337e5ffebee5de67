"""The Feed resource -> the objects the operator applies; the spec's checks; the timeline
members' byte order (cases/feed/timelines.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from hourglass import cases
from hourglass.cases import Platform, Resource
from hourglass.cases.feed import CASE, spec, timelines
from hourglass.cases.feed.objects import objects

PLATFORM = Platform(image="hourglass:1.2.3", secret="hourglass-db", etcd_endpoints="etcd:2379")
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "feed.yaml"


def resource(**fields: Any) -> Resource:
    return Resource(name="social", namespace="web", uid="u-1", generation=1, spec=fields)


def test_the_case_record() -> None:
    assert (CASE.name, CASE.kind, CASE.plural) == ("feed", "Feed", "feeds")
    assert cases.get("feed") is CASE
    assert (CASE.migrations / "migrations" / "0001_initial.sql").exists()


def test_objects_are_a_server_its_service_its_spec_and_two_scheduled_jobs() -> None:
    items = objects(resource(replicas=3), PLATFORM)
    kinds = sorted((i["kind"], i["metadata"]["name"]) for i in items)
    assert kinds == [
        ("ConfigMap", "feed-social-spec"),
        ("Deployment", "feed-social"),
        ("ScheduledJob", "feed-social-prewarm"),
        ("ScheduledJob", "feed-social-trim"),
        ("Service", "feed-social"),
    ]
    deployment = next(i for i in items if i["kind"] == "Deployment")
    assert deployment["spec"]["replicas"] == 3
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"] == cases.server_args("feed", resource(replicas=3))
    env = {e["name"] for e in container["env"]}
    assert {"HOURGLASS_DATABASE_URL", "HOURGLASS_REDIS_URL", "HOURGLASS_ARTIFACTS"} <= env
    for job in (i for i in items if i["kind"] == "ScheduledJob"):
        task = job["spec"]["task"]
        # The job pods call the server's admin RPC: no credentials in them.
        assert task["args"][0] == "feed" and task["args"][2:] == [
            "--server", "feed-social.web.svc:50051",
        ]  # fmt: skip
        assert "env" not in task


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"replicas": 0}, "spec.replicas: must be between 1 and 50"),
        ({"hotThreshold": "many"}, "spec.hotThreshold: must be a whole number"),
        ({"timelineSize": 5}, "spec.timelineSize: must be between 10 and 10000"),
        ({"uploadExpiry": "30s"}, "spec.uploadExpiry: at least 1m"),
        ({"uploadExpiry": "soon"}, "spec.uploadExpiry:"),
        ({"fanout": 3}, "spec.fanout: unknown field"),
    ],
)
def test_a_bad_spec_names_its_field(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        objects(resource(**fields), PLATFORM)


def test_the_example_parses_with_the_defaults_of_the_schema() -> None:
    document = yaml.safe_load(EXAMPLE.read_text())
    assert document["kind"] == "Feed"
    parsed = spec.parse(document["spec"])
    assert parsed == spec.Spec(replicas=1)
    for name, (default, _, _) in spec.INTEGERS.items():
        assert spec.SCHEMA["properties"][name]["default"] == default


def test_members_sort_as_the_timeline_needs() -> None:
    older = timelines.post((5 << 22) + 1, 99)
    newer = timelines.post((6 << 22), 1)
    members = [timelines.hot(3), newer, timelines.COMPLETE, timelines.unfollowed(4, 10), older]
    members.append(timelines.BUILDING)
    assert sorted(members) == [
        older, newer, timelines.unfollowed(4, 10), timelines.hot(3), timelines.BUILDING,
        timelines.COMPLETE,
    ]  # fmt: skip
    # A read from the top: sentinels and markers first, then the newest posts.
    read = timelines.split(sorted(members, reverse=True), now_ms=10)
    assert (read.complete, read.hot, read.gone, read.posts) == (True, {3}, {4}, [newer, older])
    assert timelines.unpost(newer) == (6 << 22, 1)
    # The cursor bound excludes the cursor's own post and every newer one.
    bound = timelines.below(6 << 22)[1:]
    assert older < bound < newer


def test_markers_are_read_and_stale_unfollows_found() -> None:
    now = 10 * timelines.MARKER_TTL_MS
    fresh, old = timelines.unfollowed(7, now - 5), timelines.unfollowed(8, 0)
    hot, gone = timelines.markers([timelines.hot(3), fresh, old], now_ms=now)
    assert (hot, gone) == ({3}, {7})
    assert timelines.stale_markers([timelines.hot(3), fresh, old], now_ms=now) == [old]
