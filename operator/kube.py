"""Credentials for the Kubernetes API, for both kopf and the Lease: the pod's service account
in a cluster, else the kubeconfig named by $KUBECONFIG (read when called, not when the
kubernetes package was imported) or ~/.kube/config."""

from __future__ import annotations

import os
from typing import Any

import kopf
from kubernetes import client, config


def configuration() -> client.Configuration:
    result = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=result)  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=os.environ.get("KUBECONFIG") or None, client_configuration=result
        )
    return result


def api_client() -> client.ApiClient:
    return client.ApiClient(configuration())


def login(**_: Any) -> kopf.ConnectionInfo:
    """A kopf login handler: the same credentials, as kopf's own ConnectionInfo."""
    try:
        conf = configuration()
    except config.ConfigException as error:
        raise kopf.LoginError(f"no Kubernetes credentials: {error}") from None
    # For service accounts this re-reads the (rotated) token file.
    header = conf.get_api_key_with_prefix("BearerToken") or conf.get_api_key_with_prefix(
        "authorization"
    )
    scheme, token = None, None
    if header:
        first, _space, rest = header.partition(" ")
        scheme, token = (first, rest) if rest else (None, first)
    return kopf.ConnectionInfo(
        server=conf.host,
        ca_path=conf.ssl_ca_cert,
        insecure=not conf.verify_ssl,
        username=conf.username or None,
        password=conf.password or None,
        scheme=scheme,
        token=token,
        certificate_path=conf.cert_file,
        private_key_path=conf.key_file,
    )
