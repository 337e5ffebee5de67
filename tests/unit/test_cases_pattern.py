"""The pure parts of the cases' pattern: schema names, the owned objects' stamping and
pruning, the status conditions, the generated CRDs, scoped DSNs and --case choices."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from psycopg.conninfo import conninfo_to_dict

from hourglass import cases
from hourglass.cli import dev_cases, serve
from hourglass.operator import crds, owned
from hourglass.store import migrate

REPO = Path(__file__).resolve().parents[2]
OWNER = owned.Owner("Leaderboard", "scores", "team", "uid-1", "leaderboard")


def test_schema_names_are_plain_distinct_and_short() -> None:
    assert cases.schema_name("leaderboard", "scores") == "leaderboard_scores"
    assert cases.schema_name("leaderboard", "scores", "team") == "leaderboard_team_scores"
    # "-" and "." become "_": the name gets a hash, so these two never share a schema.
    first = cases.schema_name("leaderboard", "c", "a-b")
    second = cases.schema_name("leaderboard", "b-c", "a")
    assert first != second
    assert first.startswith("leaderboard_a_b_c_") and second.startswith("leaderboard_a_b_c_")
    long = cases.schema_name("leaderboard", "x" * 253, "n" * 63)
    assert len(long) <= 63
    for name in (first, second, long):
        assert migrate.check_schema_name(name) == name


def test_bad_schema_names_are_refused() -> None:
    for bad in ("", "Upper", "1abc", "pg_catalog", "a;drop", "a" * 64):
        with pytest.raises(ValueError, match="schema"):
            migrate.check_schema_name(bad)


def test_a_scoped_dsn_sets_search_path_and_keeps_other_options() -> None:
    dsn = migrate.scoped_dsn("postgresql://u:p@h:5432/db?options=-c%20work_mem%3D4MB", "lb_x")
    assert conninfo_to_dict(dsn)["options"] == "-c work_mem=4MB -c search_path=lb_x"
    assert conninfo_to_dict(dsn)["dbname"] == "db"


def _deployment(**status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "lb", "generation": 2},
        "spec": {"replicas": 2, "template": {"metadata": {"labels": {"app": "lb"}}}},
        "status": status,
    }  # fmt: skip


def test_prepare_makes_objects_the_resources() -> None:
    (deployment, configmap) = owned.prepare(
        [_deployment(), {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}],
        OWNER,
    )
    for body in (deployment, configmap):
        assert body["metadata"]["namespace"] == "team"
        assert body["metadata"]["labels"][owned.OWNER_LABEL] == "uid-1"
        assert body["metadata"]["ownerReferences"] == [
            {"apiVersion": "hourglass.io/v1alpha1", "kind": "Leaderboard", "name": "scores",
             "uid": "uid-1", "controller": True, "blockOwnerDeletion": True}
        ]  # fmt: skip
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert labels == {"app": "lb", owned.SERVER_LABEL: "leaderboard"}


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        ({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}}, "may own only"),
        (
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": "r"},
            },
            "may own only",
        ),
        (
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "c", "namespace": "kube-system"},
            },
            "not the resource's",
        ),
        ({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}, "without metadata.name"),
    ],
)
def test_prepare_refuses_what_a_case_may_not_own(manifest: dict[str, Any], message: str) -> None:
    with pytest.raises(owned.CaseError, match=message):
        owned.prepare([manifest], OWNER)


def test_prepare_refuses_an_object_returned_twice() -> None:
    same = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}
    with pytest.raises(owned.CaseError, match="twice"):
        owned.prepare([same, same], OWNER)


def test_stale_is_what_the_owner_controls_and_no_longer_wants() -> None:
    def found(name: str, uid: str = "uid-1", controller: bool = True) -> dict[str, Any]:
        reference = {"uid": uid, "controller": controller}
        return {"kind": "ConfigMap", "metadata": {"name": name, "ownerReferences": [reference]}}

    desired = [{"kind": "ConfigMap", "metadata": {"name": "keep"}}]
    everything = [found("keep"), found("gone"), found("theirs", uid="uid-2"),
                  found("shared", controller=False)]  # fmt: skip
    assert [m["metadata"]["name"] for m in owned.stale(everything, desired, "uid-1")] == ["gone"]


def _by_type(conditions: list[dict[str, Any]]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in conditions}


def test_conditions_follow_the_deployments() -> None:
    rolling = owned.conditions(None, generation=2, deployments=[_deployment()], now="T1")
    assert _by_type(rolling) == {
        "Ready": ("False", "RollingOut"), "Progressing": ("True", "RollingOut"),
        "Degraded": ("False", "Applied"),
    }  # fmt: skip
    available = _deployment(observedGeneration=2, updatedReplicas=2, availableReplicas=2)
    ready = owned.conditions(rolling, generation=2, deployments=[available], now="T2")
    assert _by_type(ready)["Ready"] == ("True", "Available")
    assert _by_type(ready)["Progressing"] == ("False", "Complete")
    times = {c["type"]: c["lastTransitionTime"] for c in ready}
    assert times == {"Ready": "T2", "Progressing": "T2", "Degraded": "T1"}  # only on change
    assert all(c["observedGeneration"] == 2 for c in ready)
    # A Deployment that stopped progressing degrades the resource.
    deadline = {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
    stuck = _deployment(conditions=[{**deadline, "message": "too slow"}])
    failed = _by_type(owned.conditions(ready, generation=2, deployments=[stuck]))
    assert failed["Degraded"] == ("True", "DeploymentFailed")
    assert failed["Ready"] == ("False", "DeploymentFailed")
    # An old status (the rollout not seen yet) is not available.
    stale = _deployment(observedGeneration=1, updatedReplicas=2, availableReplicas=2)
    assert owned.deployment_state(stale)[0] == "progressing"
    # An apply error wins.
    error = owned.conditions(
        ready, generation=3, deployments=[available], error=("InvalidSpec", "x")
    )
    assert _by_type(error)["Degraded"] == ("True", "InvalidSpec")
    assert _by_type(error)["Ready"] == ("False", "InvalidSpec")


def test_endpoints_name_each_service_port() -> None:
    service = {"metadata": {"name": "lb", "namespace": "team"},
               "spec": {"ports": [{"name": "grpc", "port": 50051}, {"port": 8080}]}}  # fmt: skip
    assert owned.endpoints([service]) == ["grpc=lb.team.svc:50051", "lb.team.svc:8080"]


def test_the_charts_case_crds_are_what_the_generator_makes() -> None:
    folder = REPO / "charts" / "hourglass" / "crds"
    made = crds.chart_crds()
    assert set(made) == {f"{case.plural}.hourglass.io.yaml" for case in cases.every()}
    for filename, document in made.items():
        assert (folder / filename).read_text() == crds.render(document), (
            f"{filename} is stale: run python -m hourglass.operator.crds"
        )


def test_the_leaderboard_crd_has_the_specs_fields_defaults_and_bounds() -> None:
    from hourglass.cases.leaderboard import buckets, spec

    leaderboard = crds.for_case(cases.get("leaderboard"))
    assert leaderboard["spec"]["names"]["shortNames"] == ["lb"]
    (version,) = leaderboard["spec"]["versions"]
    assert (version["name"], leaderboard["spec"]["group"]) == (owned.VERSION, owned.GROUP)
    fields = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert set(fields) == {"retention", "buckets", "replicas"}
    # The defaults the API server fills in are the ones spec.parse assumes when a field is
    # missing, so a resource means the same to both.
    defaults = {name: field["default"] for name, field in fields.items()}
    assert spec.parse(defaults) == spec.parse({})
    assert defaults["buckets"] == list(buckets.DEFAULT_BUCKETS)
    assert fields["replicas"]["maximum"] == spec.MAX_REPLICAS
    assert fields["buckets"]["maxItems"] == buckets.MAX_LEVELS
    with pytest.raises(ValueError, match=r"spec\.replicas"):
        spec.parse({"replicas": fields["replicas"]["maximum"] + 1})


def test_the_server_args_and_env_are_what_serve_reads() -> None:
    resource = cases.Resource(name="scores", namespace="team", uid="u", generation=1,
                              spec={"b": 1, "a": [1]})  # fmt: skip
    args = cases.server_args("leaderboard", resource, http_port=8080)
    parsed = cli_parse(args)
    expected = ("leaderboard", "scores", "team")
    assert (parsed.case, parsed.name, parsed.resource_namespace) == expected
    assert str(parsed.spec) == cases.SPEC_FILE
    assert (parsed.listen, parsed.http_listen) == ("0.0.0.0:50051", "0.0.0.0:8080")
    platform = cases.Platform(image="i", secret="s", etcd_endpoints="e:2379")
    names = [entry["name"] for entry in cases.server_env(platform)]
    assert names == ["HOURGLASS_DATABASE_URL", "HOURGLASS_REDIS_URL", "HOURGLASS_ETCD_ENDPOINTS"]
    configmap = cases.spec_configmap("leaderboard", resource)
    assert configmap["data"] == {"spec.json": '{"a":[1],"b":1}'}
    assert configmap["metadata"]["labels"]["hourglass.io/spec-hash"] == cases.spec_hash(resource)


def cli_parse(args: list[str]) -> Any:
    from hourglass.cli import main

    return main.build_parser().parse_args(args)


def test_read_spec_names_the_file_and_the_reason(tmp_path: Path) -> None:
    assert serve.read_spec(None) == {}
    path = tmp_path / "spec.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match=r"spec\.json: not JSON"):
        serve.read_spec(path)


def test_an_unknown_case_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown case 'nope'"):
        dev_cases.choose(["nope"])
    assert dev_cases.choose(["all"]) == cases.every()
