"""`proxmigrate simulate`: predict a drain from a cluster file or a live PVE API (read-only).

Heavy imports happen in `run`, so `proxmigrate --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from proxmigrate.cliutil import FAILED, USAGE, CliError, Parser, secret_value
from proxmigrate.engine.policy import MaxStartups
from proxmigrate.pve.errors import PveError
from proxmigrate.simulate.summary import ProgressBar, render

ID_ENV, SECRET_ENV = "PVE_TOKEN_ID", "PVE_TOKEN_SECRET"


def add_parser(subparsers: argparse._SubParsersAction[Parser]) -> None:
    sim = subparsers.add_parser(
        "simulate",
        help="predict a node drain on pvesim's model (time, per-target load, SSH drop risk)",
        description="Predict a drain with proxmigrate's planner and engine on pvesim's model.",
    )
    source = sim.add_mutually_exclusive_group(required=True)
    source.add_argument("--cluster", type=Path, help="cluster file (pvesim YAML or JSON format)")
    source.add_argument("--endpoint", help="live PVE API host[:port], read only (GETs)")
    sim.add_argument("--token-id", help="API token id, e.g. root@pam!proxmigrate")
    sim.add_argument(
        "--token-secret",
        help=f"API token secret (visible in ps: prefer --token-secret-file or ${SECRET_ENV})",
    )
    sim.add_argument("--token-secret-file", help="file holding the API token secret ('-': stdin)")
    sim.add_argument(
        "--credentials-secret",
        metavar="NAMESPACE/NAME",
        help="read tokenId and tokenSecret from this Kubernetes Secret (a ProxmoxCluster's "
        "credentials Secret) with the current kubeconfig",
    )
    sim.add_argument("--ca-cert", help="CA bundle for the PVE API's certificate")
    sim.add_argument("--insecure", action="store_true", help="do not verify the PVE certificate")
    sim.add_argument("--drain", action="append", required=True, help="node to drain (repeatable)")
    sim.add_argument("--max-parallel", type=int, default=8, help="maxParallel (default 8)")
    sim.add_argument("--max-parallel-per-target", type=int, help="maxParallelPerTarget")
    sim.add_argument("--max-parallel-per-source", type=int, help="maxParallelPerSource")
    sim.add_argument(
        "--max-startups",
        type=_max_startups_flag,
        help="targets' sshd MaxStartups (default: the file's, else 10:30:100); the policy's "
        "targetSshMaxStartups follows it",
    )
    sim.add_argument(
        "--link-gbit", type=float, help="NIC speed of every node (default: the file's, else 10)"
    )
    sim.add_argument(
        "--dirty-mib-s",
        type=float,
        default=10.0,
        help="guests' memory dirty rate for a live inventory (the API does not say; default 10)",
    )
    sim.add_argument("--compare", help="maxParallel values to tabulate, e.g. 4,8,16,32")
    sim.add_argument("--runs", type=int, default=3, help="seeded runs per setting (default 3)")
    sim.add_argument("--seed", type=int, default=1)
    sim.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    from proxmigrate.api.cluster import MigrationPolicySpec
    from proxmigrate.simulate.predict import predict
    from pvesim.api import router

    try:
        router.check_schema()  # the model answers as PVE's API schema says: needs the file
        config = _cluster_config(args)
    except (OSError, ValueError, CliError) as error:
        print(f"simulate: {_one_line(error)}", file=err)
        return error.code if isinstance(error, CliError) else USAGE
    except PveError as error:  # wrong token or CA, host unreachable: PVE's side
        print(f"simulate: {error}", file=err)
        return FAILED
    nodes = {str(node["name"]) for node in config["nodes"]}
    unknown = [node for node in args.drain if node not in nodes]
    if unknown:
        print(f"simulate: unknown node(s) {', '.join(unknown)}; nodes: {sorted(nodes)}", file=err)
        return 2
    levels = _levels(args)
    predictions = []
    for level in levels:
        spec: dict[str, Any] = {"maxParallel": level}
        if args.max_parallel_per_target:
            spec["maxParallelPerTarget"] = args.max_parallel_per_target
        if args.max_parallel_per_source:
            spec["maxParallelPerSource"] = args.max_parallel_per_source
        spec["targetSshMaxStartups"] = _max_startups(config, args)
        policy = MigrationPolicySpec.from_spec(spec).to_engine_policy()
        sink = None if args.no_progress else ProgressBar(err)
        predictions.append(
            predict(config, args.drain, policy, runs=args.runs, seed=args.seed, progress=sink)
        )
        if sink is not None:
            sink.close()
    print(render(config, args.drain, predictions, _max_startups(config, args)), file=out)
    return 0


def _levels(args: argparse.Namespace) -> list[int]:
    if not args.compare:
        return [args.max_parallel]
    try:
        levels = [int(part) for part in args.compare.split(",") if part.strip()]
    except ValueError:
        message = f"simulate: --compare needs numbers like 4,8,16, got {args.compare!r}"
        raise SystemExit(message) from None
    if not levels or min(levels) < 1:
        raise SystemExit("simulate: --compare values must be >= 1")
    return levels


def _max_startups(config: dict[str, Any], args: argparse.Namespace) -> str:
    if args.max_startups:
        return str(args.max_startups)
    values = {node.get("max_startups") for node in config["nodes"]} - {None}
    return str(values.pop()) if len(values) == 1 else "10:30:100"


def _max_startups_flag(text: str) -> str:
    MaxStartups.parse(text)  # its ValueError is argparse's "invalid value" message
    return text


def _one_line(error: Exception) -> str:
    """An error's text on one line (YAML errors span several: keep where and what)."""
    return " ".join(str(error).split())


def _cluster_config(args: argparse.Namespace) -> dict[str, Any]:
    """The cluster in pvesim's config format, with the command line's overrides applied."""
    if args.cluster is not None:
        import yaml

        text = args.cluster.read_text()
        try:
            loaded = json.loads(text) if args.cluster.suffix == ".json" else yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ValueError(f"{args.cluster}: not valid YAML: {_one_line(error)}") from None
        if not isinstance(loaded, dict) or not loaded.get("nodes"):
            raise ValueError(f"{args.cluster}: not a pvesim cluster file (no 'nodes')")
        config: dict[str, Any] = loaded
        for node in config["nodes"]:
            if args.link_gbit is not None:
                node["nic_gbit"] = args.link_gbit
            if args.max_startups:
                node["max_startups"] = args.max_startups
        return config
    return _live_config(args)


def _live_config(args: argparse.Namespace) -> dict[str, Any]:
    """The operator's inventory read through its PVE client: `GET /cluster/resources` and
    one precondition check per guest of the drained nodes; nothing is written."""
    from proxmigrate.pve.async_client import AsyncPveClient
    from proxmigrate.pve.client import PveClient
    from proxmigrate.pve.transport import TokenAuth
    from proxmigrate.simulate.inventory import config_from_inventory, read_inventory

    token_id, token_secret = _token(args)
    client = PveClient(
        [args.endpoint],
        TokenAuth(token_id, token_secret),
        verify_tls=not args.insecure,
        ca_bundle=args.ca_cert,
    )
    inventory = read_inventory(AsyncPveClient(client), args.drain)
    return config_from_inventory(
        inventory,
        nic_gbit=args.link_gbit if args.link_gbit is not None else 10.0,
        max_startups=args.max_startups or "10:30:100",
        dirty_mib_s=args.dirty_mib_s,
    )


def _token(args: argparse.Namespace) -> tuple[str, str]:
    """The API token from the flags, a file, the environment or a Kubernetes Secret."""
    token_id = args.token_id or os.environ.get(ID_ENV)
    secret = secret_value(
        "--token-secret-file", args.token_secret, args.token_secret_file, SECRET_ENV
    )
    if args.credentials_secret:
        namespace, _, name = args.credentials_secret.rpartition("/")
        data = _read_kubernetes_secret(namespace or "default", name)
        token_id = token_id or data.get("tokenId")
        secret = secret or data.get("tokenSecret")
    if not (token_id and secret):
        raise CliError(
            f"--endpoint needs an API token: --token-id (or ${ID_ENV}) and its secret from "
            f"--token-secret-file, ${SECRET_ENV} or --credentials-secret",
            USAGE,
        )
    return token_id, secret


def _read_kubernetes_secret(namespace: str, name: str) -> dict[str, str]:
    import asyncio

    from kubernetes.client.exceptions import ApiException
    from kubernetes.config import ConfigException

    from proxmigrate.kube import Kube

    try:
        return asyncio.run(Kube().read_secret(namespace, name)).data
    except ConfigException as error:
        raise CliError(f"--credentials-secret: no Kubernetes configuration ({error})") from None
    except ApiException as error:
        raise CliError(
            f"--credentials-secret: cannot read Secret {namespace}/{name}: "
            f"{error.status} {error.reason}"
        ) from None
