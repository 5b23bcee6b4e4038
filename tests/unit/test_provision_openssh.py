"""The `sshd` row of hack/provision.py: any OpenSSH the distribution ships is accepted, and
hack/install-openssh.sh links it or says in one line what is missing where it cannot install."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.controlplane import REPO_ROOT, provisioning

provision: Any = provisioning()
SCRIPT = REPO_ROOT / "hack" / "install-openssh.sh"


def executable(path: Path, says: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\necho '{says}' >&2\n")
    path.chmod(0o755)
    return path


@pytest.mark.parametrize(
    ("says", "ok"),
    [
        ("OpenSSH_9.2p1 Debian-2+deb12u10, OpenSSL 3.0.19 27 Jan 2026", True),
        ("OpenSSH_10.0p2 Debian-7, OpenSSL 3.5.1 1 Jul 2025", True),
        ("unknown option -- V\nOpenSSH_8.4p1 Debian-5+deb11u3, OpenSSL 1.1.1w", True),
        ("dropbear v2022.83", False),
    ],
)
def test_any_openssh_version_is_the_sshd_component(tmp_path: Path, says: str, ok: bool) -> None:
    check = provision.component("sshd").check
    assert (check.mismatch(executable(tmp_path / "sshd", says)) is None) is ok


def test_the_sshd_component_serves_the_e2e_and_bench_targets() -> None:
    for target in ("e2e", "bench"):
        assert "sshd" in {c.name for c in provision.for_targets([target])}
    assert "sshd" not in {c.name for c in provision.for_targets(["demo", "unit"])}


def test_present_openssh_is_linked_without_installing(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    for tool in ("sshd", "ssh", "ssh-keygen", "setpriv"):
        executable(bin_dir / tool, "OpenSSH_9.2p1")
    executable(bin_dir / "apt-get", "must not run")
    out = tmp_path / "out"
    subprocess.run(
        ["/bin/bash", str(SCRIPT), str(out)], env={"PATH": f"{bin_dir}:/usr/bin:/bin"}, check=True
    )
    assert out.resolve() == bin_dir / "sshd"


def test_without_apt_get_one_line_names_what_is_missing(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    done = subprocess.run(
        ["/bin/bash", str(SCRIPT), str(tmp_path / "out")],
        env={"PATH": str(empty)},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    assert line.startswith("install-openssh: missing"), line
    assert " ssh ssh-keygen setpriv: no apt-get here: install OpenSSH's server" in line, line
    assert not (tmp_path / "out").exists()
