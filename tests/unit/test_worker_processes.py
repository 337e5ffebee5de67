"""`hourglass worker --processes N`: what each child is told, and bad counts refused."""

from __future__ import annotations

import pytest

from hourglass.cli import main as cli
from hourglass.cli.worker_processes import child_argv, split_slots


def test_each_child_gets_its_slots_id_and_metrics_port() -> None:
    words = [
        "--log-format",
        "json",
        "worker",
        "--processes",
        "2",
        "--concurrency=8",
        "--metrics-listen",
        "0.0.0.0:9100",
        "--worker-id",
        "w",
        "--lease-ttl",
        "5",
    ]
    assert child_argv(words, index=1, slots=4, worker_id="w", metrics="0.0.0.0:9100") == [
        "--log-format",
        "json",
        "worker",
        "--lease-ttl",
        "5",
        "--concurrency",
        "4",
        "--worker-id",
        "w-1",
        "--metrics-listen",
        "0.0.0.0:9101",
    ]


def test_slots_are_split_as_evenly_as_possible() -> None:
    assert split_slots(8, 2) == [4, 4]
    assert split_slots(7, 3) == [3, 2, 2]


@pytest.mark.parametrize(("processes", "concurrency"), [(0, 8), (3, 2)])
def test_a_process_count_without_a_slot_each_is_refused(
    processes: int, concurrency: int, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(
            [
                "worker",
                "--database-url",
                "postgresql://nowhere/db",
                "--etcd",
                "127.0.0.1:1",
                "--processes",
                str(processes),
                "--concurrency",
                str(concurrency),
            ]
        )
    assert exited.value.code == 2
    assert "--processes" in capsys.readouterr().err
