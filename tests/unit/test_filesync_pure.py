"""FileSync's pure parts: path safety, conflict-copy names, FastCDC's locality, the spec,
the request checks, and the objects the operator applies."""

from __future__ import annotations

import os
import random
from datetime import date
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hourglass import cases
from hourglass.cases import Platform, Resource
from hourglass.cases.filesync import CASE, chunking, paths, spec, validation
from hourglass.cases.filesync.objects import objects

PLATFORM = Platform(image="ghcr.io/hourglass/hourglass:1.2.3", secret="db", etcd_endpoints="e:2379")


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("", "empty"),
        ("../x", "'..'"),
        ("a/../../x", "'..'"),
        ("/etc/passwd", "absolute"),
        ("a//b", "empty name"),
        ("a/", "empty name"),
        ("./a", "'.'"),
        ("a\x00b", "NUL"),
        ("a\nb", "control"),
        ("a\\b", "backslash"),
        ("e\u0301.txt", "NFC"),
        (".hourglass-sync/state.db", "sync client"),
        ("x" * 256, "255 bytes"),
        ("a/" * 2100 + "b", "4096 bytes"),
    ],
)
def test_unsafe_paths_are_refused_saying_why(path: str, reason: str) -> None:
    with pytest.raises(paths.BadPath, match=reason):
        paths.check(path)
    with pytest.raises(validation.Invalid) as caught:
        validation.path(path, "commits[3].path")
    assert str(caught.value).startswith("commits[3].path: ")


@pytest.mark.parametrize(
    "path", ["a.txt", "docs/Q3 report (final).pdf", "é/ü.md", ".bashrc", "a/.b/c"]
)
def test_ordinary_paths_pass(path: str) -> None:
    assert paths.check(path) == path


@given(st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=5))
def test_property_a_checked_path_never_leaves_its_folder(names: list[str]) -> None:
    path = "/".join(names)
    if not paths.is_safe(path):
        return
    root = "/srv/root"
    joined = os.path.normpath(os.path.join(root, *path.split("/")))
    assert joined.startswith(root + "/")


def test_conflict_copies_are_named_as_dropbox_names_them() -> None:
    day = date(2026, 11, 30)
    assert (
        paths.conflict_copy("docs/report.txt", device="laptop", day=day)
        == "docs/report (laptop's conflicted copy 2026-11-30).txt"
    )
    assert paths.conflict_copy(".bashrc", device="pc", day=day) == (
        ".bashrc (pc's conflicted copy 2026-11-30)"
    )
    assert paths.conflict_copy("a.tar.gz", device="pc", day=day) == (
        "a.tar (pc's conflicted copy 2026-11-30).gz"
    )
    taken = {"n (pc's conflicted copy 2026-11-30)"}
    assert paths.conflict_copy("n", device="pc", day=day, taken=taken) == (
        "n (pc's conflicted copy 2026-11-30 (2))"
    )
    assert paths.is_safe(paths.conflict_copy("x/y.z", device="My Laptop", day=day))


def test_one_inserted_byte_changes_only_the_chunks_around_it() -> None:
    data = random.Random(1).randbytes(8 * 1024 * 1024)
    before = chunking.pieces(data)
    assert all(p.length <= chunking.MAX_SIZE for p in before)
    assert sum(p.length for p in before) == len(data)
    for at in (0, 3_000_000, len(data) - 1):
        after = chunking.pieces(data[:at] + b"\xff" + data[at:])
        new = {p.digest for p in after} - {p.digest for p in before}
        changed = sum(p.length for p in after if p.digest in new)
        assert 1 <= len(new) <= 2 and changed <= 2 * chunking.MAX_SIZE
    assert chunking.pieces(b"") == []


def test_the_spec_defaults_and_refusals() -> None:
    parsed = spec.parse({})
    assert (parsed.keep_versions, parsed.keep_for, parsed.gc_grace) == (100, 30 * 86400, 3600)
    assert parsed.max_chunk_bytes == chunking.LARGEST
    for bad, field in (
        ({"maxChunkBytes": 1000}, "spec.maxChunkBytes"),
        ({"keepFor": "soon"}, "spec.keepFor"),
        ({"baseUrl": "ftp://x"}, "spec.baseUrl"),
        ({"replicas": True}, "spec.replicas"),
        ({"nope": 1}, "spec.nope"),
    ):
        with pytest.raises(ValueError, match=f"^{field}:"):
            spec.parse(bad)


def test_chunks_are_checked_for_shape_and_size_before_anything_is_stored() -> None:
    good = "a" * 64
    with pytest.raises(validation.Invalid, match=r"^chunks\[0\].digest:"):
        validation.chunks([("A" * 64, b"x")], max_chunk=10)
    with pytest.raises(validation.Invalid, match=r"^chunks\[1\].data: 11 bytes"):
        validation.chunks([(good, b"x"), (good, b"x" * 11)], max_chunk=10)
    with pytest.raises(validation.Invalid, match=r"^chunks\[0\].data: must not be empty"):
        validation.chunks([(good, b"")], max_chunk=10)


def resource(**fields: Any) -> Resource:
    return Resource(name="team", namespace="files", uid="u-1", generation=1, spec=fields)


def test_objects_are_a_server_its_service_and_three_scheduled_jobs() -> None:
    assert cases.get("filesync") is CASE and CASE.kind == "FileSync"
    items = objects(resource(replicas=2), PLATFORM)
    kinds = sorted(i["kind"] for i in items)
    assert kinds == ["ConfigMap", "Deployment", "ScheduledJob", "ScheduledJob", "ScheduledJob",
                     "Service"]  # fmt: skip
    (deployment,) = [i for i in items if i["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert deployment["spec"]["replicas"] == 2
    assert container["args"] == cases.server_args("filesync", resource(), http_port=8080)
    assert "HOURGLASS_ARTIFACTS" in {e["name"] for e in container["env"]}
    jobs = {i["metadata"]["name"]: i["spec"]["task"]["args"] for i in items
            if i["kind"] == "ScheduledJob"}  # fmt: skip
    assert jobs == {
        f"fs-team-{a}": ["filesync", a, "--server", "fs-team.files.svc:50051"]
        for a in ("gc", "retention", "expire")
    }
    with pytest.raises(ValueError, match=r"^spec\.keepVersions:"):
        objects(resource(keepVersions=0), PLATFORM)
