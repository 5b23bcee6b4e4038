"""Every command line says what is wrong in one line with a status a script can test
(2: bad input, 1: a dependency failed), never with a traceback unless asked (--debug);
secrets need not be on the command line."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import certifi
import pytest
from kubernetes.config import kube_config

from proxmigrate.cli import main as proxmigrate
from pvesim.cli import main as pvesim
from pvesim.testing import PvesimProcess

SMALL = ["--nodes", "2", "--vms-per-node", "1"]


@pytest.fixture(scope="module")
def sim() -> Iterator[PvesimProcess]:
    with PvesimProcess(*SMALL) as process:
        yield process


def one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def no_kube(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, kubeconfig: str) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("KUBECONFIG", kubeconfig)  # for a process; the client read it at import:
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", kubeconfig)


def test_run_without_a_kubeconfig(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    no_kube(monkeypatch, tmp_path, str(tmp_path / "missing"))
    assert proxmigrate(["run"]) == 1
    assert "no Kubernetes configuration" in one_line(capsys)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_run_with_an_api_server_that_does_not_answer(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "kubeconfig"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        f"clusters: [{{name: c, cluster: {{server: 'https://127.0.0.1:{closed_port()}'}}}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
    )
    no_kube(monkeypatch, tmp_path, str(config))
    assert proxmigrate(["run"]) == 1
    assert "does not answer" in one_line(capsys)


def test_unknown_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        proxmigrate(["rn"])
    assert exit_.value.code == 2
    assert "invalid choice: 'rn'" in one_line(capsys)


def live(sim: PvesimProcess, *extra: str) -> list[str]:
    return [
        "simulate",
        "--endpoint",
        sim.url.removeprefix("https://"),
        "--drain",
        "pve1",
        "--runs",
        "1",
        *extra,
    ]


def test_simulate_with_a_wrong_token(
    sim: PvesimProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--token-id", sim.info["token_id"], "--token-secret", "wrong"]
    assert proxmigrate(live(sim, *args, "--ca-cert", sim.info["ca_cert"])) == 1
    assert "rejected" in one_line(capsys)


def test_simulate_with_a_wrong_ca(sim: PvesimProcess, capsys: pytest.CaptureFixture[str]) -> None:
    token = ["--token-id", sim.info["token_id"], "--token-secret", sim.info["token_secret"]]
    assert proxmigrate(live(sim, *token, "--ca-cert", certifi.where())) == 1
    assert "certificate" in one_line(capsys).lower()


def test_simulate_with_an_unreachable_host(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["simulate", "--endpoint", f"127.0.0.1:{closed_port()}", "--drain", "pve1"]
    assert proxmigrate([*args, "--token-id", "a@pam!t", "--token-secret", "s"]) == 1
    assert "cannot connect" in one_line(capsys)


def test_simulate_with_bad_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text("nodes: [a\n")
    assert proxmigrate(["simulate", "--cluster", str(path), "--drain", "a"]) == 2
    assert "not valid YAML" in one_line(capsys)


def test_simulate_with_a_bad_max_startups(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        proxmigrate(["simulate", "--cluster", "x.yaml", "--drain", "a", "--max-startups", "10:30"])
    assert exit_.value.code == 2
    assert "argument --max-startups" in one_line(capsys)


def test_simulate_without_a_token_secret(
    sim: PvesimProcess, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("PVE_TOKEN_SECRET", raising=False)
    assert proxmigrate(live(sim, "--token-id", "a@pam!t")) == 2
    assert "--token-secret-file" in one_line(capsys)


def test_simulate_reads_the_token_from_a_file_or_the_environment(
    sim: PvesimProcess,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    secret = tmp_path / "secret"
    secret.write_text(sim.info["token_secret"] + "\n")
    tls = ["--ca-cert", sim.info["ca_cert"], "--no-progress"]
    assert (
        proxmigrate(
            live(sim, "--token-id", sim.info["token_id"], "--token-secret-file", str(secret), *tls)
        )
        == 0
    )
    assert "Drain of pve1" in capsys.readouterr().out
    monkeypatch.setenv("PVE_TOKEN_ID", sim.info["token_id"])
    monkeypatch.setenv("PVE_TOKEN_SECRET", sim.info["token_secret"])
    assert proxmigrate(live(sim, *tls)) == 0
    assert "Drain of pve1" in capsys.readouterr().out


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text("nodes: [{name: a}]\nvms: 3\n")
    with pytest.raises(TypeError):
        proxmigrate(["--debug", "simulate", "--cluster", str(path), "--drain", "a"])


@pytest.mark.parametrize(
    ("content", "args", "complaint"),
    [
        (None, [], "No such file or directory"),
        ("nodes: [a\n", [], "expected ',' or ']'"),
        ("foo: 1\n", [], "no key 'nodes'"),
        (None, ["--token", "bad"], "token id must be user@realm!name"),
    ],
)
def test_pvesim_serve_with_bad_input(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: str | None,
    args: list[str],
    complaint: str,
) -> None:
    config = tmp_path / "cluster.yaml"
    if content is not None:
        config.write_text(content)
    config_args = ["--config", str(config)] if content is not None or not args else []
    assert pvesim(["serve", *config_args, *args]) == 2
    assert complaint in one_line(capsys)


def test_pvesim_serve_on_a_busy_port(
    sim: PvesimProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    port = sim.url.rsplit(":", 1)[1]
    assert pvesim(["serve", *SMALL, "--port", port]) == 1
    assert "Address already in use" in one_line(capsys)


def test_run_logs_json_lines_on_request(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import json
    import logging

    from proxmigrate import cli, runner

    def run_operator(**_: object) -> int:
        logging.getLogger("proxmigrate.test").warning("cluster %s: %s", "ns/lab", "unreachable")
        return 0

    monkeypatch.setattr(cli, "_check_kubernetes", lambda: None)
    monkeypatch.setattr(runner, "run_operator", run_operator)
    try:
        assert proxmigrate(["run", "--log-format", "json"]) == 0
    finally:
        logging.getLogger().handlers.clear()  # kopf.configure's handler writes to capsys' stream
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["message"] == "cluster ns/lab: unreachable" and line["severity"] == "warn"
