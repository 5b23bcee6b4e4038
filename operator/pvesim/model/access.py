"""Users, API tokens and ACLs, and the privileges they give on an ACL path, as PVE computes them.

Sources (pve-access-control): `PVE/AccessControl.pm` `roles` (walk the path from `/`; the
nearest ACL node that names the user or token replaces what was inherited, and only
propagating entries reach below their node; tokens first, then the user), `$privgroups`
(the privilege names); `PVE/RPCEnvironment.pm` `permissions` (root@pam has every privilege;
a token without privilege separation has its user's privileges, a privilege-separated one the
intersection of its own and its user's) and `compile_acl_path` (roles granted on
`/pool/<pool>` apply to `/vms/<vmid>` of the pool's members). Here an ACL grants a set of
privileges (a role is just that) and always propagates (`pveum acl modify` default).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

ROOT = "root@pam"
ROOT_TOKEN = "root@pam!pvesim"  # the simulator's default token: root's, not privilege-separated

# AccessControl.pm `$privgroups` plus `Permissions.Modify` (PVE 9).
PRIVILEGES = frozenset(
    [
        "VM.Config.Disk",
        "VM.Config.CPU",
        "VM.Config.Memory",
        "VM.Config.Network",
        "VM.Config.HWType",
        "VM.Config.Options",
        "VM.Allocate",
        "VM.Clone",
        "VM.GuestAgent.Unrestricted",
        "VM.Migrate",
        "VM.Replicate",
        "VM.Snapshot",
        "VM.Snapshot.Rollback",
        "VM.Config.CDROM",
        "VM.Config.Cloudinit",
        "VM.Console",
        "VM.Backup",
        "VM.GuestAgent.FileRead",
        "VM.GuestAgent.FileSystemMgmt",
        "VM.GuestAgent.FileWrite",
        "VM.PowerMgmt",
        "VM.Audit",
        "VM.GuestAgent.Audit",
        "Sys.PowerMgmt",
        "Sys.Modify",
        "Sys.Incoming",
        "Sys.AccessNetwork",
        "Sys.Console",
        "Sys.Syslog",
        "Sys.Audit",
        "Datastore.Allocate",
        "Datastore.AllocateTemplate",
        "Datastore.AllocateSpace",
        "Datastore.Audit",
        "SDN.Allocate",
        "SDN.Audit",
        "SDN.Use",
        "Realm.Allocate",
        "User.Modify",
        "Group.Allocate",
        "Realm.AllocateUser",
        "Pool.Allocate",
        "Pool.Audit",
        "Mapping.Modify",
        "Mapping.Use",
        "Mapping.Audit",
        "Permissions.Modify",
    ]
)

Acl = dict[str, frozenset[str]]  # ACL path -> privileges granted there (propagating)


@dataclass
class Token:
    privsep: bool = True  # `pveum user token add` default
    acl: Acl = field(default_factory=dict)


@dataclass
class Access:
    users: dict[str, Acl] = field(default_factory=dict)
    tokens: dict[str, Token] = field(default_factory=lambda: {ROOT_TOKEN: Token(privsep=False)})

    def privileges(
        self, who: str, path: str, pool_of: Callable[[str], str | None] = lambda _: None
    ) -> frozenset[str]:
        """Privileges of a user or token (`user@realm!name`) on `path`; `pool_of` maps an
        ACL path to the pool it belongs to (`/vms/<vmid>` of a pool member)."""
        if who == ROOT:
            return PRIVILEGES
        user, _, name = who.partition("!")
        if name:
            token = self.tokens.get(who)
            if token is None:
                return frozenset()
            own = self.privileges(user, path, pool_of)
            if not token.privsep:
                return own
            return own & _acl_privileges(token.acl, path, pool_of)
        return _acl_privileges(self.users.get(who, {}), path, pool_of)

    def has(
        self,
        who: str,
        path: str,
        privs: Iterable[str],
        *,
        any_of: bool = False,
        pool_of: Callable[[str], str | None] = lambda _: None,
    ) -> bool:
        """RPCEnvironment.pm `check` (all of `privs`) or `check_any` (`any_of`)."""
        held = self.privileges(who, path, pool_of)
        wanted = list(privs)
        return any(p in held for p in wanted) if any_of else all(p in held for p in wanted)

    @classmethod
    def parse(cls, config: Mapping[str, object]) -> Access:
        """The cluster YAML's `access:` (docs/pvesim.md): `users: {userid: {path: [privs]}}`,
        `tokens: {tokenid: {privsep: bool, acl: {path: [privs]}}}`; the root token stays."""
        access = cls()
        for userid, acl in dict(config.get("users") or {}).items():  # type: ignore[call-overload]
            access.users[str(userid)] = parse_acl(acl)
        for tokenid, spec in dict(config.get("tokens") or {}).items():  # type: ignore[call-overload]
            access.add_token(str(tokenid), parse_acl(spec.get("acl")), bool(spec.get("privsep", 1)))
        return access

    def add_token(self, tokenid: str, acl: Acl, privsep: bool = True) -> None:
        user, sep, name = tokenid.partition("!")
        if not (sep and name and "@" in user):
            raise ValueError(f"token id must be user@realm!name, got {tokenid!r}")
        self.users.setdefault(user, {})
        self.tokens[tokenid] = Token(privsep=privsep, acl=acl)


def parse_acl(spec: object) -> Acl:
    """`{path: [privilege, ...]}` (or a comma-separated string) with PVE's privilege names."""
    acl: Acl = {}
    for path, privs in dict(spec or {}).items():  # type: ignore[call-overload]
        names = privs.split(",") if isinstance(privs, str) else list(privs)
        unknown = sorted(set(n.strip() for n in names) - PRIVILEGES)
        if unknown:
            raise ValueError(f"unknown PVE privilege(s) {', '.join(unknown)} on {path}")
        acl[normalize_path(str(path))] = frozenset(n.strip() for n in names)
    return acl


def normalize_path(path: str) -> str:
    """AccessControl.pm `normalize_path`: one leading `/`, no doubled or trailing `/`."""
    return "/" + "/".join(part for part in path.split("/") if part)


def _acl_privileges(acl: Acl, path: str, pool_of: Callable[[str], str | None]) -> frozenset[str]:
    path = normalize_path(path)
    parts = [p for p in path.split("/") if p]
    held = acl.get("/", frozenset())
    for i in range(len(parts)):  # the nearest ACL node replaces what was inherited
        held = acl.get("/" + "/".join(parts[: i + 1]), held)
    pool = pool_of(path)
    if pool is not None:  # pool ACLs add to the path's own (compile_acl_path)
        held = held | _acl_privileges(acl, f"/pool/{pool}", lambda _: None)
    return held
