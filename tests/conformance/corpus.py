"""Load the conformance corpus (`cases/*.yaml`) and compare logs and answers by shape.

Every case holds a real PVE answer or task log with its source; see docs/reference/proxmox.md
for the facts behind them. Logs are compared through line templates (times, PIDs, IPs, node
names and volume ids normalised), answers by their keys and JSON types.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

CASES = Path(__file__).parent / "cases"

_TIMESTAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"
_IP = r"\d{1,3}(?:\.\d{1,3}){3}"
_NODE = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
# pve-cluster SSHInfo.pm ssh_info_to_command, with the known_hosts options of PVE 8.1+.
_SSH = (
    rf"/usr/bin/ssh -e none -o 'BatchMode=yes' -o 'HostKeyAlias=(?P<alias>{_NODE})' "
    r"-o 'UserKnownHostsFile=/etc/pve/nodes/(?P=alias)/ssh_known_hosts' "
    rf"-o 'GlobalKnownHostsFile=none' root@{_IP}"
)
_PLACEHOLDERS = {
    "{ts}": _TIMESTAMP,
    "{ip}": _IP,
    "{node}": _NODE,
    "{vmid}": r"\d+",
    "{volid}": r"[^' ]+",
    "{duration}": r"\d\d:\d\d:\d\d",
    "{ssh}": _SSH,
    # OpenSSH's client side of a dropped connection (kex.c, packet.c).
    "{drop}": r"kex_exchange_identification: "
    r"(?:Connection closed by remote host|read: Connection reset by peer)",
    "{dropped}": rf"Connection (?:closed|reset) by {_IP} port 22",
    "{any}": r".*",
}
_PLACEHOLDER = re.compile("|".join(re.escape(key) for key in _PLACEHOLDERS))


def load(name: str) -> Any:
    with (CASES / name).open() as stream:
        return yaml.safe_load(stream)


def having(cases: Iterable[Mapping[str, Any]], *keys: str) -> list[Mapping[str, Any]]:
    """The cases that have every key in `keys` (e.g. a `pvesim` situation)."""
    return [case for case in cases if all(key in case for key in keys)]


def lines(text: str | None) -> list[str]:
    return (text or "").splitlines()


def template(text: str) -> re.Pattern[str]:
    """A log line template as a regex for fullmatch: placeholders become patterns, the rest is
    literal; without a leading `{ts} ` the line must be raw (no timestamp)."""
    parts: list[str] = []
    pos = 0
    for match in _PLACEHOLDER.finditer(text):
        parts.append(re.escape(text[pos : match.start()]))
        parts.append(_PLACEHOLDERS[match.group()])
        pos = match.end()
    parts.append(re.escape(text[pos:]))
    # each `{ssh}` brings a named group and its back-reference: number them pairwise
    return re.compile(re.sub(r"\(\?P<alias>|\(\?P=alias\)", _numbered(), "".join(parts)))


def _numbered() -> Any:
    count = 0

    def rename(match: re.Match[str]) -> str:
        nonlocal count
        if match.group().startswith("(?P<"):
            count += 1
            return f"(?P<alias{count}>"
        return f"(?P=alias{count})"

    return rename


def missing_in_order(log: Sequence[str], templates: Sequence[str]) -> list[str]:
    """The templates that do not match, in this order, a subsequence of `log`'s lines."""
    missing: list[str] = []
    position = 0
    for text in templates:
        pattern = template(text)
        for index in range(position, len(log)):
            if pattern.fullmatch(log[index]):
                position = index + 1
                break
        else:
            missing.append(text)
    return missing


def present(log: Sequence[str], templates: Sequence[str]) -> list[str]:
    """The lines of `log` that match any of `templates` (which should match none)."""
    patterns = [template(text) for text in templates]
    return [line for line in log if any(p.fullmatch(line) for p in patterns)]


def normalised(text: str) -> str:
    """Addresses and durations out: what two runs of the same situation share."""
    text = re.sub(_IP, "<ip>", text)
    return re.sub(r"\d\d:\d\d:\d\d", "<duration>", text)


def read_status(last_line: str) -> str:
    """pve-common src/PVE/UPID.pm read_status: a task's exit status from its last log line."""
    if last_line == "TASK OK":
        return "OK"
    if match := re.fullmatch(r"TASK ERROR: (.+)", last_line):
        return match[1]
    if match := re.fullmatch(r"TASK (WARNINGS: \d+)", last_line):
        return match[1]
    return "unexpected status"


def json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):  # Perl's `+ 0` gives 0 or 0.0123 alike
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list):
        return "array"
    return "null"


def shape(value: Mapping[str, Any]) -> dict[str, str]:
    """Key -> JSON type: what two answers for the same situation must share."""
    return {str(key): json_type(item) for key, item in value.items()}
