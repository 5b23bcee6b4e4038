"""`pvesim serve ...`: start the simulator and print one JSON line describing it."""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Literal

import yaml

from proxmigrate.cliutil import USAGE, CliError, Parser, guarded
from pvesim.api import router
from pvesim.auth import TOKEN_ID
from pvesim.certs import write_self_signed
from pvesim.model import Cluster, ModelParams, from_config, generate
from pvesim.model.access import parse_acl
from pvesim.openssh import OpenSsh, attach
from pvesim.schema import SchemaMissing
from pvesim.server import Listener, Simulator


def build_cluster(args: argparse.Namespace) -> Cluster:
    params = ModelParams(pve_version=args.pve_version, start_time=args.start_time)
    if args.config:
        config = yaml.safe_load(Path(args.config).read_text())
        if args.pve_version_given:
            config["pve_version"] = args.pve_version
        params = replace(params, pve_version=int(config.get("pve_version", args.pve_version)))
        cluster = from_config(config, seed=args.seed, params=params)
        args.sshd = args.sshd or str(config.get("sshd", "model"))
        if args.sshd not in ("model", "openssh"):
            raise ValueError(f"sshd: {args.sshd!r} is neither 'model' nor 'openssh'")
    else:
        cluster = generate(args.nodes, args.vms_per_node, seed=args.seed, params=params)
    for spec in args.token:
        add_token(cluster, spec)
    return cluster


def add_token(cluster: Cluster, spec: str) -> None:
    """`--token 'user@realm!name=/PATH:PRIV,PRIV;/PATH2:PRIV'`: a privilege-separated token
    and its user, both granted that ACL, so the token holds exactly those privileges."""
    token_id, _, acl_spec = spec.partition("=")
    acl = parse_acl(dict(entry.partition(":")[::2] for entry in acl_spec.split(";") if entry))
    cluster.access.add_token(token_id, acl)
    cluster.access.users[token_id.partition("!")[0]] = acl


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = Parser(prog="pvesim", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the PVE API over HTTPS")
    serve.add_argument("--config", help="cluster YAML (docs/pvesim.md)")
    serve.add_argument("--nodes", type=int, default=3)
    serve.add_argument("--vms-per-node", type=int, default=10)
    serve.add_argument("--seed", type=int, default=0)
    serve.add_argument("--time-scale", type=float, default=1.0)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=0)
    serve.add_argument("--endpoints", type=int, default=1, help="API endpoints (ports)")
    serve.add_argument("--pve-version", type=int, choices=(8, 9), default=None)
    serve.add_argument(
        "--sshd",
        choices=("model", "openssh"),
        default=None,
        help="model: simulated sshd (default); openssh: one real sshd per node on loopback "
        "(overrides the cluster YAML's `sshd`; docs/pvesim.md)",
    )
    serve.add_argument(
        "--token",
        action="append",
        default=[],
        metavar="ID=ACL",
        help="an extra API token, e.g. 'ops@pve!op=/:VM.Audit,VM.Migrate;/nodes:Sys.Audit' "
        "(repeatable; secrets in the JSON line's `tokens`)",
    )
    serve.add_argument(
        "--start-time",
        type=float,
        default=float(int(time.time())),
        help="simulated epoch seconds at start (default: now, so task times read like PVE's; "
        "with --time-scale >= 1 the simulated clock never falls behind the real one)",
    )
    args = parser.parse_args(argv)
    args.pve_version_given = args.pve_version is not None
    args.pve_version = args.pve_version or 8
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return guarded("pvesim", args.debug, lambda: serve(args))


def serve(args: argparse.Namespace) -> int:
    try:
        router.check_schema()
        cluster = build_cluster(args)
    except KeyError as exc:
        raise CliError(f"{args.config}: no key {exc}", USAGE) from None
    except (SchemaMissing, ValueError, TypeError, yaml.YAMLError) as exc:
        raise CliError(f"{args.config or 'serve'}: {' '.join(str(exc).split())}", USAGE) from None
    except OSError as exc:
        raise CliError(f"{exc.filename or args.config}: {exc.strerror}", USAGE) from None
    workdir = Path(tempfile.mkdtemp(prefix="pvesim-"))
    try:
        return serve_from(args, cluster, workdir)
    finally:  # its private keys and sshd files go with it
        shutil.rmtree(workdir, ignore_errors=True)


def serve_from(args: argparse.Namespace, cluster: Cluster, workdir: Path) -> int:
    """Serve `cluster` until SIGTERM or SIGINT, with certificates and sshd files in
    `workdir`."""
    certs = write_self_signed(workdir)
    sim = Simulator(cluster, args.time_scale, args.seed)
    ssh = start_openssh(sim, workdir) if (args.sshd or "model") == "openssh" else None
    if ssh is False:
        return 2
    for index in range(args.endpoints):
        port = args.port + index if args.port else 0
        listener = Listener(sim, args.host, port, certs)
        try:
            listener.up()
        except OSError as exc:
            raise CliError(f"cannot listen on {args.host}:{port}: {exc.strerror}") from None
        sim.listeners.append(listener)
    sim.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    info = {
        "url": sim.listeners[0].url,
        "urls": [ep.url for ep in sim.listeners],
        "token_id": TOKEN_ID,
        "token_secret": sim.credentials.token_secret,
        "tokens": sim.credentials.token_secrets,
        "password": sim.credentials.password,
        "ca_cert": str(certs.ca_cert),
    }
    if ssh:
        info["sshd"] = {name: f"127.0.0.1:{node.port}" for name, node in ssh.nodes.items()}
    print(json.dumps(info), flush=True)
    stop.wait()
    for listener in sim.listeners:
        listener.down()
    sim.stop()
    if ssh:
        ssh.stop()
    return 0


def start_openssh(sim: Simulator, workdir: Path) -> OpenSsh | Literal[False]:
    """`--sshd openssh`: real sshd per node. pvesim asks for SIGTERM when its parent dies
    (PR_SET_PDEATHSIG), so its sshd processes never outlive a killed caller."""
    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before prctl: nobody wants us any more
        return False
    try:
        ssh = attach(sim, workdir)
    except OSError as exc:
        print(f"pvesim: {exc}", file=sys.stderr)
        return False
    for note in ssh.notes:
        print(f"pvesim: {note}", file=sys.stderr)
    return ssh


if __name__ == "__main__":
    sys.exit(main())
