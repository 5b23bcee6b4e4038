"""hack/provision.py: what each target provisions, where a component comes from (variable,
cache, PATH, build), the version check that refuses the wrong binary, and builds that run
side by side, log to a file and leave nothing half-made when they fail.

The components here are small shell scripts standing in for kube-apiserver and friends;
the real table is checked for what the demo provisions and for its wiring.
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.controlplane import REPO_ROOT, provisioning

provision: Any = provisioning()


def fake_binary(path: Path, says: str) -> Path:
    """An executable that prints `says` whatever it is asked (its `--version`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\necho '{says}'\n")
    path.chmod(0o755)
    return path


def fake(name: str = "kubething", build: str = "", **changes: Any) -> Any:
    """A component whose build writes a binary reporting `v1.2.3` (or runs `build`)."""
    script = build or "printf '#!/bin/sh\\necho Thing v1.2.3\\n' > {out} && chmod +x {out}"
    fields: dict[str, Any] = {
        "name": name,
        "version": "v1.2.3",
        "why": "stands in for a real binary",
        "targets": frozenset({"e2e"}),
        "seconds": 60,
        "check": provision.Probe(("--version",), "v1.2.3"),
        "build": ("sh", "-c", script),
    }
    return provision.Component(**{**fields, **changes})


@pytest.fixture
def environ(tmp_path: Path) -> dict[str, str]:
    """An empty cache and a PATH with nothing on it but /bin (sh, printf, chmod)."""
    (tmp_path / "path").mkdir()
    return {"PROXMIGRATE_CACHE": str(tmp_path / "cache"), "PATH": f"{tmp_path / 'path'}:/bin"}


# ----- the table ------------------------------------------------------------------------------


def test_the_demo_provisions_only_the_control_plane_and_the_schema() -> None:
    demo = {c.name for c in provision.for_targets(["demo"])}
    assert demo == {"kube-apiserver", "etcd", "pve-api-schema"}
    assert {"helm", "promtool"} <= {c.name for c in provision.for_targets(["unit"])}


@pytest.mark.parametrize("target", ["unit", "e2e"])
def test_each_tool_a_test_asks_for_is_provisioned_for_its_target(target: str) -> None:
    """`make e2e` must not leave a test to build helm itself (or fail without it)."""
    asked = {
        name
        for path in (REPO_ROOT / "tests" / target).glob("*.py")
        for name in re.findall(r'tool\("([\w-]+)"\)', path.read_text())
    }
    assert asked, f"no tool(...) call found under tests/{target}: is the pattern stale?"
    assert asked <= {c.name for c in provision.for_targets([target])}


def test_every_component_is_well_formed() -> None:
    names = [c.name for c in provision.COMPONENTS]
    assert len(names) == len(set(names))
    for c in provision.COMPONENTS:
        assert c.targets and c.targets <= set(provision.TARGETS), c.name
        assert "{out}" in " ".join(c.build), c.name
        script = next((arg for arg in c.build if arg.startswith("hack/")), None)
        assert script is None or (REPO_ROOT / script).is_file(), c.name
    envs = {c.name: c.env_var for c in provision.COMPONENTS}
    assert envs["kube-apiserver"] == "PROXMIGRATE_KUBE_APISERVER"
    assert envs["etcd"] == "PROXMIGRATE_ETCD"
    assert envs["helm"] == "PROXMIGRATE_HELM"
    assert envs["promtool"] == "PROXMIGRATE_PROMTOOL"
    assert envs["pve-api-schema"] == "PROXMIGRATE_PVE_SCHEMA"  # what pvesim reads


def test_the_schema_digest_is_the_one_the_fetch_script_checks() -> None:
    script = (REPO_ROOT / "hack" / "fetch-pve-schema.sh").read_text()
    (digest,) = re.findall(r"^SHA256=(\w+)$", script, re.M)
    assert provision.component("pve-api-schema").check.digest == digest


def test_the_schema_lands_where_pvesim_reads_it(
    environ: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    import pvesim.schema

    monkeypatch.setenv("PROXMIGRATE_CACHE", environ["PROXMIGRATE_CACHE"])
    monkeypatch.delenv("PROXMIGRATE_PVE_SCHEMA", raising=False)
    try:
        reloaded = importlib.reload(pvesim.schema)
        cached = provision.cached_path(provision.component("pve-api-schema"), environ)
        assert reloaded.schema_path() == cached
    finally:
        monkeypatch.undo()
        importlib.reload(pvesim.schema)


def test_unknown_names_and_targets_are_one_line_errors() -> None:
    with pytest.raises(provision.ProvisionError, match="no component 'kubectl'; known: kube"):
        provision.component("kubectl")
    with pytest.raises(provision.ProvisionError, match="unknown target"):
        provision.for_targets(["deploy"])


# ----- the version check ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("says", "ok"),
    [
        ("Kubernetes v1.2.3", True),
        ("thing, version v1.2.3 (branch: HEAD)", True),
        ("Kubernetes v1.2.30", False),
        ("Kubernetes v1.2", False),
        ("", False),
    ],
)
def test_probe_wants_the_pinned_version_as_a_word(tmp_path: Path, says: str, ok: bool) -> None:
    binary = fake_binary(tmp_path / "thing", says)
    problem = provision.Probe(("--version",), "v1.2.3").mismatch(binary)
    assert (problem is None) == ok, problem


def test_sha256_check(tmp_path: Path) -> None:
    file = tmp_path / "schema"
    file.write_bytes(b"abc")
    digest = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert provision.Sha256(digest).mismatch(file) is None
    assert "not" in provision.Sha256("0" * 64).mismatch(file)


# ----- where a component comes from -----------------------------------------------------------


def test_the_variable_wins_and_must_be_the_pinned_version(
    tmp_path: Path, environ: dict[str, str]
) -> None:
    c = fake()
    good = fake_binary(tmp_path / "mine" / "kubething", "Thing v1.2.3")
    fake_binary(provision.cached_path(c, environ), "Thing v1.2.3")
    assert provision.existing(c, {**environ, "PROXMIGRATE_KUBETHING": str(good)}) == good

    old = fake_binary(tmp_path / "old" / "kubething", "Thing v1.1.0")
    with pytest.raises(provision.ProvisionError) as refused:
        provision.existing(c, {**environ, "PROXMIGRATE_KUBETHING": str(old)})
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(f"PROXMIGRATE_KUBETHING={old} is not kubething v1.2.3")
    assert "Thing v1.1.0" in message

    with pytest.raises(provision.ProvisionError, match="no such file"):
        provision.existing(c, {**environ, "PROXMIGRATE_KUBETHING": str(tmp_path / "none")})


def test_cache_then_path_at_the_pinned_version_else_build(
    tmp_path: Path, environ: dict[str, str]
) -> None:
    c = fake()
    on_path = Path(environ["PATH"].split(":")[0]) / "kubething"
    fake_binary(on_path, "Thing v1.0.0")
    assert provision.existing(c, environ) is None  # another version on PATH: build ours
    fake_binary(on_path, "Thing v1.2.3")
    assert provision.existing(c, environ) == on_path
    cached = fake_binary(provision.cached_path(c, environ), "Thing v1.2.3")
    assert provision.existing(c, environ) == cached  # the cache is asked first
    assert provision.existing(dataclasses.replace(c, on_path=False), {**environ}) == cached


# ----- builds -----------------------------------------------------------------------------------


def test_a_build_lands_in_the_cache_with_one_line_and_its_log(environ: dict[str, str]) -> None:
    c = fake(build="echo go: downloading lots; " + fake().build[2])
    out = io.StringIO()
    found = provision.ensure([c], out=out, environ=environ)
    cached = provision.cached_path(c, environ)
    assert found == {"kubething": cached}
    assert provision.Probe(("--version",), "v1.2.3").mismatch(cached) is None
    lines = out.getvalue().splitlines()
    log = provision.log_path(c, environ)
    assert re.fullmatch(
        r"provision: building 1 component\(s\) once, about 1 min on 2 idle cores"
        r"( \(this machine is busy, .*\))?; "
        + re.escape(f"build output in {log.parent}/<name>-<version>.log"),
        lines[0],
    ), lines[0]
    assert lines[1] == "  kubething v1.2.3 (about 1 min): stands in for a real binary"
    assert re.fullmatch(r"  kubething v1\.2\.3 \(about 1 min\): done in \d+ s", lines[2])
    assert "go: downloading" not in out.getvalue()
    assert log.read_text() == "go: downloading lots\n"
    out = io.StringIO()
    assert provision.ensure([c], out=out, environ=environ) == found
    assert out.getvalue() == ""  # nothing to do, nothing said


def test_a_failed_build_shows_its_log_and_leaves_nothing(environ: dict[str, str]) -> None:
    c = fake(build="echo compiling; echo 'build: no Go here' >&2; echo half > {out}; exit 3")
    with pytest.raises(provision.ProvisionError) as failed:
        provision.ensure([c], out=io.StringIO(), environ=environ)
    message = str(failed.value)
    assert "compiling\nbuild: no Go here\n" in message
    assert "building kubething v1.2.3 failed (exit 3): build: no Go here" in message
    cached = provision.cached_path(c, environ)
    assert not cached.exists()
    assert list(cached.parent.iterdir()) == []  # no .tmp left either


def test_a_build_of_the_wrong_version_is_refused(environ: dict[str, str]) -> None:
    c = fake(build="printf '#!/bin/sh\\necho Thing v9\\n' > {out} && chmod +x {out}")
    with pytest.raises(provision.ProvisionError, match=r"says 'Thing v9', not v1\.2\.3"):
        provision.ensure([c], out=io.StringIO(), environ=environ)
    assert not provision.cached_path(c, environ).exists()


def waiting_pair(directory: Path) -> list[Any]:
    """Two builds that each wait (2 s at most) for the other to have started."""
    directory.mkdir()
    builds = []
    for me, other in (("a", "b"), ("b", "a")):
        script = (
            f"touch {directory}/{me}; i=0; while [ ! -e {directory}/{other} ] && [ $i -lt 40 ]; "
            f"do sleep 0.05; i=$((i+1)); done; [ -e {directory}/{other} ] && " + fake().build[2]
        )
        builds.append(fake(name=f"thing-{me}", build=script))
    return builds


def test_independent_builds_run_side_by_side(tmp_path: Path, environ: dict[str, str]) -> None:
    found = provision.ensure(waiting_pair(tmp_path / "two"), out=io.StringIO(), environ=environ)
    assert set(found) == {"thing-a", "thing-b"}
    one_at_a_time = {**environ, "PROXMIGRATE_JOBS": "1", "PROXMIGRATE_CACHE": str(tmp_path)}
    with pytest.raises(provision.ProvisionError, match="exit 1"):
        provision.ensure(waiting_pair(tmp_path / "one"), out=io.StringIO(), environ=one_at_a_time)


def test_durations_read_as_a_person_says_them() -> None:
    assert [provision.duration(s) for s in (7.4, 60, 61, 245)] == [
        "7 s",
        "1 min",
        "1 min 01 s",
        "4 min 05 s",
    ]


def test_a_busy_machine_is_named_as_the_reason_for_a_slow_build() -> None:
    assert provision.busy(1.5, 2) == ""
    assert provision.busy(17.4, 2) == (
        " (this machine is busy, load average 17 on 2 cores: expect longer)"
    )


def test_jobs_and_the_estimate() -> None:
    assert provision.jobs({}) == 2
    assert provision.jobs({"PROXMIGRATE_JOBS": "1"}) == 1
    with pytest.raises(provision.ProvisionError, match="PROXMIGRATE_JOBS=two"):
        provision.jobs({"PROXMIGRATE_JOBS": "two"})
    times = [fake(name=str(s), seconds=s) for s in (240, 90, 10)]
    chains = provision.in_build_order(times)
    assert [[c.seconds for c in links] for links in chains] == [[10], [90], [240]]
    assert provision.estimate(times, 1) == 340
    assert provision.estimate(times, 2) == 250  # 10 then 240 side by side with 90
    assert provision.estimate(times, 3) == 240


# ----- the virtualenv beside the builds --------------------------------------------------------


def test_a_virtualenv_is_ready_once_installed_after_pyproject_changed(tmp_path: Path) -> None:
    runtime = provision.PythonEnv(tmp_path / "venv", dev=False)
    dev = provision.PythonEnv(tmp_path / "venv", dev=True)
    assert not runtime.ready() and not dev.ready()
    (tmp_path / "venv").mkdir()
    (tmp_path / "venv" / ".runtime-installed").touch()
    assert runtime.ready() and not dev.ready()  # the runtime install lacks the dev tools
    (tmp_path / "venv" / ".installed").touch()
    assert dev.ready()
    changed = (REPO_ROOT / "pyproject.toml").stat().st_mtime
    for stamp in runtime.stamps():
        os.utime(stamp, (changed - 10, changed - 10))
    assert not runtime.ready() and not dev.ready()  # pyproject.toml changed since


@dataclasses.dataclass(frozen=True)
class WaitingEnv(provision.PythonEnv):  # type: ignore[misc,name-defined]
    """A virtualenv whose install waits (2 s at most) for the build `waits_for` to start."""

    waits_for: Path = Path()

    def install(self, environ: Any = None) -> None:
        for _ in range(40):
            if self.waits_for.exists():
                self.stamps()[0].parent.mkdir(parents=True, exist_ok=True)
                self.stamps()[0].touch()
                return
            time.sleep(0.05)
        raise provision.ProvisionError("the build never started beside the install")


def test_the_virtualenv_installs_beside_the_builds_without_taking_a_lane(
    tmp_path: Path, environ: dict[str, str]
) -> None:
    started = tmp_path / "build-started"
    env = WaitingEnv(tmp_path / "venv", dev=False, waits_for=started)
    build = fake(build=f"touch {started}; " + fake().build[2])
    out = io.StringIO()
    one_lane = {**environ, "PROXMIGRATE_JOBS": "1"}
    found = provision.ensure([build], out=out, environ=one_lane, python_env=env, say="demo: first")
    assert set(found) == {"kubething"} and env.ready()
    lines = out.getvalue().splitlines()
    assert lines[0] == "demo: first"
    assert lines[1].startswith(
        f"provision: building 1 component(s) and installing python-env {env.path} once, "
        "about 1 min on 2 idle cores"
    )
    done = rf"  python-env {re.escape(str(env.path))} \(about 40 s\): done in \d+ s"
    assert any(re.fullmatch(done, line) for line in lines[4:]), lines  # in finishing order
    out = io.StringIO()
    provision.ensure([build], out=out, environ=one_lane, python_env=env, say="demo: first")
    assert out.getvalue() == ""  # all there: not even the `say` line


def test_a_build_that_reuses_another_follows_it_in_one_lane(
    tmp_path: Path, environ: dict[str, str]
) -> None:
    first = fake(name="apiserver", seconds=100)
    cached_first = provision.cached_path(first, environ)
    # Fails unless `apiserver` is in the cache already when it starts.
    second = fake(
        name="manager",
        seconds=50,
        after="apiserver",
        build=f"[ -e {cached_first} ] && " + fake().build[2],
    )
    alone = fake(name="etcd", seconds=120)
    chains = provision.in_build_order([second, alone, first])
    assert [[c.name for c in links] for links in chains] == [["etcd"], ["apiserver", "manager"]]
    assert provision.estimate([second, alone, first], 2) == 150
    assert provision.estimate([second, alone], 2) == 120  # `after` a present one: no chain
    found = provision.ensure([second, alone, first], out=io.StringIO(), environ=environ)
    assert set(found) == {"apiserver", "manager", "etcd"}
