"""VMMigrations made by drains and placements."""

from __future__ import annotations

import kopf
from kopf._cogs.structs import finalizers

from proxmigrate.controllers.children import DRAIN_LABEL, migration_manifest
from proxmigrate.controllers.settings import configure


def test_a_child_is_created_with_kopfs_finalizer_so_it_is_admitted_on_its_first_event() -> None:
    """kopf adds its finalizer on an object's first watch event and runs the create handler
    (admission: Queued) only on the event that patch causes; a child created with it is
    admitted on its first (each drain and placement reaction 0.01-0.07 s sooner)."""
    settings = kopf.OperatorSettings()
    configure(settings=settings)
    owner = {"kind": "NodeDrain", "metadata": {"name": "d1", "uid": "u1"}}
    manifest = migration_manifest(
        owner=owner,
        label_key=DRAIN_LABEL,
        cluster="lab",
        vmid=100,
        target="pve2",
        source="pve1",
        online=True,
        with_local_disks=False,
        name="d1-100-u1",
    )
    body = kopf.Body(manifest)
    assert finalizers.is_deletion_blocked(body=body, finalizer=settings.persistence.finalizer)
