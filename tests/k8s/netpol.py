"""Who may connect to whom under a set of NetworkPolicies: the rules of the
networking.k8s.io/v1 API, evaluated in plain Python for the chart tests.

No network plugin runs in the test bed, so the API server stores the chart's NetworkPolicies
but nothing enforces them. This evaluator applies them to pods the way a plugin would, so a
test can ask "may a job pod open PostgreSQL's port?" of the rendered policies. One point the
API leaves to the plugin is whether an `ipBlock` also matches pod IPs; `ip_blocks_match_pods`
chooses, and the tests ask both ways.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

Policy = dict[str, Any]


@dataclass(frozen=True)
class Endpoint:
    """A pod (namespace, labels, IP) or, with no namespace, an address outside the cluster."""

    ip: str
    namespace: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    namespace_labels: dict[str, str] = field(default_factory=dict)

    @property
    def is_pod(self) -> bool:
        return bool(self.namespace)


def selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """A LabelSelector: matchLabels and matchExpressions, all of them."""
    selector = selector or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values") or []
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def _in_block(block: dict[str, Any], ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    cidr = ipaddress.ip_network(block["cidr"])
    if address.version != cidr.version or address not in cidr:
        return False
    return not any(
        address in ipaddress.ip_network(e)
        for e in block.get("except") or []
        if ipaddress.ip_network(e).version == address.version
    )


def _peer_matches(
    peer: dict[str, Any], policy_namespace: str, other: Endpoint, ip_blocks_match_pods: bool
) -> bool:
    if "ipBlock" in peer:
        if other.is_pod and not ip_blocks_match_pods:
            return False
        return _in_block(peer["ipBlock"], other.ip)
    if not other.is_pod:
        return False
    if "namespaceSelector" in peer:
        if not selects(peer["namespaceSelector"], other.namespace_labels):
            return False
    elif other.namespace != policy_namespace:
        return False
    return "podSelector" not in peer or selects(peer["podSelector"], other.labels)


def _port_matches(rule: dict[str, Any], port: int, protocol: str) -> bool:
    ports = rule.get("ports")
    if not ports:
        return True
    return any(
        p.get("protocol", "TCP") == protocol and ("port" not in p or p["port"] == port)
        for p in ports
    )


def _direction_allows(
    policies: list[Policy],
    *,
    subject: Endpoint,
    other: Endpoint,
    kind: str,
    port: int,
    protocol: str,
    ip_blocks_match_pods: bool,
) -> bool:
    """Whether the policies that select `subject` for `kind` (Ingress/Egress) let `other` in
    (or out to it); a pod that no policy selects for `kind` allows everything."""
    if not subject.is_pod:
        return True
    key, peers_key = ("ingress", "from") if kind == "Ingress" else ("egress", "to")
    governing = [
        p
        for p in policies
        if p["metadata"]["namespace"] == subject.namespace
        and selects(p["spec"]["podSelector"], subject.labels)
        and kind in (p["spec"].get("policyTypes") or ["Ingress"])
    ]
    if not governing:
        return True
    for policy in governing:
        for rule in policy["spec"].get(key) or []:
            if not _port_matches(rule, port, protocol):
                continue
            peers = rule.get(peers_key)
            if not peers or any(
                _peer_matches(peer, policy["metadata"]["namespace"], other, ip_blocks_match_pods)
                for peer in peers
            ):
                return True
    return False


def allowed(
    policies: list[Policy],
    source: Endpoint,
    destination: Endpoint,
    port: int,
    *,
    protocol: str = "TCP",
    ip_blocks_match_pods: bool = True,
) -> bool:
    """Whether `source` may open `port` on `destination`: its egress and their ingress."""
    options = {"port": port, "protocol": protocol, "ip_blocks_match_pods": ip_blocks_match_pods}
    return _direction_allows(
        policies, subject=source, other=destination, kind="Egress", **options
    ) and _direction_allows(policies, subject=destination, other=source, kind="Ingress", **options)
