"""The krew manifest passes what krew checks (kubernetes-sigs/krew pkg/index/validation/
validate.go: ValidatePlugin, validatePlatform, validateSelector) and its sha256 is the one of
the archive hack/krew-archive.py builds, whose bin is the launcher; the launcher runs the
plugin, or says in one line what is missing."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path
from types import ModuleType

import yaml

from tests.support.controlplane import REPO_ROOT

MANIFEST = REPO_ROOT / "plugins" / "krew" / "proxmigrate.yaml"
LAUNCHER = REPO_ROOT / "plugins" / "krew" / "kubectl-proxmigrate"
OS_NAMES = {"linux", "darwin", "windows"}


def krew_archive() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "krew_archive", REPO_ROOT / "hack/krew-archive.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_manifest_has_what_krew_requires() -> None:
    plugin = yaml.safe_load(MANIFEST.read_text())
    assert plugin["apiVersion"] == "krew.googlecontainertools.github.com/v1alpha2"
    assert plugin["kind"] == "Plugin"
    name = plugin["metadata"]["name"]
    assert name == MANIFEST.stem and re.fullmatch(r"[\w-]+", name)  # IsSafePluginName
    spec = plugin["spec"]
    package = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert spec["version"] == f"v{package['version']}"  # krew's semver.Parse wants the `v`
    assert re.fullmatch(r"v\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?", spec["version"])
    assert spec["shortDescription"].strip()
    assert spec["homepage"].startswith("https://")
    assert spec["platforms"]
    for platform in spec["platforms"]:
        assert platform["uri"].startswith("https://") and platform["uri"].endswith(".tar.gz")
        assert re.fullmatch(r"[a-f0-9]{64}", platform["sha256"])
        assert platform["bin"] and "/" not in platform["bin"]
        assert platform["files"] and all(f["from"] and f["to"] for f in platform["files"])
        selector = platform["selector"]
        labels = selector.get("matchLabels")
        expressions = selector.get("matchExpressions")
        assert labels or expressions  # no empty selector, matchLabels or matchExpressions
        assert labels is None or len(labels) > 0
        assert expressions is None or len(expressions) > 0
        keys = set(labels or {}) | {e["key"] for e in expressions or []}
        assert keys <= {"os", "arch"}
        oses = {labels["os"]} if labels and "os" in labels else set()
        oses |= {v for e in expressions or [] if e["key"] == "os" for v in e["values"]}
        assert oses and oses <= OS_NAMES


def test_sha256_is_the_archive_the_script_builds(tmp_path: Path) -> None:
    archive = tmp_path / "plugin.tar.gz"
    digest = krew_archive().build(archive)
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == digest
    assert krew_archive().build(tmp_path / "again.tar.gz") == digest  # reproducible
    platform = yaml.safe_load(MANIFEST.read_text())["spec"]["platforms"][0]
    assert platform["sha256"] == digest, "run hack/krew-archive.py --update"
    with tarfile.open(archive) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert {"LICENSE", "README.md"} <= set(members)
        assert {f["from"] for f in platform["files"]} <= set(members)
        assert all(m.mtime == 0 and m.uid == 0 and not m.uname for m in members.values())
        binary = members[platform["bin"]]
        assert binary.isfile() and binary.mode & 0o111
        extracted = tar.extractfile(binary)
        assert extracted is not None and extracted.read() == LAUNCHER.read_bytes()


def run_launcher(python: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PROXMIGRATE_PYTHON=python, PYTHONPATH=str(REPO_ROOT / "operator"))
    return subprocess.run(
        [str(LAUNCHER), *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_launcher_runs_the_plugin() -> None:
    answer = run_launcher(sys.executable, "--help")
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.startswith("usage: kubectl proxmigrate")
    assert "release-finalizers" in answer.stdout


def test_launcher_without_the_package_says_so_in_one_line(tmp_path: Path) -> None:
    bare = tmp_path / "python"  # an interpreter that cannot import proxmigrate
    bare.write_text(f'#!/bin/sh\nPYTHONPATH= exec {sys.executable} -S "$@"\n')
    bare.chmod(0o755)
    answer = run_launcher(str(bare), "status")
    assert answer.returncode == 1
    assert answer.stderr.count("\n") == 1
    assert answer.stderr.startswith(f"error: {bare} has no proxmigrate package: pip install")
