"""The CLI's decisions, with no server: what a word names, output formats, exit codes, help,
flags and shell completion."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import yaml

from hourglass import ids
from hourglass.cli import addressing, exit_codes, main, output
from hourglass.cli.addressing import Candidate, Lookup
from hourglass.cli.exit_codes import Failure
from hourglass.v1 import scheduler_pb2 as pb

JOB = "3f2a9c41-5b6d-4e7f-8a9b-0c1d2e3f4a5b"


def test_a_whole_id_is_taken_as_is_in_any_spelling() -> None:
    assert addressing.full_id(JOB) == JOB
    assert addressing.full_id(JOB.upper()) == JOB
    assert addressing.full_id(JOB.replace("-", "")) == JOB
    assert addressing.full_id("3f2a9c41") is None
    assert addressing.full_id("hello") is None


def test_every_reading_of_a_word_is_looked_up() -> None:
    assert addressing.lookups("hello") == [Lookup(name="hello")]
    # NAMESPACE/NAME, and the operator's own job names (`<k8s namespace>/<name>`).
    assert addressing.lookups("team-a/hello") == [
        Lookup(name="team-a/hello"),
        Lookup(name="hello", namespace="team-a"),
    ]
    # A hex word may be a name or an id prefix; upper case is a prefix too.
    assert addressing.lookups("CAFE") == [Lookup(name="CAFE"), Lookup(id_prefix="cafe")]
    assert addressing.lookups("3f2a9c41-5b") == [
        Lookup(name="3f2a9c41-5b"),
        Lookup(id_prefix="3f2a9c41-5b"),
    ]
    assert addressing.lookups("abc") == [Lookup(name="abc")]  # too short for a prefix


def test_one_match_is_the_answer_whichever_readings_found_it() -> None:
    found = [Candidate(JOB, "default/hello  active"), Candidate(JOB, "default/hello  active")]
    assert addressing.choose("hello", kind="job", candidates=found) == JOB


def test_no_match_is_not_found_exit_3() -> None:
    with pytest.raises(Failure) as raised:
        addressing.choose("hello", kind="job", candidates=[])
    assert raised.value.code == exit_codes.NOT_FOUND == 3
    assert str(raised.value) == "job 'hello' not found"
    with pytest.raises(Failure) as raised:
        addressing.choose("xyz", kind="run", candidates=[])
    assert raised.value.code == 3 and "4+ of its first hex digits" in str(raised.value)


def test_more_than_one_match_is_refused_listing_the_candidates_exit_2() -> None:
    other = str(uuid.uuid4())
    found = [Candidate(JOB, "default/hello  active"), Candidate(other, "default/hello  paused")]
    with pytest.raises(Failure) as raised:
        addressing.choose("hello", kind="job", candidates=found, more=True)
    assert raised.value.code == exit_codes.USAGE == 2
    message = str(raised.value)
    assert message.startswith("job 'hello' is ambiguous: it names 2+ jobs")
    assert f"  {JOB}  default/hello  active" in message
    assert f"  {other}  default/hello  paused" in message


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("3f2a", None),
        ("3f2a9c41-5b6d", None),
        (JOB, None),
        ("3f2", "has 3 hex digits: give at least 4"),
        ("3f2a9c41b", "needs a dash at position 9, as in an id"),
        ("3F2A", "has 'F': an id prefix holds only lowercase hex digits and dashes"),
        ("-3f2a", "has '-': an id prefix holds only lowercase hex digits and dashes"),
        (JOB + "0", "is longer than an id"),
    ],
)
def test_what_an_id_prefix_is(text: str, problem: str | None) -> None:
    assert ids.prefix_problem(text) == problem


def test_a_prefix_spans_exactly_the_ids_that_start_with_it() -> None:
    low, high = ids.prefix_range("3f2a9c41-5b")
    assert str(low) == "3f2a9c41-5b00-0000-0000-000000000000"
    assert str(high) == "3f2a9c41-5bff-ffff-ffff-ffffffffffff"
    for _ in range(200):
        value = uuid.uuid4()
        inside = str(value).startswith("3f2a9c41-5b")
        assert (low <= value <= high) == inside
    with pytest.raises(ValueError, match="give at least 4"):
        ids.prefix_range("3f2")


def _job() -> pb.Job:
    job = pb.Job(id=JOB, namespace="default", state=pb.JOB_STATE_ACTIVE, revision=2)
    job.spec.name = "hello"
    job.spec.task.command.append("true")
    job.spec.schedule.every.interval.FromSeconds(60)
    return job


def test_json_and_yaml_read_back_as_the_same_data() -> None:
    reply = pb.ListJobsResponse(jobs=[_job()])
    as_json = json.loads(output.render("json", reply, table=lambda: "no"))
    as_yaml = yaml.safe_load(output.render("yaml", reply, table=lambda: "no"))
    assert as_json == as_yaml
    assert as_json["jobs"][0]["id"] == JOB and as_json["jobs"][0]["state"] == "JOB_STATE_ACTIVE"
    assert as_json["jobs"][0]["spec"]["schedule"]["every"]["interval"] == "60s"


def test_table_and_wide_are_for_people_and_wide_falls_back_to_table() -> None:
    assert output.render("table", {}, table=lambda: "T", wide=lambda: "W") == "T"
    assert output.render("wide", {}, table=lambda: "T", wide=lambda: "W") == "W"
    assert output.render("wide", {}, table=lambda: "T") == "T"


def test_a_stream_is_one_json_object_per_line_or_one_yaml_document_each() -> None:
    event = pb.WatchJobResponse(job=_job())
    line = output.stream_item("json", event, table=lambda: "T")
    assert "\n" not in line and json.loads(line)["job"]["id"] == JOB
    documents = "\n".join(output.stream_item("yaml", event, table=lambda: "T") for _ in range(2))
    assert [d["job"]["id"] for d in yaml.safe_load_all(documents)] == [JOB, JOB]


def test_jobs_wide_shows_more_columns_than_the_table() -> None:
    from hourglass.cli import views

    table, wide = views.jobs_table([_job()]), views.jobs_table([_job()], wide=True)
    assert table.splitlines()[0].split() == ["JOB", "NAME", "SCHEDULE", "STATE", "NEXT", "FIRE"]
    assert "NAMESPACE" in wide.splitlines()[0] and "REVISION" in wide.splitlines()[0]
    assert "default" in wide.splitlines()[1]


@pytest.mark.parametrize(
    ("code", "exit"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, 2),
        (grpc.StatusCode.NOT_FOUND, 3),
        (grpc.StatusCode.UNAVAILABLE, 4),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 4),
        (grpc.StatusCode.UNAUTHENTICATED, 5),
        (grpc.StatusCode.PERMISSION_DENIED, 5),
        (grpc.StatusCode.FAILED_PRECONDITION, 6),
        (grpc.StatusCode.ALREADY_EXISTS, 6),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 6),
        (grpc.StatusCode.INTERNAL, 1),
        (grpc.StatusCode.UNKNOWN, 1),
    ],
)
def test_api_failures_map_to_documented_exit_codes(code: grpc.StatusCode, exit: int) -> None:
    assert exit_codes.for_status(code) == exit
    assert exit in dict(exit_codes.TABLE)


def test_not_found_and_unreachable_never_share_an_exit_code() -> None:
    codes = [code for code, _ in exit_codes.TABLE]
    assert len(codes) == len(set(codes))
    assert exit_codes.NOT_FOUND != exit_codes.UNREACHABLE


def test_the_top_level_help_ends_with_the_exit_code_table(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as raised:
        main.main(["--help"])
    assert raised.value.code == 0
    text = capsys.readouterr().out
    assert "exit codes:" in text
    for code, _ in exit_codes.TABLE:
        assert f"\n  {code:<4} " in text


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib import metadata

    with pytest.raises(SystemExit) as raised:
        main.main(["--version"])
    assert raised.value.code == 0
    assert capsys.readouterr().out.strip() == f"hourglass {metadata.version('hourglass')}"


def _commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from _commands(sub, (*path, name))


def test_every_command_has_a_description_and_examples() -> None:
    found = list(_commands(main.build_parser()))
    assert len(found) > 30
    for path, parser in found:
        name = " ".join(path)
        assert parser.description and len(parser.description) > 10, f"{name}: no description"
        epilog = parser.epilog or ""
        assert epilog.startswith("examples:\n"), f"{name}: no examples"
        examples = epilog.splitlines()[1:]
        assert examples, f"{name}: no examples"
        assert all("hourglass " in line for line in examples), f"{name}: {examples}"
        # Each example names the command it illustrates.
        assert any(f"hourglass {name}" in line for line in examples), f"{name}: {examples}"


def _options(parser: argparse.ArgumentParser, flag: str) -> Iterator[tuple[str, argparse.Action]]:
    for path, sub in _commands(parser):
        for action in sub._actions:
            if flag in action.option_strings:
                yield " ".join(path), action


def test_namespace_means_the_tenant_wherever_it_is_shown() -> None:
    shown = [
        (name, action)
        for name, action in _options(main.build_parser(), "--namespace")
        if action.help != argparse.SUPPRESS
    ]
    assert {name for name, _ in shown} >= {"token create", "quota get", "quota set"}
    for name, action in shown:
        assert "tenant" in (action.help or ""), name


@pytest.mark.parametrize(
    ("args", "dest", "value"),
    [
        (["worker", "--job-namespace", "jobs"], "job_namespace", "jobs"),
        (["serve", "probe", "--name", "x", "--resource-namespace", "r"], "resource_namespace", "r"),
        (
            ["operator", "--watch-namespace", "a", "--watch-namespace", "b"],
            "namespaces",
            ["a", "b"],
        ),
    ],
)
def test_kubernetes_namespaces_have_a_flag_named_for_their_role(
    args: list[str], dest: str, value: object, capsys: pytest.CaptureFixture[str]
) -> None:
    assert getattr(main.build_parser().parse_args(args), dest) == value
    assert "deprecated" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "dest", "value", "new"),
    [
        (["worker", "--namespace", "jobs"], "job_namespace", "jobs", "--job-namespace"),
        (
            ["operator", "--namespace", "a", "--namespace", "b"],
            "namespaces",
            ["a", "b"],
            "--watch-namespace",
        ),
        (["serve", "probe", "--name", "x", "--namespace", "r"], "resource_namespace", "r", None),
    ],
)
def test_the_old_namespace_spelling_still_works_with_a_warning(
    args: list[str], dest: str, value: object, new: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert getattr(main.build_parser().parse_args(args), dest) == value
    err = capsys.readouterr().err
    assert "--namespace is deprecated here; use " + (new or "--resource-namespace") in err


def _complete(script: Path, words: list[str]) -> list[str]:
    """What bash offers after `words` (the last one being completed), from the script."""
    quoted = " ".join(f"'{w}'" for w in words)
    program = f"""
source {script}
COMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}
COMP_LINE="{" ".join(words)}"; COMP_POINT=${{#COMP_LINE}}
$(complete -p hourglass | sed -E 's/.* -F ([^ ]+) .*/\\1/')
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    done = subprocess.run(
        ["bash", "--norc", "-c", program], capture_output=True, text=True, check=True
    )
    return sorted(filter(None, done.stdout.split("\n")))


@pytest.fixture(scope="module")
def bash_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The script as a user gets it: from the installed command, in a real bash."""
    script = tmp_path_factory.mktemp("completion") / "hourglass.bash"
    done = subprocess.run(
        [sys.executable, "-m", "hourglass.cli.main", "completion", "bash"],
        capture_output=True,
        text=True,
        check=True,
    )
    script.write_text(done.stdout)
    return script


def test_bash_completion_completes_commands_options_and_choices(bash_script: Path) -> None:
    assert _complete(bash_script, ["hourglass", "sch"]) == ["schedule"]
    assert _complete(bash_script, ["hourglass", "st"]) == ["status"]
    assert _complete(bash_script, ["hourglass", "status", "--ou"]) == ["--output"]
    assert _complete(bash_script, ["hourglass", "jobs", "-o", ""]) == [
        "json", "table", "wide", "yaml",
    ]  # fmt: skip
    assert _complete(bash_script, ["hourglass", "quota", "l"]) == ["list"]
    assert _complete(bash_script, ["hourglass", "completion", ""]) == ["bash", "fish", "zsh"]


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_zsh_and_fish_scripts_name_every_command(shell: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "hourglass.cli.main", "completion", shell],
        capture_output=True,
        text=True,
        check=True,
    )
    for name in ("schedule", "status", "jobs", "completion", "locks"):
        assert name in done.stdout
    checker = shutil.which(shell)
    if checker is not None:  # a syntax check where the shell is installed
        subprocess.run([checker, "-n"], input=done.stdout, text=True, check=True)


def test_watch_lines_end_with_their_cursor_in_wide_and_bookmarks_show_only_there() -> None:
    from hourglass.cli import client

    event = pb.WatchJobResponse(job=_job(), cursor="7301:7305:7302")
    assert client._watch_line(event).startswith(f"job  {JOB}")  # type: ignore[union-attr]
    assert "cursor" not in client._watch_line(event)  # type: ignore[operator]
    assert client._watch_line(event, wide=True).endswith("  cursor 7301:7305:7302")  # type: ignore[union-attr]
    bookmark = pb.WatchJobResponse(cursor="7310:7310:")
    assert client._watch_line(bookmark) is None
    assert client._watch_line(bookmark, wide=True) == "bookmark  cursor 7310:7310:"
    parsed = main.build_parser().parse_args(["watch", JOB, "--since-cursor", "7301:7305:7302"])
    assert parsed.since_cursor == "7301:7305:7302"
