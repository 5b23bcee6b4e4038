"""`kubectl proxmigrate release-finalizers` on a fake session: which peers count as a running
operator, which objects are touched and how, what is printed, and the exit statuses."""

from __future__ import annotations

import datetime
import io
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from proxmigrate.api.constants import FINALIZER, NODEDRAINS, PROXMOXCLUSTERS, VMMIGRATIONS
from proxmigrate.kubectl.cli import build_parser
from proxmigrate.kubectl.errors import EXIT_ERROR, EXIT_OK, PluginError
from proxmigrate.kubectl.finalizers import (
    cmd_release_finalizers,
    held,
    live_replicas,
    removal,
)

NOW = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)
OTHER = "other.example/keep"


def peering(name: str, peers: dict[str, Any], namespace: str | None = "ops") -> dict[str, Any]:
    metadata = {"name": name, **({"namespace": namespace} if namespace else {})}
    kind = "KopfPeering" if namespace else "ClusterKopfPeering"
    return {"kind": kind, "metadata": metadata, "status": peers}


def peer(seconds_ago: int, lifetime: int = 60) -> dict[str, Any]:
    seen = NOW - datetime.timedelta(seconds=seconds_ago)
    # kopf writes lastseen with isoformat(): microseconds and +00:00
    return {"priority": 0, "lifetime": lifetime, "lastseen": seen.isoformat()}


def test_a_replica_is_alive_until_lastseen_plus_its_lifetime() -> None:
    objects = [
        peering("proxmigrate", {"pod-0@a": peer(10), "pod-1@b": peer(61), "gone": None}),
        peering("proxmigrate", {"dev@laptop": peer(100, lifetime=120)}, namespace=None),
        peering("someone-else", {"x": peer(1)}),
    ]
    assert live_replicas(objects, "proxmigrate", NOW) == [
        "KopfPeering ops/proxmigrate: pod-0@a (last seen 10s ago)",
        "ClusterKopfPeering proxmigrate: dev@laptop (last seen 1m40s ago)",
    ]
    assert live_replicas([peering("proxmigrate", {})], "proxmigrate", NOW) == []


def obj(kind: str, name: str, finalizers: list[str], deleting: bool = False) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": "ops", "finalizers": finalizers}
    if deleting:
        metadata["deletionTimestamp"] = "2026-01-01T11:00:00Z"
    return {"kind": kind, "metadata": metadata}


def test_only_our_finalizer_is_removed_at_its_index() -> None:
    ours = obj("NodeDrain", "a", [OTHER, FINALIZER])
    assert held([ours, obj("NodeDrain", "b", [OTHER]), obj("NodeDrain", "c", [])]) == [(ours, 1)]
    assert removal(1) == [
        {"op": "test", "path": "/metadata/finalizers/1", "value": FINALIZER},
        {"op": "remove", "path": "/metadata/finalizers/1"},
    ]


class FakeSession:
    namespace = "ops"

    def __init__(self, objects: dict[str, list[dict[str, Any]]], peerings: Any = ()) -> None:
        self.objects = objects
        self._peerings = peerings
        self.patched: list[tuple[str, str, str, list[dict[str, Any]]]] = []
        self.fail: dict[str, int] = {}
        self.scopes: list[Any] = []

    def list_objects(self, plural: str, *, all_namespaces: bool = False) -> list[dict[str, Any]]:
        self.scopes.append(all_namespaces)
        return self.objects.get(plural, [])

    def peerings(self, namespaces: list[str] | None) -> list[dict[str, Any]]:
        if isinstance(self._peerings, ApiException):
            raise self._peerings
        self.scopes.append(namespaces)
        return list(self._peerings)

    def json_patch(self, plural: str, namespace: str, name: str, ops: list[Any]) -> None:
        if name in self.fail:
            raise ApiException(status=self.fail[name], reason="Unprocessable")
        self.patched.append((plural, namespace, name, ops))


def run(session: FakeSession, *flags: str) -> tuple[int, str]:
    args = build_parser().parse_args(["release-finalizers", *flags])
    out = io.StringIO()
    return cmd_release_finalizers(session, args, out), out.getvalue()  # type: ignore[arg-type]


def test_releases_every_kind_and_says_what_happened() -> None:
    session = FakeSession(
        {
            NODEDRAINS: [obj("NodeDrain", "d", [FINALIZER], deleting=True)],
            VMMIGRATIONS: [obj("VMMigration", "m", [OTHER])],
            PROXMOXCLUSTERS: [obj("ProxmoxCluster", "lab", [FINALIZER])],
        }
    )
    code, out = run(session, "--yes")
    assert code == EXIT_OK
    assert out.splitlines() == [
        f"proxmoxcluster.proxmigrate.dev/lab finalizer {FINALIZER} removed",
        f"nodedrain.proxmigrate.dev/d finalizer {FINALIZER} removed; it was being deleted: gone",
    ]
    assert [(p, ns, n) for p, ns, n, _ in session.patched] == [
        (PROXMOXCLUSTERS, "ops", "lab"),
        (NODEDRAINS, "ops", "d"),
    ]
    assert session.scopes[0] == ["ops"]  # peering read in the namespace only


def test_all_namespaces_names_the_namespace() -> None:
    session = FakeSession({NODEDRAINS: [obj("NodeDrain", "d", [FINALIZER])]})
    code, out = run(session, "-A", "-y")
    assert code == EXIT_OK and out.startswith("nodedrain.proxmigrate.dev/d -n ops finalizer")
    assert session.scopes[0] is None and True in session.scopes[1:]


def test_refuses_while_a_replica_is_alive_unless_forced() -> None:
    objects = {NODEDRAINS: [obj("NodeDrain", "d", [FINALIZER])]}
    alive = [peering("proxmigrate", {"pod-0": peer(0, lifetime=10**9)})]
    with pytest.raises(PluginError, match=r"the operator is running \(KopfPeering ops/proxmig"):
        run(FakeSession(objects, alive), "--yes")
    forced = FakeSession(objects, alive)
    assert run(forced, "--yes", "--force")[0] == EXIT_OK and forced.patched


def test_unreadable_peering_is_refused_unless_forced() -> None:
    forbidden = ApiException(status=403, reason="Forbidden")
    with pytest.raises(PluginError, match="cannot tell whether the operator runs; pass --force"):
        run(FakeSession({}, forbidden), "--yes")


def test_without_yes_and_no_terminal_nothing_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    session = FakeSession({NODEDRAINS: [obj("NodeDrain", "d", [FINALIZER])]})
    with pytest.raises(PluginError, match="nothing changed: pass --yes to release 1 finalizers"):
        run(session)
    assert session.patched == []


def test_nothing_to_release() -> None:
    assert run(FakeSession({}), "--yes") == (
        EXIT_OK,
        f"no proxmigrate object holds {FINALIZER} in namespace ops\n",
    )


def test_an_object_gone_meanwhile_is_fine_a_refused_patch_is_an_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    session = FakeSession(
        {NODEDRAINS: [obj("NodeDrain", "gone", [FINALIZER]), obj("NodeDrain", "x", [FINALIZER])]}
    )
    session.fail = {"gone": 404, "x": 422}
    code, out = run(session, "--yes")
    assert code == EXIT_ERROR and out == "nodedrain.proxmigrate.dev/gone already gone\n"
    assert capsys.readouterr().err == (
        "error: nodedrain.proxmigrate.dev/x: its finalizers changed meanwhile; "
        "run the command again\n"
    )


def test_a_deleted_object_with_other_finalizers_is_not_called_gone() -> None:
    session = FakeSession({NODEDRAINS: [obj("NodeDrain", "d", [FINALIZER, OTHER], True)]})
    assert run(session, "--yes")[1] == (
        f"nodedrain.proxmigrate.dev/d finalizer {FINALIZER} removed; it is being deleted, "
        f"once {OTHER} is removed too\n"
    )


def test_output_name_lists_the_released_objects_and_other_outputs_are_refused() -> None:
    session = FakeSession({NODEDRAINS: [obj("NodeDrain", "d", [FINALIZER])]})
    assert run(session, "--yes", "-o", "name") == (EXIT_OK, "nodedrain.proxmigrate.dev/d\n")
    with pytest.raises(PluginError, match="-o name only") as error:
        run(session, "--yes", "-o", "json")
    assert error.value.code == 2
