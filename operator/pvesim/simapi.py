"""`/_sim/...`: ground truth and fault injection, only on this simulator (docs/pvesim.md)."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from pvesim.model import ApiError, MaxStartups

if TYPE_CHECKING:
    from pvesim.server import Listener, Simulator


def sim_route(
    sim: Simulator, listener: Listener, method: str, path: str, params: dict[str, str]
) -> tuple[int, dict[str, Any]]:
    cluster = sim.cluster
    if method == "GET" and path == "state":
        state = cluster.ground_truth()
        state["clock"] = sim.pace()
        state["endpoints"] = [{"url": ep.url, "up": ep.httpd is not None} for ep in sim.listeners]
        return 200, state
    if method == "POST" and path == "faults":
        apply_faults(sim, params)
        return 200, {"api_faults": cluster.api_faults.as_dict()}
    parts = path.split("/")
    if method == "POST" and len(parts) == 3 and parts[0] == "vms" and parts[2] == "move":
        if not parts[1].isdigit() or int(parts[1]) not in cluster.vms or "target" not in params:
            raise ApiError(400, "need an existing vmid and a 'target'")
        cluster.move_by_hand(int(parts[1]), params["target"])
        return 200, {"vmid": int(parts[1]), "node": params["target"]}
    raise ApiError(404, f"no such simulator endpoint '{method} /_sim/{path}'")


def apply_faults(sim: Simulator, p: dict[str, str]) -> None:
    """Flat keys, all optional; see docs/pvesim.md for the list."""
    cluster, faults = sim.cluster, sim.cluster.api_faults
    if "api_error_rate" in p:
        faults.error_rate = float(p["api_error_rate"])
    if "api_error_status" in p:
        faults.error_status = int(p["api_error_status"])
    if "api_latency" in p:
        faults.latency = float(p["api_latency"])
    if "endpoint_down" in p:
        index = int(p["endpoint_down"])
        faults.endpoints_down.add(index)
        sim.listeners[index].down()
    if "endpoint_up" in p:
        index = int(p["endpoint_up"])
        faults.endpoints_down.discard(index)
        sim.listeners[index].up()
    if "node_offline" in p:
        cluster.set_node_online(p["node_offline"], False)
    if "node_online" in p:
        cluster.set_node_online(p["node_online"], True)
    if "lock_vm" in p:
        cluster.set_lock(int(p["lock_vm"]), p.get("lock", "backup"))
    if "unlock_vm" in p:
        cluster.set_lock(int(p["unlock_vm"]), None)
    if p.get("expire_tickets") in ("1", "true", "True"):
        faults.ticket_epoch += 1
    if "ssh_penalty_node" in p:
        node = cluster.node(p["ssh_penalty_node"])
        source_ip = cluster.node(p["ssh_penalty_source"]).ip
        node.sshd.penalise(source_ip, float(p.get("ssh_penalty_seconds", "20")), cluster.now)
    if "max_startups_node" in p:
        node = cluster.node(p["max_startups_node"])
        limits = MaxStartups.parse(p["max_startups"])
        node.sshd.params = replace(node.sshd.params, max_startups=limits)
