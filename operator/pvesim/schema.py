"""PVE's own API schema (the apidoc JSON) and parameter validation as PVE's JSONSchema.pm does it.

The schema is PVE 9's `apidoc.js` (what pve.proxmox.com/pve-docs/api-viewer shows), fetched at
provisioning time by `hack/fetch-pve-schema.sh` (`make provision`) into
`~/.cache/proxmigrate/pve-api-9.json.gz`, or the file `PROXMIGRATE_PVE_SCHEMA` names. Each
method entry carries `parameters` (path parameters included), `permissions`, `allowtoken`.

Validation follows pve-common `src/PVE/JSONSchema.pm` `validate` -> `check_prop` ->
`check_object` (unknown properties when `additionalProperties` is 0, missing non-optional
ones), `check_type` (a boolean is `0` or `1` only - `parse_boolean`'s yes/no/true/false
spellings are for the CLI; integers `^[+-]?\\d+$`), then `check_format`, `pattern`,
`maxLength`/`minLength`, `maximum`/`minimum`, `enum`, each with JSONSchema.pm's wording.
Errors are collected per parameter into the 400 `Parameter verification failed.`
(pve-common `RESTHandler.pm` `handle`; pve-manager `PVE/HTTPServer.pm` `rest_handler`).
"""

from __future__ import annotations

import gzip
import ipaddress
import json
import os
import re
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from pvesim.model import ApiError

ENV = "PROXMIGRATE_PVE_SCHEMA"
# Where hack/provision.py puts it: the proxmigrate cache, PROXMIGRATE_CACHE if set.
DEFAULT_PATH = (
    Path(os.environ.get("PROXMIGRATE_CACHE") or Path.home() / ".cache" / "proxmigrate")
    / "pve-api-9.json.gz"
)

# Parameters of the apidoc (PVE 9.1) that the simulated release (views.PVE_VERSIONS: 8.4 or
# 9.0) does not have yet, with the release that added them.
ADDED_IN = {
    # qemu-server 9.0, commit dc76a590 "fix #5180: migrate: integrate helper for
    # live-migrating conntrack info" (API2/Qemu.pm migrate_vm)
    ("POST", "/nodes/{node}/qemu/{vmid}/migrate", "with-conntrack-state"): (9, 0),
    # pve-manager 9.1.2, commits a7042a01/77e0e5af (API2/Nodes.pm migrateall `max-workers`)
    ("POST", "/nodes/{node}/migrateall", "max-workers"): (9, 1),
}


class SchemaMissing(OSError):
    """The apidoc file is not there: one line saying how to get it."""


def schema_path() -> Path:
    return Path(os.environ.get(ENV) or DEFAULT_PATH)


@cache
def api_schema() -> dict[str, dict[str, Any]]:
    """`{path: {METHOD: info}}` from the apidoc file (loaded once)."""
    path = schema_path()
    try:
        with gzip.open(path, "rt") as f:
            return dict(json.load(f)["paths"])
    except FileNotFoundError:
        raise SchemaMissing(
            f"PVE API schema not found at {path}: run `make provision` "
            f"(or `bash hack/fetch-pve-schema.sh`), or point {ENV} at it"
        ) from None


def method_info(method: str, path: str) -> dict[str, Any]:
    """The apidoc entry of `METHOD /path/{param}`; KeyError if PVE has no such method."""
    return dict(api_schema()[path][method])


@cache
def parameters(method: str, path: str, release: str) -> dict[str, Any]:
    """The method's parameter schema as PVE `release` (e.g. "8.4") has it (read-only)."""
    schema = dict(method_info(method, path)["parameters"])
    have = tuple(int(part) for part in release.split("."))
    props = dict(schema.get("properties") or {})
    for (m, p, name), added in ADDED_IN.items():
        if (m, p) == (method, path) and have < added:
            props.pop(name, None)
    schema["properties"] = props
    return schema


def validate(schema: dict[str, Any], params: dict[str, str]) -> dict[str, Any]:
    """Check form parameters (path parameters included) against a method's parameter
    schema; return them typed (int, float, bool, str) or raise PVE's 400."""
    props: dict[str, Any] = dict(schema.get("properties") or {})
    errors: dict[str, str] = {}
    for name, prop in props.items():
        if name not in params:
            if not prop.get("optional"):
                _add(errors, name, "property is missing and it is not optional")
            continue
        error = check_prop(params[name], prop)
        if error:
            _add(errors, name, error)
    for name in params:
        if name in props:
            requires = props[name].get("requires")
            if isinstance(requires, str) and requires not in params:
                _add(errors, requires, f"missing property required by '{name}'")
        elif not schema.get("additionalProperties", 1):
            _add(
                errors,
                name,
                "property is not defined in schema and the schema does not allow additional "
                "properties",
            )
    if errors:
        raise ApiError.param(errors)
    return {name: _typed(value, props.get(name, {})) for name, value in params.items()}


def check_prop(value: str, prop: dict[str, Any]) -> str | None:
    """JSONSchema.pm `check_type` then `check_prop`'s scalar checks, in its order."""
    kind = prop.get("type")
    if kind == "boolean" and value not in ("0", "1"):
        return f"type check ('boolean') failed - got '{value}'"
    if kind == "integer" and not re.fullmatch(r"[+-]?\d+", value):
        return f"type check ('integer') failed - got '{value}'"
    if kind == "number" and not _is_number(value):
        return f"type check ('number') failed - got '{value}'"
    fmt = prop.get("format")
    if fmt:
        problem = check_format(fmt, value)
        if problem:
            return f"invalid format - {problem}"
    pattern = prop.get("pattern")
    if pattern and not re.search(f"^(?:{perl_regex(pattern)})$", value):
        return "value does not match the regex pattern"
    if "maxLength" in prop and len(value) > int(prop["maxLength"]):
        return f"value may only be {prop['maxLength']} characters long"
    if "minLength" in prop and len(value) < int(prop["minLength"]):
        return f"value must be at least {prop['minLength']} characters long"
    if _is_number(value):
        if "maximum" in prop and float(value) > float(prop["maximum"]):
            return f"value must have a maximum value of {prop['maximum']}"
        if "minimum" in prop and float(value) < float(prop["minimum"]):
            return f"value must have a minimum value of {prop['minimum']}"
    enum = prop.get("enum")
    if enum and value not in enum:
        return f"value '{value}' does not have a value in the enumeration '{', '.join(enum)}'"
    return None


def check_format(fmt: Any, value: str) -> str | None:
    """JSONSchema.pm `check_format`: a named format, its `-list` (PVE::Tools `split_list`)
    and `-opt` variants; the die message of the format's verifier, or None."""
    if not isinstance(fmt, str):
        raise ApiError(501, "pvesim does not check property-string formats")
    name, kind = fmt, "none"
    for suffix in ("-list", "-opt"):
        if fmt.endswith(suffix) and fmt[: -len(suffix)] in FORMATS:
            name, kind = fmt[: -len(suffix)], suffix[1:]
    verify = FORMATS.get(name)
    if verify is None:
        raise ApiError(501, f"pvesim does not check format '{fmt}'")
    if kind == "list":
        items = value.split("\0") if "\0" in value else re.sub(r"[,;]", " ", value).split()
        return next((p for p in map(verify, items) if p), None)
    if kind == "opt" and not value:
        return None
    return verify(value)


def perl_regex(pattern: str) -> str:
    """apidoc patterns are Perl `qr//` strings: `(?^:...)`/`(?^i:...)` -> `(?:...)`/`(?i:...)`."""
    return pattern.replace("(?^:", "(?:").replace("(?^i:", "(?i:")


def _typed(value: str, prop: dict[str, Any]) -> Any:
    kind = prop.get("type")
    if kind == "integer":
        return int(value)
    if kind == "number":
        return float(value)
    if kind == "boolean":
        return value == "1"
    return value


def _is_number(value: str) -> bool:
    return re.fullmatch(r"[+-]?(\d+\.\d+|\d+\.|\.\d+|\d+)([eE][+-]?\d+)?", value) is not None


def _add(errors: dict[str, str], name: str, message: str) -> None:
    """JSONSchema.pm `add_error`: a second error for one parameter is appended."""
    errors[name] = f"{errors[name]}\\n{message}" if name in errors else message


# -- named formats: the verifiers PVE registers, with their die messages ---------------------
def _regex(pattern: str, message: str) -> Callable[[str], str | None]:
    compiled = re.compile(pattern)
    return lambda v: None if compiled.fullmatch(v) else message.format(v=v)


def _storage_id(value: str) -> str | None:
    """pve-common JSONSchema.pm `parse_id` (`parse_storage_id`)."""
    if len(value) < 2:
        return f"storage ID '{value}' cannot be shorter than 2 characters"
    if not re.fullmatch(r"[a-z][a-z0-9\-_.]*[a-z0-9]", value, re.IGNORECASE):
        return f"storage ID '{value}' contains illegal characters"
    return None


def _storage_pair(value: str) -> str | None:
    """JSONSchema.pm `verify_storagepair`: `source:target` or one storage id, or `1`."""
    if value == "1":
        return None
    return next((p for p in map(_storage_id, value.split(":", 1)) if p), None)


def _cidr(value: str) -> str | None:
    """JSONSchema.pm `pve_verify_cidr` (v4 prefix 8-32, v6 prefix 8-128)."""
    address, sep, prefix = value.partition("/")
    try:
        ip = ipaddress.ip_address(address)
        ok = bool(sep) and prefix.isdigit() and 8 <= int(prefix) <= ip.max_prefixlen
    except ValueError:
        ok = False
    return None if ok else "value does not look like a valid CIDR network"


def _poolid(value: str) -> str | None:
    """pve-access-control AccessControl.pm `verify_poolname`."""
    if len(value.split("/")) > 3:
        return f"pool name '{value}' nested too deeply (max levels = 3)"
    if not re.fullmatch(r"[A-Za-z0-9.\-_]+(?:/[A-Za-z0-9.\-_]+){0,2}", value):
        return f"invalid pool name '{value}'"
    return None


FORMATS: dict[str, Callable[[str], str | None]] = {
    # pve-common src/PVE/JSONSchema.pm
    "pve-node": _regex(
        r"[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?", "value does not look like a valid node name"
    ),
    "pve-vmid": _regex(r"[1-9][0-9]{2,8}", "value does not look like a valid VM ID"),
    "pve-configid": _regex(r"(?i:[a-z][a-z0-9_-]+)", "invalid configuration ID '{v}'"),
    "pve-storage-id": _storage_id,
    "storage-pair": _storage_pair,
    "CIDR": _cidr,
    "pve-task-status-type": _regex(r"(?i:ok|error|warning|unknown)", "invalid status '{v}'"),
    # pve-access-control src/PVE/AccessControl.pm
    "pve-poolid": _poolid,
    # pve-ha-manager src/PVE/HA/Tools.pm pve_verify_ha_resource_or_vm_id
    "pve-ha-resource-or-vm-id": _regex(
        r"[a-z]+:\S+|\d+", "value does not look like a valid ha resource id"
    ),
    # pve-storage src/PVE/Storage/Plugin.pm verify_content (dir's content types)
    "pve-storage-content": _regex(
        r"images|rootdir|vztmpl|iso|backup|snippets|import", "invalid content type '{v}'"
    ),
}
