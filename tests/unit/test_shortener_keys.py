"""The shortener's pure parts: the keyed Feistel bijection, base62, blocks, the ring, the
spec, URL validation and the objects the operator applies."""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hourglass.cases import Invalid, Platform, Resource
from hourglass.cases.shortener import keys, spec, validation, visits
from hourglass.cases.shortener.objects import CACHE_PASSWORD_ENV, cache_urls, objects
from hourglass.cases.shortener.ring import Ring
from tests.k8s.netpol import Endpoint, allowed

PERM = keys.Permutation(b"0123456789abcdef0123456789abcdef")
ids = st.integers(min_value=0, max_value=keys.DOMAIN - 1)


@given(ids)
def test_the_permutation_is_a_bijection_of_the_key_space(ident: int) -> None:
    key = PERM.key_of(ident)
    assert len(key) == keys.LENGTH and keys.is_generated_shape(key)
    assert PERM.id_of(key) == ident


@given(st.lists(ids, min_size=2, max_size=50, unique=True))
def test_distinct_ids_never_share_a_key(chosen: list[int]) -> None:
    assert len({PERM.key_of(i) for i in chosen}) == len(chosen)


@given(st.integers(min_value=0, max_value=keys.DOMAIN - 1))
def test_base62_round_trips(number: int) -> None:
    assert keys.decode(keys.encode(number)) == number


def test_consecutive_ids_give_unrelated_keys_and_the_secret_matters() -> None:
    first = [PERM.key_of(i) for i in range(1000)]
    # No shared prefix run as a counter would give: keys spread over the first character.
    assert len({key[0] for key in first}) > 40
    other = keys.Permutation(b"another secret of 32 bytes......")
    assert sum(a == other.key_of(i) for i, a in enumerate(first)) == 0
    with pytest.raises(ValueError, match="spent"):
        PERM.key_of(keys.DOMAIN)


def test_blocks_from_a_sequence_never_overlap() -> None:
    spans = [keys.block_ids(n, 1000) for n in range(1, 6)]
    assert [(b.next, b.end) for b in spans] == [(i * 1000, (i + 1) * 1000) for i in range(5)]
    block = keys.block_ids(3, 2)
    assert [block.take(), block.take()] == [4, 5]
    with pytest.raises(LookupError):
        block.take()


def test_a_million_keys_from_one_permutation_do_not_collide_at_ci_size() -> None:
    """The full 1,000,000 with HOURGLASS_SHORTENER_KEYS=1000000 (the server-side version, with
    4 replicas leasing blocks, is tests/integration/test_shortener.py)."""
    count = int(os.environ.get("HOURGLASS_SHORTENER_KEYS") or 100_000)
    made = {PERM.key_of(i) for i in range(count)}
    assert len(made) == count


def test_adding_a_shard_moves_about_one_nth_of_the_keys_and_only_to_it() -> None:
    sample = [PERM.key_of(i) for i in range(20_000)]
    for n in (2, 4, 8):
        before = Ring([f"redis://cache-{i}:6379/0" for i in range(n)])
        new = f"redis://cache-{n}:6379/0"
        after = Ring([*before.shards, new])
        moved = [key for key in sample if before.shard(key) != after.shard(key)]
        assert all(after.shard(key) == new for key in moved)
        share = len(moved) / len(sample)
        assert abs(share - 1 / (n + 1)) < 0.35 / (n + 1), (n, share)
        # The order the URLs are given in does not matter.
        assert Ring(reversed(after.shards)).shard(sample[0]) == after.shard(sample[0])


SPEC = spec.parse({"baseUrl": "https://sho.rt", "hosts": ["s.example.com"]})
OWN = validation.own_hosts(SPEC, "127.0.0.1:8080")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("", "is required"),
        ("example.com/x", "absolute"),
        ("javascript:alert(1)", "not allowed"),
        ("ftp://example.com/f", "not allowed"),
        ("https://sho.rt/abc", "redirect to itself"),
        ("https://SHO.RT./abc", "redirect to itself"),
        ("http://s.example.com/x", "redirect to itself"),
        ("http://localhost:8080/x", "redirect to itself"),
        ("https://user:pw@example.com/", "user:password@"),
        ("https://exa mple.com/", "spaces"),
        ("https:///path", "host"),
        ("https://" + "a" * 2100 + ".com", "at most 2048"),
        ("http://[::1/", "not a valid URL"),
    ],
)
def test_bad_urls_are_refused_naming_the_field(url: str, reason: str) -> None:
    with pytest.raises(Invalid, match=reason) as caught:
        validation.url(url, SPEC, OWN)
    assert caught.value.field == "url"


@given(st.text(max_size=300))
def test_any_text_is_accepted_as_a_url_or_refused_with_the_field(text: str) -> None:
    try:
        accepted = validation.url(text, SPEC, OWN)
    except Invalid as exc:
        assert exc.field == "url" and exc.reason
    else:
        assert accepted == text and "\n" not in text and " " not in text


@pytest.mark.parametrize(
    ("alias", "reason"),
    [
        ("ab", "3 to 64"),
        ("abcdefg", "shape of generated keys"),
        ("api", "path of the"),
        ("a/b", "3 to 64"),
    ],
)
def test_aliases_never_take_a_generated_key_or_a_path(alias: str, reason: str) -> None:
    with pytest.raises(Invalid, match=reason):
        validation.alias(alias)
    assert validation.alias("my-link") == "my-link"


def test_the_spec_names_the_field_it_refuses() -> None:
    assert spec.parse({}).redirect == 302
    for bad, field in (
        ({"redirect": 307}, "redirect"),
        ({"schemes": ["gopher"]}, "schemes[0]"),
        ({"cacheShards": 99}, "cacheShards"),
        ({"nope": 1}, "nope"),
        ({"baseUrl": "ftp://x"}, "baseUrl"),
    ):
        with pytest.raises(ValueError, match=rf"spec\.{field.replace('[', '.').replace(']', '.')}"):
            spec.parse(bad)


def test_visits_keep_a_class_and_a_host_only() -> None:
    assert visits.classify("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0) Mobile") == "mobile"
    assert visits.classify("Googlebot/2.1") == "bot"
    assert visits.classify("Mozilla/5.0 (Windows NT 10.0; Win64)") == "desktop"
    assert visits.classify("") == "none"
    assert visits.referrer_host("https://news.example.com/a?b") == "news.example.com"
    assert visits.referrer_host("") == "direct"
    rows = [("k1", 5, "https://a.example/x", "curl/8")]
    assert visits.decode(visits.encode(rows)) == [("k1", 5, "a.example", "bot")]


def _by(made: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(m["kind"], m["metadata"]["name"]): m for m in made}


def test_objects_are_a_read_and_a_write_service_the_jobs_and_the_cache_shards() -> None:
    resource = Resource("links", "team", "u", 1, {"cacheShards": 3, "readReplicas": 4})
    made = _by(objects(resource, Platform("img", "sec", "etcd:2379")))
    assert {name for kind, name in made if kind == "Deployment"} == {
        "url-links-write",
        "url-links-read",
        "url-links-cache-0",
        "url-links-cache-1",
        "url-links-cache-2",
    }
    read = made[("Deployment", "url-links-read")]
    assert read["spec"]["replicas"] == 4
    args = read["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:2] == ["serve", "shortener"] and args[-2:] == ["--role", "read"]
    purge = made[("ScheduledJob", "url-links-purge")]["spec"]["task"]["args"]
    assert purge == ["shortener", "purge", "--server", "url-links-write.team.svc:50051"]
    assert ("ScheduledJob", "url-links-rollup") in made
    cache = made[("Deployment", "url-links-cache-2")]["spec"]["template"]["spec"]
    assert cache["containers"][0]["args"][0] == "/etc/hourglass/cache/redis.conf"
    assert "requirepass" not in str(cache["containers"][0])  # never in a process list
    assert {"key": "redis.conf", "path": "redis.conf"} in cache["volumes"][-1]["secret"]["items"]
    env = {e["name"]: e for e in read["spec"]["template"]["spec"]["containers"][0]["env"]}
    ref = env[CACHE_PASSWORD_ENV]["valueFrom"]["secretKeyRef"]
    assert (ref["name"], ref["key"]) == ("sec", "redis-password")
    with pytest.raises(ValueError, match=r"spec\.redirect"):
        objects(Resource("x", "team", "u", 1, {"redirect": 303}), Platform("i", "s", "e"))


def test_the_cache_shards_admit_only_the_resources_own_servers_and_need_a_password() -> None:
    """One shard by default (never the platform's fsync-every-write Redis); its
    NetworkPolicy lets this resource's read and write pods in, and nobody else: not a job
    pod wearing the same labels, not another resource's servers."""
    made = _by(objects(Resource("links", "team", "u", 1, {}), Platform("i", "sec", "e")))
    assert ("Deployment", "url-links-cache-0") in made and ("Service", "url-links-cache-0") in made
    parsed = spec.parse({"cacheShards": 2})
    assert cache_urls("links", "team", parsed, "p@ss/w") == [
        f"redis://:p%40ss%2Fw@url-links-cache-{i}.team.svc:6379/0" for i in range(2)
    ]
    assert cache_urls("links", "", parsed, "pw") == []  # outside a cluster: the given Redis
    policies = [m for (kind, _), m in made.items() if kind == "NetworkPolicy"]
    assert [p["metadata"]["name"] for p in policies] == ["url-links-cache"]

    def pod(component: str, instance: str = "links", **extra: str) -> Endpoint:
        labels = {"app.kubernetes.io/name": "shortener", "app.kubernetes.io/instance": instance,
                  "app.kubernetes.io/component": component, **extra}  # fmt: skip
        return Endpoint("10.0.0.9", "team", labels)

    shard = pod("cache-0")
    for source, admitted in (
        (pod("read"), True),
        (pod("write"), True),
        (pod("read", **{"hourglass.io/run": "r1"}), False),  # a job pod dressed up
        (pod("read", instance="other"), False),
        (pod("purge"), False),
        (Endpoint("10.0.0.7", "other", {}), False),
    ):
        assert allowed(policies, source, shard, 6379) is admitted, source
    assert allowed(policies, pod("cache-0"), pod("read"), 8080)  # the servers stay open


def test_a_delete_token_belongs_to_one_key_and_one_secret() -> None:
    secret, other = b"s" * 32, b"t" * 32
    token = keys.delete_token(secret, "abcDEF1")
    assert len(token) == 22 and keys.token_matches(secret, "abcDEF1", token)
    assert not keys.token_matches(secret, "abcDEF2", token)
    assert not keys.token_matches(other, "abcDEF1", token)
    assert not keys.token_matches(secret, "abcDEF1", token[:-1])
    assert not keys.token_matches(secret, "abcDEF1", "")
