"""Node objects of ``GET /nodes`` per version (REFERENCE.md section 1.5)."""

from __future__ import annotations

from typing import Any

from emqx_simulator.cluster import SimCluster

# Nodes were up a while before the simulation started: 5 days plus a few hours each.
_BOOT_AGE_MS = 5 * 86_400_000


def _uptime_ms(cluster: SimCluster, k: int) -> int:
    return _BOOT_AGE_MS + k * 3_723_000 + (cluster.now_ms() - cluster.start_ms)


def uptime_text(ms: int) -> str:
    """EMQX 3/4 uptime: ``"4 hours, 21 minutes, 19 seconds"`` (leading zero units omitted)."""
    seconds = ms // 1000
    units = (("days", 86400), ("hours", 3600), ("minutes", 60), ("seconds", 1))
    parts: list[str] = []
    for name, size in units:
        amount, seconds = divmod(seconds, size)
        if amount or parts or name == "seconds":
            parts.append(f"{amount} {name}")
    return ", ".join(parts)


def _memory(sessions: int) -> tuple[float, float]:
    """(total, used) megabytes of a node holding ``sessions`` sessions."""
    used = 180.0 + sessions * 0.04
    return used * 1.35 + 64.0, used


def _load(k: int) -> tuple[float, float, float]:
    return (1.1 + 0.17 * k, 0.95 + 0.11 * k, 0.8 + 0.07 * k)


def node_info(cluster: SimCluster, k: int, single: bool = False) -> dict[str, Any]:
    """The ``/nodes`` object of node ``k`` (``single``: as ``GET /nodes/{node}`` returns it)."""
    f = cluster.features
    name = cluster.node_names[k]
    if f.api == "v5" and k in cluster.down_nodes():
        return {"node": name, "node_status": "stopped", "role": "core"}
    sessions, online = cluster.node_counts(k)
    total_mb, used_mb = _memory(sessions)
    load = _load(k)
    uptime = _uptime_ms(cluster, k)
    common: dict[str, Any] = {"max_fds": 1048576, "process_available": 2097152,
                              "process_used": 420 + 2 * sessions}  # fmt: skip
    if f.api == "v5":
        info: dict[str, Any] = {
            "node": name,
            "node_status": "running",
            "role": "core",
            "edition": "Opensource",
            "version": f.version_text,
            "uptime": uptime,
            "connections": sessions,
        }
        if f.live_connections:
            info["live_connections"] = online
        if f.cluster_sessions:
            info["cluster_sessions"] = sum(
                cluster.node_counts(n)[0] for n in cluster.running_nodes(sort=True)
            )
        info.update(
            load1=round(load[0], 2), load5=round(load[1], 2), load15=round(load[2], 2),
            memory_total=f"{total_mb:.2f}M", memory_used=f"{used_mb:.2f}M",
            otp_release="26.2.5-2/14.2.5", sys_path="/opt/emqx", log_path="/opt/emqx/log",
            **common,
        )  # fmt: skip
        return info
    raw_memory = single and (f.api == "v3" or f.version < (4, 3, 12))
    info = {"node": name} if f.api == "v4" or not single else {}
    if f.api == "v3":
        info = {"name": name, **info}
    info.update(
        node_status="Running",
        connections=online if f.api == "v3" else sessions,
    )
    if f.live_connections:
        info["live_connections"] = online
    info.update(
        load1=f"{load[0]:.2f}", load5=f"{load[1]:.2f}", load15=f"{load[2]:.2f}",
        memory_total=int(total_mb * 1048576) if raw_memory else f"{total_mb:.2f}M",
        memory_used=int(used_mb * 1048576) if raw_memory else f"{used_mb:.2f}M",
        otp_release="R21/10.3.5" if f.api == "v3" else "24.3.4.2/12.3.2.2",
        uptime=uptime_text(uptime), version=f.version_text, **common,
    )  # fmt: skip
    return info


def nodes_list(cluster: SimCluster) -> list[dict[str, Any]]:
    """What ``GET /nodes`` lists: v5 shows stopped nodes, v3/v4 drop them silently (their
    stopped-node entries do not match the list comprehension's pattern, emqx_mgmt.erl@v4.4.19
    L134-138) but write a node whose RPC failed as ``{"node": N, "error": Reason}``."""
    down = cluster.down_nodes()
    ids = range(len(cluster.node_names))
    if cluster.features.api == "v5":
        return [node_info(cluster, k) for k in sorted(ids, key=cluster.node_names.__getitem__)]
    return [node_info(cluster, k) if k not in down
            else {"node": cluster.node_names[k], "error": "nodedown"}
            for k in ids if k not in down or k in cluster.unreachable]
