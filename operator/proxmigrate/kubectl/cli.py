"""The command line: kubectl's global flags anywhere on the line, the subcommands, and one
`error:` line with an exit status (EXIT_*) instead of a traceback."""

from __future__ import annotations

import argparse
import re
import sys
from typing import TextIO

from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from proxmigrate.api.constants import FINALIZER
from proxmigrate.cliutil import Parser
from proxmigrate.kubectl.drain import cmd_cancel, cmd_drain
from proxmigrate.kubectl.errors import (
    EXIT_ERROR,
    EXIT_NOT_DRAINED,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    PluginError,
)
from proxmigrate.kubectl.finalizers import cmd_release_finalizers
from proxmigrate.kubectl.plan import cmd_plan
from proxmigrate.kubectl.session import Session, api_message
from proxmigrate.kubectl.status import cmd_status

OUTPUTS = ("json", "yaml", "wide", "name")


def duration(text: str) -> float:
    """kubectl's durations: `90`, `90s`, `5m`, `1h30m`."""
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", text)
    if not text or parts is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 90s, 5m or 1h")
    hours, minutes, seconds = (int(part or 0) for part in parts.groups())
    return float(hours * 3600 + minutes * 60 + seconds)


def _kubectl_flags(defaults: bool) -> Parser:
    """kubectl's global flags, accepted before or after the subcommand: the top level holds
    the defaults, the subcommands leave a flag unset unless it is given there."""
    flags = Parser(add_help=False)

    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    flags.add_argument(
        "--kubeconfig",
        default=default(None),
        help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)",
    )
    flags.add_argument("--context", default=default(None), help="kubeconfig context to use")
    flags.add_argument(
        "-n", "--namespace", default=default(None), help="namespace (default: the context's)"
    )
    flags.add_argument(
        "-o", "--output", choices=OUTPUTS, default=default(None), help="json, yaml, wide or name"
    )
    flags.add_argument(
        "--debug", action="store_true", default=default(False), help="tracebacks of errors"
    )
    return flags


def build_parser() -> argparse.ArgumentParser:
    common = _kubectl_flags(defaults=False)
    parser = Parser(
        prog="kubectl proxmigrate",
        description="Drain Proxmox VE nodes with proxmigrate.",
        parents=[_kubectl_flags(defaults=True)],
        epilog=f"exit status: {EXIT_OK} ok (a waited-for drain ended Drained or Returned), "
        f"{EXIT_ERROR} error, {EXIT_USAGE} bad usage, {EXIT_NOT_DRAINED} the drain ended "
        f"Failed/Blocked/Cancelled or a plan leaves VMs behind, {EXIT_TIMEOUT} --timeout passed",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help_, parents=[common])

    drain = command("drain", "move every guest off NODE")
    drain.add_argument("node")
    drain.add_argument("--proxmox-cluster", help="ProxmoxCluster (default: the only one)")
    drain.add_argument("--max-parallel", type=int, help="most migrations of this drain at once")
    drain.add_argument("--dry-run", action="store_true", help="only plan; move nothing")
    drain.add_argument("--allow-partial", action="store_true", help="move what fits")
    drain.add_argument("--name", help="NodeDrain name (default: drain-NODE)")
    drain.add_argument("--wait", action="store_true", help="show progress until the drain ends")
    drain.add_argument(
        "--timeout", type=duration, help="with --wait: give up after this long (e.g. 30m)"
    )
    drain.set_defaults(run=cmd_drain)
    cancel = command("cancel", "delete the NodeDrain of NODE")
    cancel.add_argument("node")
    cancel.set_defaults(run=cmd_cancel)
    status = command("status", "NodeDrains and VMPlacements")
    status.set_defaults(run=cmd_status)
    plan = command(
        "plan",
        "show where NODE's guests would go, or (--maintenance) the steps of a rolling "
        "maintenance; move nothing",
    )
    plan.add_argument("node", nargs="?")
    plan.add_argument(
        "--maintenance",
        nargs="*",
        metavar="NODE",
        help="plan a NodeMaintenance over these nodes, in order (NODE first if given)",
    )
    plan.add_argument(
        "--nodes-at-once", type=int, default=1, help="with --maintenance: nodes per step (1)"
    )
    plan.add_argument(
        "--no-return", action="store_true", help="with --maintenance: guests do not return home"
    )
    plan.add_argument("--proxmox-cluster", help="ProxmoxCluster (default: the only one)")
    plan.add_argument("--timeout", type=duration, help="wait this long for the plan (60s)")
    plan.set_defaults(run=cmd_plan)
    release = command(
        "release-finalizers",
        f"operator gone: remove {FINALIZER} so deletions (and CRD deletion) complete",
    )
    release.add_argument(
        "-A", "--all-namespaces", action="store_true", help="every namespace, not just -n's"
    )
    release.add_argument("-y", "--yes", action="store_true", help="do not ask (scripts)")
    release.add_argument(
        "--force", action="store_true", help="even while kopf peering shows a live operator"
    )
    release.add_argument(
        "--peering", default="proxmigrate", help="the operator's peering name (proxmigrate)"
    )
    release.set_defaults(run=cmd_release_finalizers)
    return parser


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    args = build_parser().parse_args(argv)
    stream = out or sys.stdout
    try:
        session = Session(args.kubeconfig, args.context, args.namespace)
        try:
            return int(args.run(session, args, stream))
        except (HTTPError, OSError) as error:
            if args.debug:
                raise
            detail = str(getattr(error, "reason", None) or error).rsplit(": ", 1)[-1]
            raise PluginError(
                f"the Kubernetes API server {session.server} does not answer: {detail}"
            ) from None
    except PluginError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.code
    except ApiException as error:
        print(f"error: Kubernetes API: {api_message(error)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        hint = (
            " (the NodeDrain keeps running; `kubectl proxmigrate cancel` stops it)"
            if args.command in ("drain", "plan")
            else ""
        )
        print(f"\ninterrupted{hint}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
