"""pvesim refuses what PVE refuses: PVE's own API schema (apidoc) and privileges.

Each test sends one request through pvesim's router (the code behind the HTTPS server) and
checks PVE's answer and wording: pve-common JSONSchema.pm (`check_type`, `check_prop`,
`check_object`, the format verifiers), qemu-server API2/Qemu.pm (`migrate_vm`, `update_vm`),
pve-access-control RPCEnvironment.pm (`check`, privilege separation), pve-manager
API2/Cluster.pm (`get_options`, `resources`), API2/Tasks.pm, API2/Nodes.pm (`migrateall`), and
pve-storage Storage.pm (`get_bandwidth_limit`).
"""

from __future__ import annotations

from typing import Any

import pytest

from pvesim import schema
from pvesim.api import router
from pvesim.auth import TOKEN_ID
from pvesim.cli import build_cluster, parse_args
from pvesim.model import ApiError, Cluster, ModelParams, from_config

AUDIT = ["VM.Audit", "Sys.Audit", "Datastore.Audit"]
OP = "op@pve!operator"
UNKNOWN = "property is not defined in schema and the schema does not allow additional properties"


def cluster(token_acl: dict[str, list[str]], *, user_acl: Any = None, pve: int = 9) -> Cluster:
    config = {
        "pve_version": pve,
        "nodes": [{"name": "pve1"}, {"name": "pve2"}],
        "vms": [
            {"vmid": 100, "node": "pve1"},
            {"vmid": 101, "node": "pve1", "pool": "prod"},
        ],
        "datacenter": {"migration": "type=secure", "bwlimit": "migration=1000"},
        "access": {
            "users": {"op@pve": token_acl if user_acl is None else user_acl},
            "tokens": {OP: {"privsep": 1, "acl": token_acl}},
        },
    }
    return from_config(config, params=ModelParams(pve_version=pve))


ADMIN = cluster({"/": ["VM.Audit", "VM.Migrate", "Sys.Audit", "Sys.Modify"]})


def refused(c: Cluster, method: str, path: str, user: str, **params: str) -> ApiError:
    with pytest.raises(ApiError) as info:
        router.dispatch(c, method, path, user, params)
    return info.value


def param_errors(method: str, path: str, **params: str) -> dict[str, str]:
    error = refused(ADMIN, method, path, TOKEN_ID, **params)
    assert (error.status, error.message) == (400, "Parameter verification failed.")
    return dict(error.errors or {})


MIGRATE = "nodes/pve1/qemu/100/migrate"


def test_unknown_parameter() -> None:
    assert param_errors("POST", MIGRATE, target="pve2", speed="1") == {"speed": UNKNOWN}


def test_boolean_is_0_or_1_only() -> None:
    """JSONSchema.pm check_type: `true`/`yes`/`on` are CLI spellings (parse_boolean)."""
    for spelling in ("true", "yes", "on", "2"):
        errors = param_errors("POST", MIGRATE, target="pve2", online=spelling)
        assert errors == {"online": f"type check ('boolean') failed - got '{spelling}'"}


def test_below_minimum() -> None:
    errors = param_errors("POST", MIGRATE, target="pve2", bwlimit="-1")
    assert errors == {"bwlimit": "value must have a minimum value of 0"}


def test_above_maximum() -> None:
    errors = param_errors("POST", "nodes/pve1/migrateall", target="pve2", maxworkers="65")
    assert errors == {"maxworkers": "value must have a maximum value of 64"}


def test_bad_enum() -> None:
    errors = param_errors("POST", MIGRATE, target="pve2", migration_type="fast")
    assert errors == {
        "migration_type": "value 'fast' does not have a value in the enumeration 'secure, insecure'"
    }


def test_bad_format_in_body_and_path() -> None:
    assert param_errors("POST", MIGRATE, target="pve_2") == {
        "target": "invalid format - value does not look like a valid node name"
    }
    assert param_errors("POST", "nodes/pve1/qemu/99/migrate", target="pve2") == {
        "vmid": "invalid format - value does not look like a valid VM ID"
    }
    assert param_errors("GET", "nodes/pve1/tasks", statusfilter="ok,bad") == {
        "statusfilter": "invalid format - invalid status 'bad'"
    }


def test_missing_required_and_bad_integer_together() -> None:
    errors = param_errors("POST", MIGRATE, online="1", bwlimit="1.5")
    assert errors == {
        "target": "property is missing and it is not optional",
        "bwlimit": "type check ('integer') failed - got '1.5'",
    }


def test_pve8_does_not_know_pve9_parameters() -> None:
    pve8 = cluster({"/": ["VM.Migrate"]}, pve=8)
    error = refused(pve8, "POST", MIGRATE, TOKEN_ID, target="pve2", **{"with-conntrack-state": "1"})
    assert error.errors == {"with-conntrack-state": UNKNOWN}


@pytest.mark.parametrize("option", ["migration_type", "migration_network", "force"])
def test_root_only_migrate_options_refused_for_a_token(option: str) -> None:
    value = {"migration_type": "secure", "migration_network": "10.1.0.0/24", "force": "1"}[option]
    error = refused(ADMIN, "POST", MIGRATE, TOKEN_ID, target="pve2", online="1", **{option: value})
    assert (error.status, error.errors) == (400, {option: "Only root may use this option."})


def test_root_only_options_are_tested_for_truth() -> None:
    """migrate_vm: `if $param->{force} && $authuser ne 'root@pam'`: force=0 is anyone's."""
    c = cluster({"/": ["VM.Migrate"]})
    upid = router.dispatch(c, "POST", MIGRATE, OP, {"target": "pve2", "online": "1", "force": "0"})
    assert str(upid).startswith("UPID:pve1:")


def test_unlock_is_root_only() -> None:
    """update_vm: `skiplock` is root's; `delete=lock` fails check_vm_modify_config_perm."""
    config = "nodes/pve1/qemu/100/config"
    error = refused(ADMIN, "PUT", config, TOKEN_ID, delete="lock", skiplock="1")
    assert (error.status, error.errors) == (400, {"skiplock": "Only root may use this option."})
    error = refused(ADMIN, "PUT", config, TOKEN_ID, delete="lock")
    assert (error.status, error.message) == (500, "only root can set 'lock' config")
    ADMIN.set_lock(100, "migrate")
    try:
        error = refused(ADMIN, "PUT", config, "root@pam", delete="lock")
        assert error.message == "VM is locked (migrate)"  # root without skiplock: check_lock
        router.dispatch(ADMIN, "PUT", config, "root@pam", {"delete": "lock", "skiplock": "1"})
        assert ADMIN.vms[100].lock is None
    finally:
        ADMIN.set_lock(100, None)


def test_permission_denied_names_path_and_privilege() -> None:
    c = cluster({"/": ["VM.Audit"]})
    error = refused(c, "POST", MIGRATE, OP, target="pve2", online="1")
    assert (error.status, error.message) == (403, "Permission check failed (/vms/100, VM.Migrate)")
    error = refused(c, "GET", "cluster/ha/resources", OP)
    assert error.message == "Permission check failed (/, Sys.Audit)"


def test_privilege_separated_token_has_the_intersection() -> None:
    c = cluster({"/": ["VM.Audit", "VM.Migrate"]}, user_acl={"/": ["VM.Audit"]})
    error = refused(c, "POST", MIGRATE, OP, target="pve2", online="1")
    assert error.message == "Permission check failed (/vms/100, VM.Migrate)"


def test_nearest_acl_replaces_and_pools_add() -> None:
    c = cluster({"/": ["VM.Audit"], "/vms/100": ["Sys.Audit"], "/pool/prod": ["VM.Migrate"]})
    assert c.access.privileges(OP, "/vms/100") == {"Sys.Audit"}
    assert c.access.privileges(OP, "/vms/101") == {"VM.Audit"}  # the pool needs a resolver
    answer = router.dispatch(
        c, "POST", "nodes/pve1/qemu/101/migrate", OP, {"target": "pve2", "online": "1"}
    )
    assert str(answer).startswith("UPID:pve1:")  # VM.Migrate from /pool/prod


def test_options_without_sys_audit_lose_migration() -> None:
    """API2/Cluster.pm get_options: without Sys.Audit on / only console and tag-style."""
    with_audit = router.dispatch(cluster({"/": AUDIT}), "GET", "cluster/options", OP, {})
    assert with_audit["migration"]["type"] == "secure"
    without = router.dispatch(cluster({"/": ["VM.Audit"]}), "GET", "cluster/options", OP, {})
    assert "migration" not in without and "bwlimit" not in without


def test_resources_are_filtered_by_privilege() -> None:
    c = cluster({"/vms/100": ["VM.Audit"]})
    rows = router.dispatch(c, "GET", "cluster/resources", OP, {})
    assert [r["vmid"] for r in rows if r["type"] == "qemu"] == [100]
    nodes = [r for r in rows if r["type"] == "node"]
    assert len(nodes) == 2 and all("maxmem" not in r for r in nodes)  # no Sys.Audit
    assert not [r for r in rows if r["type"] == "storage"]
    full = router.dispatch(cluster({"/": AUDIT}), "GET", "cluster/resources", OP, {})
    assert all("maxmem" in r for r in full if r["type"] == "node")


def test_others_tasks_need_sys_audit_to_read_and_sys_modify_to_stop() -> None:
    c = cluster({"/": ["VM.Audit", "VM.Migrate"]})
    upid = c.migrate("pve1", 100, "pve2", online=True)  # root@pam's task
    assert router.dispatch(c, "GET", "nodes/pve1/tasks", OP, {"source": "all"}) == []
    path = f"nodes/pve1/tasks/{upid}"
    error = refused(c, "GET", f"{path}/status", OP)
    assert error.message == "Permission check failed (/nodes/pve1, Sys.Audit)"
    error = refused(c, "DELETE", path, OP)
    assert error.message == "Permission check failed (/nodes/pve1, Sys.Modify)"
    own = router.dispatch(
        c, "POST", "nodes/pve1/qemu/101/migrate", OP, {"target": "pve2", "online": "1"}
    )
    rows = router.dispatch(c, "GET", "nodes/pve1/tasks", OP, {"source": "all"})
    assert [r["upid"] for r in rows] == [own]


def test_requested_bwlimit_replaces_datacenter_limit_with_sys_modify() -> None:
    """pve-storage get_bandwidth_limit: Sys.Modify on / overrides datacenter.cfg's bwlimit."""
    for acl, asked, applied in (
        (["VM.Migrate", "Sys.Modify"], 5000, 5000),
        (["VM.Migrate"], 5000, 1000),
        (["VM.Migrate"], 500, 500),
        (["VM.Migrate", "Sys.Modify"], None, 1000),
    ):
        c = cluster({"/": acl})
        request = c.migration_request(c.vms[100], "pve2", bwlimit=asked, user=OP)
        assert request.bwlimit_kib == applied, (acl, asked)


def test_migrateall_needs_vm_migrate_on_root_or_each_guest() -> None:
    c = cluster({"/vms/100": ["VM.Migrate"]})
    error = refused(c, "POST", "nodes/pve1/migrateall", OP, target="pve2", maxworkers="1")
    assert error.message == "Permission check failed (/, VM.Migrate)"
    error = refused(c, "POST", "nodes/pve1/migrateall", OP, target="pve2", vms="100,101")
    assert error.message == "Permission check failed (/vms/101, VM.Migrate)"


def test_missing_schema_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(schema.ENV, "/nonexistent/pve-api.json.gz")
    schema.api_schema.cache_clear()
    try:
        with pytest.raises(schema.SchemaMissing, match="make provision"):
            schema.api_schema()
    finally:
        monkeypatch.undo()
        schema.api_schema.cache_clear()


def test_parameters_newer_than_the_simulated_release_are_unknown() -> None:
    """migrateall's `max-workers` came with pve-manager 9.1.2; pvesim plays 9.0."""
    errors = param_errors("POST", "nodes/pve1/migrateall", target="pve2", **{"max-workers": "2"})
    assert errors == {"max-workers": UNKNOWN}


def test_another_users_permissions_need_sys_audit_on_access() -> None:
    c = cluster({"/": ["VM.Audit"]})
    error = refused(c, "GET", "access/permissions", OP, userid="root@pam")
    assert error.message == "Permission check failed (/access, Sys.Audit)"
    error = refused(c, "GET", "access/permissions", OP, userid="root")
    assert error.errors == {"userid": "value does not match the regex pattern"}


def test_serve_token_flag_grants_exactly_its_acl() -> None:
    args = parse_args(["serve", "--nodes", "2", "--vms-per-node", "1", "--token", SPEC])
    c = build_cluster(args)
    assert c.access.privileges("a@pve!t", "/nodes/pve1") == {"Sys.Audit"}
    assert c.access.privileges("a@pve!t", "/vms/100") == {"VM.Audit", "VM.Migrate"}
    assert c.access.privileges("a@pve!other", "/vms/100") == set()  # no such token
    with pytest.raises(ValueError, match="unknown PVE privilege"):
        build_cluster(parse_args(["serve", "--token", "a@pve!t=/:VM.Bogus"]))


SPEC = "a@pve!t=/:VM.Audit,VM.Migrate;/nodes:Sys.Audit"
