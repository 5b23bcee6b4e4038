"""`proxmigrate` command line: run the operator, and the tools around it."""

from __future__ import annotations

import argparse
import sys

from proxmigrate import __version__
from proxmigrate.cliutil import CliError, Parser, guarded
from proxmigrate.simulate.command import add_parser as add_simulate_parser


def _add_run(subparsers: argparse._SubParsersAction[Parser]) -> None:
    run = subparsers.add_parser(
        "run", help="run the operator (kopf) against the current kubeconfig"
    )
    scope = run.add_mutually_exclusive_group()
    scope.add_argument(
        "-n", "--namespace", action="append", default=[], help="watch this namespace (repeatable)"
    )
    scope.add_argument(
        "-A", "--all-namespaces", action="store_true", help="watch every namespace (default)"
    )
    run.add_argument("--metrics-port", type=int, default=8080, help="Prometheus /metrics port")
    run.add_argument("--health-port", type=int, default=8081, help="liveness /healthz port")
    run.add_argument(
        "--bind-address", default="0.0.0.0", help="address for the metrics and health servers"
    )
    run.add_argument(
        "--peering", default="proxmigrate", help="kopf peering name; 'none' runs standalone"
    )
    run.add_argument(
        "--priority", type=int, default=0, help="kopf peering priority (distinct per replica)"
    )
    run.add_argument(
        "--task-poll-seconds",
        type=float,
        default=2.0,
        help="how often running migration tasks are polled (one request per source node)",
    )
    run.add_argument(
        "--peering-lifetime",
        type=int,
        default=60,
        help="seconds a silent peer counts as alive; a standby takes over after this",
    )
    run.add_argument(
        "--allow-insecure-tls",
        action="store_true",
        help="let ProxmoxClusters set spec.tls.insecureSkipVerify (their tokens then go to "
        "whoever answers at their endpoints); refused by default",
    )
    run.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    run.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="json: one JSON object per line (for log collectors)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="proxmigrate",
        description="Kubernetes operator for throttled, secure Proxmox VE live migrations.",
    )
    parser.add_argument("--version", action="version", version=f"proxmigrate {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_run(subparsers)
    add_simulate_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return guarded("proxmigrate", args.debug, lambda: _command(args))


def _check_kubernetes() -> None:
    """Fail in one line when no API server can be reached, before kopf starts (which would
    print pages of traceback): no kubeconfig, a wrong context, an API server down."""
    from kubernetes.client import Configuration
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config import ConfigException
    from urllib3.exceptions import HTTPError

    from proxmigrate.kube import check_api_server

    try:
        check_api_server()
    except ConfigException as error:
        raise CliError(
            f"no Kubernetes configuration ({error}); set KUBECONFIG or run in a pod"
        ) from None
    except (HTTPError, OSError) as error:
        detail = str(getattr(error, "reason", None) or error).rsplit(": ", 1)[-1]
        server = Configuration.get_default_copy().host
        raise CliError(f"the Kubernetes API server {server} does not answer: {detail}") from None
    except ApiException as error:
        raise CliError(
            f"the Kubernetes API server refused: {error.status} {error.reason}"
        ) from None


def _command(args: argparse.Namespace) -> int:
    if args.command == "run":
        import kopf

        from proxmigrate.runner import run_operator

        _check_kubernetes()
        log_format = kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.FULL
        kopf.configure(verbose=args.verbose, log_format=log_format)
        return run_operator(
            namespaces=args.namespace,
            metrics_port=args.metrics_port,
            health_port=args.health_port,
            bind_address=args.bind_address,
            peering=None if args.peering == "none" else args.peering,
            priority=args.priority,
            task_poll_seconds=args.task_poll_seconds,
            peering_lifetime_seconds=args.peering_lifetime,
            allow_insecure_tls=args.allow_insecure_tls,
        )
    if args.command == "simulate":
        from proxmigrate.simulate.command import run as run_simulate

        return run_simulate(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
