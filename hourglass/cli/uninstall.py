"""`hourglass operator-cleanup resources|lease`: what the chart's uninstall hooks run
(hourglass.operator.uninstall says why). The Kubernetes credentials are the pod's service
account, else $KUBECONFIG, as for the operator.

Exit codes: 0 once nothing is left, even when the operator did not finish in time (the
resources it left lose its finalizer, named in the log and the last line), so that a hook never
fails an uninstall for an operator that is gone; 2 bad input; 1 an API error.
"""

from __future__ import annotations

import argparse
from typing import Any

from hourglass.cli.options import command

COMMANDS = ("operator-cleanup",)


def add_parser(commands: Any) -> None:
    parser = command(
        commands,
        "operator-cleanup",
        help="delete the operator's resources and Lease (the chart's uninstall hooks)",
        description="Before `helm uninstall` deletes the operator: delete every ScheduledJob"
        " and case resource of the watched namespaces and wait until the operator has"
        " finalized them (`resources`). After it: delete the operator's Lease once its pods"
        " are gone (`lease`).",
        examples=[
            "hourglass operator-cleanup resources --watch-namespace team-a --plural scheduledjobs",
            "hourglass operator-cleanup lease --lease-namespace hourglass"
            " --pod-selector app.kubernetes.io/component=operator",
        ],
    )
    parser.add_argument("what", choices=("resources", "lease"))
    parser.add_argument(
        "--watch-namespace",
        dest="namespaces",
        action="append",
        default=[],
        metavar="K8S_NAMESPACE",
        help="the operator's watched namespace (repeatable; default: every namespace)",
    )
    parser.add_argument(
        "--plural",
        dest="plurals",
        action="append",
        default=[],
        help="a hourglass.io resource to delete (repeatable; default: scheduledjobs)",
    )
    parser.add_argument("--lease", default="hourglass-operator", help="the Lease's name")
    parser.add_argument(
        "--lease-namespace", default="", help="where it lives (default: this pod's namespace)"
    )
    parser.add_argument(
        "--pod-selector",
        default="",
        help="label selector of the operator's pods, waited for before the Lease goes",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        help="seconds to wait for the operator before acting without it (default 120)",
    )


def run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from hourglass.operator import kube, leader, uninstall

    if args.timeout < 0:
        parser.error("--timeout: must be 0 or more seconds")
    api = kube.api_client()
    if args.what == "resources":
        store = uninstall.Resources(
            api, namespaces=args.namespaces or None, plurals=args.plurals or ["scheduledjobs"]
        )
        forced = uninstall.remove_resources(store, timeout=args.timeout)
        without = f": {', '.join(map(str, forced))}" if forced else ""
        print(f"resources deleted, {len(forced)} without the operator{without}")
        return 0
    if not args.pod_selector:
        parser.error("lease: --pod-selector is required (the operator's pods)")
    gone = uninstall.remove_lease(
        api,
        name=args.lease,
        namespace=args.lease_namespace or leader.own_namespace(),
        pod_selector=args.pod_selector,
        timeout=args.timeout,
    )
    print("lease deleted" + ("" if gone else " while operator pods were still there"))
    return 0
