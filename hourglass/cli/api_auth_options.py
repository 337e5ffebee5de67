"""The API's options for Kubernetes service account callers (checked with TokenReview).

Kept apart from the other component flags because they parse into a mapping that
`api/kube_auth.py` owns: `NAMESPACE/NAME=HG_NAMESPACE`, from flags or from the environment,
where a bad entry must be refused with the same message either way.
"""

from __future__ import annotations

import argparse

from hourglass.cli.options import env


def _service_account(text: str) -> tuple[str, str]:
    from hourglass.api import kube_auth

    try:
        return kube_auth.parse_mapping(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--kubernetes-service-account {exc}") from None


def add(api: argparse.ArgumentParser) -> None:
    api.add_argument(
        "--kubernetes-service-account",
        action="append",
        type=_service_account,
        default=[m for m in env("HOURGLASS_KUBERNETES_SERVICE_ACCOUNTS").split(",") if m],
        dest="service_accounts",
        metavar="NAMESPACE/NAME=HG_NAMESPACE",
        help="accept this Kubernetes service account's own token (checked with TokenReview"
        " against the cluster) as a caller in namespace HG_NAMESPACE; repeatable (env"
        " HOURGLASS_KUBERNETES_SERVICE_ACCOUNTS, comma-separated)",
    )
    api.add_argument(
        "--kubernetes-token-audience",
        default=env("HOURGLASS_KUBERNETES_TOKEN_AUDIENCE", "hourglass"),
        help="the audience those tokens must be issued for (default hourglass)",
    )


def service_accounts(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, str]:
    """The API's service account mappings; those from the environment are checked here."""
    pairs: dict[str, str] = {}
    for item in getattr(args, "service_accounts", []):
        try:
            account, namespace = item if isinstance(item, tuple) else _service_account(item)
        except argparse.ArgumentTypeError as exc:
            parser.error(f"HOURGLASS_KUBERNETES_SERVICE_ACCOUNTS: {exc}")
        pairs[account] = namespace
    return pairs
