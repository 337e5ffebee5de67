"""Callers that are Kubernetes service accounts: their tokens checked with TokenReview.

In a cluster the operator needs an API token. Rather than an hourglass token that someone
makes and copies into a Secret, the operator sends the token of its own service account,
projected into its pod by the kubelet with the audience the API expects (and rotated by it).
The API asks the cluster's API server whether the token is valid for that audience
(`authentication.k8s.io/v1` TokenReview, which needs `create tokenreviews`), and maps the
service account it names to an hourglass namespace through `--kubernetes-service-account
NAMESPACE/NAME=HOURGLASS_NAMESPACE`. Any other service account, a token for another audience,
an expired or deleted one: UNAUTHENTICATED.

Reviews (accepted and refused) are cached for `cache_seconds`, keyed by the token's sha256, so
a busy client costs no review per call and random tokens cannot make the API flood the
Kubernetes API server. Tokens are never logged; neither is the API server's refusal text in
full (it may quote claims).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from kubernetes import client, config

from hourglass.api.auth import Authenticator, bearer
from hourglass.store.tokens import PREFIX as HOURGLASS_TOKEN_PREFIX

log = logging.getLogger(__name__)

DEFAULT_AUDIENCE = "hourglass"
DEFAULT_CACHE_SECONDS = 10.0
SERVICE_ACCOUNT_USER = "system:serviceaccount:"
_MAX_CACHED = 10_000


def parse_mapping(text: str) -> tuple[str, str]:
    """`NAMESPACE/NAME=HOURGLASS_NAMESPACE` -> ("NAMESPACE/NAME", "HOURGLASS_NAMESPACE");
    ValueError naming what is wrong."""
    account, equals, namespace = text.partition("=")
    sa_namespace, slash, name = account.partition("/")
    if not (equals and slash and sa_namespace and name and namespace) or "/" in name:
        raise ValueError(
            f"{text!r}: use NAMESPACE/SERVICE_ACCOUNT=HOURGLASS_NAMESPACE,"
            " e.g. hourglass/hourglass-operator=default"
        )
    return f"{sa_namespace}/{name}", namespace


@dataclass(frozen=True, slots=True)
class Review:
    """What the cluster said about one token: the hourglass namespace, or why not."""

    namespace: str | None
    reason: str = ""


def kubernetes_client() -> client.ApiClient:
    """The pod's service account in a cluster, else $KUBECONFIG or ~/.kube/config."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=os.environ.get("KUBECONFIG") or None, client_configuration=configuration
        )
    return client.ApiClient(configuration)


class ServiceAccounts:
    """Authenticates Kubernetes service account tokens by TokenReview."""

    recheck_interval: float

    def __init__(
        self,
        api: client.ApiClient,
        *,
        accounts: Mapping[str, str],
        audience: str = DEFAULT_AUDIENCE,
        cache_seconds: float = DEFAULT_CACHE_SECONDS,
    ) -> None:
        if not accounts:
            raise ValueError("no service account is mapped to a namespace")
        if not audience:
            raise ValueError("the audience must not be empty")
        if cache_seconds <= 0:
            raise ValueError(f"cache_seconds must be positive, got {cache_seconds}")
        self.reviews: Any = client.AuthenticationV1Api(api)
        self.accounts = dict(accounts)
        self.audience = audience
        self.cache_seconds = cache_seconds
        self.recheck_interval = cache_seconds / 2
        self._cache: dict[bytes, tuple[float, Review]] = {}

    async def review(self, token: str, *, max_age: float | None = None) -> Review:
        key = hashlib.sha256(token.encode()).digest()
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and now - cached[0] < (max_age or self.cache_seconds):
            return cached[1]
        result = await asyncio.to_thread(self._review, token)
        if len(self._cache) >= _MAX_CACHED:
            self._cache.clear()
        self._cache[key] = (now, result)
        return result

    def _review(self, token: str) -> Review:
        body = client.V1TokenReview(
            spec=client.V1TokenReviewSpec(token=token, audiences=[self.audience])
        )
        try:
            status = self.reviews.create_token_review(body).status
        except (client.ApiException, OSError) as error:
            # Not cached as a refusal of the token: the cluster could not tell.
            code = getattr(error, "status", None)
            log.warning("TokenReview failed (%s)", code or type(error).__name__)
            raise ReviewUnavailable(
                f"the Kubernetes API could not review the token ({code})"
            ) from None
        if not status.authenticated:
            return Review(
                None,
                "Kubernetes did not accept the token (expired, deleted, or"
                f" not for audience {self.audience!r})",
            )
        if self.audience not in (status.audiences or ()):
            return Review(None, f"the token is not for audience {self.audience!r}")
        username = str(status.user.username or "")
        if not username.startswith(SERVICE_ACCOUNT_USER):
            return Review(None, "the token is not a service account's")
        account = "/".join(username.removeprefix(SERVICE_ACCOUNT_USER).split(":", 1))
        namespace = self.accounts.get(account)
        if namespace is None:
            log.info("refused service account %s: not mapped to a namespace", account)
            return Review(None, f"service account {account} may not use this API")
        return Review(namespace)


class ReviewUnavailable(Exception):
    """The Kubernetes API server did not answer the review."""


class Combined:
    """hourglass tokens (`hg_...`) from the database; any other bearer token as a Kubernetes
    service account token."""

    def __init__(self, tokens: Authenticator, accounts: ServiceAccounts) -> None:
        self.tokens = tokens
        self.accounts = accounts
        self.recheck_interval = min(tokens.recheck_interval, accounts.recheck_interval)

    async def namespace(self, context: grpc.aio.ServicerContext[Any, Any]) -> str:
        return await self._resolve(context, recheck=False)

    async def recheck(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await self._resolve(context, recheck=True)

    async def _resolve(self, context: grpc.aio.ServicerContext[Any, Any], *, recheck: bool) -> str:
        token = bearer(context)
        if not token or token.startswith(HOURGLASS_TOKEN_PREFIX):
            if recheck:
                await self.tokens.recheck(context)
                return ""
            return await self.tokens.namespace(context)
        max_age = self.accounts.recheck_interval if recheck else None
        try:
            review = await self.accounts.review(token, max_age=max_age)
        except ReviewUnavailable as error:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(error))
        if review.namespace is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, review.reason)
        assert review.namespace is not None
        return review.namespace
