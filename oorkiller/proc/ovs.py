"""Open vSwitch: what its database says about interfaces and the guests behind them.

Read with `ovs-vsctl --format=json ... list Interface`, run with a timeout and
only when ovs-vsctl is installed and the database socket exists, so a host
without Open vSwitch costs nothing (two stat calls per look; json, shutil and
subprocess are imported only where a database exists). The socket is, in order:

- `OORKILLER_OVS_DB` (a `unix:/path`, `tcp:...` remote, or a bare socket path),
- `$OVS_RUNDIR/db.sock` (the variable Open vSwitch's own tools honour),
- `/run/openvswitch/db.sock`, then `/var/run/openvswitch/db.sock`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

COLUMNS = "name,mac_in_use,external_ids,type"
TIMEOUT = 5.0          # seconds for the whole ovs-vsctl run
DB_TIMEOUT = 3         # ovs-vsctl's own --timeout, so it gives up before we kill it
DEFAULT_SOCKETS = ("/run/openvswitch/db.sock", "/var/run/openvswitch/db.sock")


class OvsError(Exception):
    """ovs-vsctl ran but did not give a usable answer."""


@dataclass(frozen=True)
class OvsInterface:
    name: str
    mac_in_use: str          # "" when unset
    attached_mac: str        # external_ids:attached-mac, the guest's MAC; "" when none
    type: str                # "" (system), internal, tap, patch, dpdk, ...

    @property
    def internal(self) -> bool:
        return self.type == "internal"


def database(environ=os.environ) -> str | None:
    """The `--db` remote to use, or None when no database is there."""
    explicit = environ.get("OORKILLER_OVS_DB")
    if explicit:
        return explicit if ":" in explicit else f"unix:{explicit}"
    candidates = [os.path.join(environ["OVS_RUNDIR"], "db.sock")] if environ.get("OVS_RUNDIR") else []
    for path in candidates + list(DEFAULT_SOCKETS):
        if os.path.exists(path):
            return f"unix:{path}"
    return None


def available(environ=os.environ) -> bool:
    """ovs-vsctl is installed and a database socket exists."""
    if database(environ) is None:
        return False
    import shutil
    return shutil.which("ovs-vsctl") is not None


def list_interfaces(environ=os.environ) -> list[OvsInterface]:
    """The Interface table. Raises OvsError when the database does not answer."""
    import shutil
    import subprocess
    db = database(environ)
    if db is None or shutil.which("ovs-vsctl") is None:
        raise OvsError("no Open vSwitch database")
    argv = ["ovs-vsctl", f"--db={db}", f"--timeout={DB_TIMEOUT}", "--format=json",
            f"--columns={COLUMNS}", "list", "Interface"]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=TIMEOUT, env=dict(environ),
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise OvsError(f"ovs-vsctl did not answer within {TIMEOUT:g}s") from None
    except OSError as err:
        raise OvsError(f"cannot run ovs-vsctl: {err.strerror}") from None
    if done.returncode != 0:
        message = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise OvsError(f"ovs-vsctl failed: {message[-1] if message else done.returncode}")
    return parse_interfaces(done.stdout)


def parse_interfaces(output: bytes | str) -> list[OvsInterface]:
    """`{"headings": [...], "data": [[...], ...]}` → OvsInterface rows."""
    import json
    try:
        table = json.loads(output)
        headings = table["headings"]
        rows = [dict(zip(headings, row)) for row in table["data"]]
    except (ValueError, KeyError, TypeError) as err:
        raise OvsError(f"unreadable ovs-vsctl output: {err}") from None
    interfaces = []
    for row in rows:
        name = _atom(row.get("name"))
        if not isinstance(name, str) or not name:
            continue
        interfaces.append(OvsInterface(
            name=name,
            mac_in_use=_mac(_atom(row.get("mac_in_use"))),
            attached_mac=_mac(_map(row.get("external_ids")).get("attached-mac")),
            type=_atom(row.get("type")) or "",
        ))
    return interfaces


def _atom(value):
    """OVSDB JSON: an atom, or ["set", [...]] holding zero or one atom."""
    if isinstance(value, list) and len(value) == 2 and value[0] == "set":
        items = value[1]
        return items[0] if len(items) == 1 else None
    return value


def _map(value) -> dict:
    if isinstance(value, list) and len(value) == 2 and value[0] == "map":
        return {k: v for k, v in value[1] if isinstance(k, str) and isinstance(v, str)}
    return {}


def _mac(value) -> str:
    if not isinstance(value, str):
        return ""
    value = value.strip().lower()
    parts = value.split(":")
    if len(parts) != 6 or not all(len(p) == 2 and all(c in "0123456789abcdef" for c in p) for p in parts):
        return ""
    return value


# ------------------------------------------------------------------ judging
def find_duplicates(interfaces: list[OvsInterface], local_names=frozenset(), ignore=()):
    """Guests with the same MAC (same attached-mac), and OVS ports with the
    same MAC in use that the kernel cannot see (DPDK, userspace), with the
    OVS port names. Returns netscan.Duplicate records of kind `ovs`."""
    from oorkiller.proc.netscan import ZERO_MAC, Duplicate

    kept = [i for i in interfaces if not any(p.search(i.name) for p in ignore)]
    found = []
    for mac, members in _group(kept, lambda i: i.attached_mac).items():
        found.append(Duplicate(mac, tuple(sorted(i.name for i in members)), "ovs", "ovs",
                               {"by": "attached-mac"}))
    seen = {d.interfaces for d in found}
    for mac, members in _group(kept, lambda i: i.mac_in_use).items():
        if mac == ZERO_MAC:
            continue
        # A bridge's internal port takes a port's MAC: not a fault.
        ports = [i for i in members if not i.internal] or members
        names = tuple(sorted(i.name for i in ports))
        # Interfaces the kernel shows are judged by netscan, with more facts.
        if len(ports) < 2 or names in seen or all(n in local_names for n in names):
            continue
        found.append(Duplicate(mac, names, "ovs", "ovs", {"by": "mac_in_use"}))
    return found


def _group(interfaces, mac_of) -> dict:
    groups: dict = {}
    for interface in interfaces:
        mac = mac_of(interface)
        if mac:
            groups.setdefault(mac, []).append(interface)
    return {mac: members for mac, members in groups.items() if len(members) > 1}
