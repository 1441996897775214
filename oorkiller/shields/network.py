"""The network shield: interfaces carrying the same MAC address.

Each step looks at three sources and merges what they say:

- sysfs (/sys/class/net): local interfaces sharing a MAC without being stacked
  on one another (`netscan`), kind `local`, or `guest` for two libvirt taps;
- the Open vSwitch database, when there is one (`ovs`): guests with the same
  `external_ids:attached-mac`, kind `ovs`, named by their OVS ports;
- the kernel log: a bridge complaining it "received packet on PORT with own
  address as source address", read from /dev/kmsg where the monitor started.

A duplicate is recorded once when it appears (`duplicate-mac`) and once when
it goes away (`duplicate-mac-cleared`). With `action: down` the newest member
of a new duplicate (highest ifindex) is set down, but only when it is a VM's
tap/vnet port; anything else is never touched and the skip is recorded.
"""
from __future__ import annotations

import fcntl
import os
import socket
import struct

from oorkiller.proc import netscan
from oorkiller.proc import ovs
from oorkiller.record.reader import parse_kmsg_entry
from oorkiller.shields.base import Monitor

KERNEL_HOLD = 300.0          # a bridge complaint stays current this long after its last line
KMSG_READS_PER_STEP = 20000  # bound the work of one step when the log is flooded
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
IFNAMSIZ = 16


class KernelLogWatch:
    """Reads /dev/kmsg without blocking, from where it was opened onwards."""

    def __init__(self, path: str = "/dev/kmsg"):
        self.fd = None
        self.problem = ""
        try:
            self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            os.lseek(self.fd, 0, os.SEEK_END)     # only what happens from now on
        except OSError as err:
            self.problem = f"cannot read {path}: {err.strerror}"
            self.close()

    def kernel_lines(self) -> list[str]:
        """New lines written by the kernel itself (facility 0: user space
        cannot forge it through /dev/kmsg)."""
        lines = []
        for _ in range(KMSG_READS_PER_STEP if self.fd is not None else 0):
            try:
                raw = os.read(self.fd, 8192)
            except BlockingIOError:
                break
            except BrokenPipeError:               # overwritten under us: go on
                continue
            entry = parse_kmsg_entry(raw) if raw else None
            if entry is None:
                if not raw:
                    break
                continue
            if entry["prio"] >> 3 == 0:
                lines.append(entry["text"].decode("utf-8", "surrogateescape"))
        return lines

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def set_down(name: str) -> None:
    """Clear IFF_UP with SIOCSIFFLAGS: what `ip link set NAME down` does,
    without forking a process from a daemon whose memory is locked."""
    raw = os.fsencode(name)
    if not raw or len(raw) >= IFNAMSIZ:
        raise OSError(22, f"invalid interface name {name!r}")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH22x", raw, 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH22x", raw, flags & ~IFF_UP))


class NetworkMonitor(Monitor):
    name = "network"

    def __init__(self, context):
        super().__init__(context)
        self.current: dict[tuple, netscan.Duplicate] = {}   # key -> what was reported
        self.kernel_seen: dict[tuple, tuple] = {}           # key -> (Duplicate, last seen)
        self.ovs_problem = ""
        self.ovs_answered = False
        self.scanned = False
        self.kmsg = KernelLogWatch()

    @property
    def cfg(self):
        return self.context.config.network.duplicate_mac

    @property
    def interval(self) -> float:
        return self.cfg.interval

    # ------------------------------------------------------------ reading
    def scan(self, now: float):
        """(links, duplicates, ovs_internal) as of now; no records written."""
        names, links = netscan.read_shared_links(self.context.sys_root)
        rows = self._ovs_rows()
        internal = frozenset(r.name for r in rows if r.internal)
        found = netscan.find_duplicates(links, self.cfg.ignore, internal,
                                        frozenset(r.name for r in rows))
        by_ovs = ovs.find_duplicates(rows, frozenset(names), self.cfg.ignore)
        # The OVS view of a set of guest taps says more (the guest MAC, the
        # port names): keep it, drop the tap-address view of the same set.
        ovs_sets = {d.interfaces for d in by_ovs}
        found = [d for d in found if d.interfaces not in ovs_sets] + by_ovs
        self.scanned = True
        return links, found, internal

    def _ovs_rows(self) -> list:
        self.ovs_answered = False
        if not ovs.available():
            self.ovs_problem = ""
            return []
        try:
            rows = ovs.list_interfaces()
        except ovs.OvsError as err:
            if str(err) != self.ovs_problem:
                self.context.writer.emit("error", "err", resource=self.name, source="ovs",
                                         reason=str(err))
            self.ovs_problem = str(err)
            return []
        self.ovs_problem, self.ovs_answered = "", True
        return rows

    def _kernel_findings(self, now: float) -> list:
        for line in self.kmsg.kernel_lines():
            seen = netscan.parse_own_address_line(line)
            if seen is not None and not any(p.search(seen.extra["port"]) for p in self.cfg.ignore):
                self.kernel_seen[seen.key] = (seen, now)
        for key, (_, last) in list(self.kernel_seen.items()):
            if now - last > max(KERNEL_HOLD, 3 * self.interval):
                del self.kernel_seen[key]
        return [duplicate for duplicate, _ in self.kernel_seen.values()]

    # ------------------------------------------------------------ judging
    def step(self, now: float) -> float:
        links, found, internal = self.scan(now)
        found += self._kernel_findings(now)
        latest = {d.key: d for d in found}
        for key in [k for k in self.current if k not in latest]:
            self._record("duplicate-mac-cleared", "info", self.current.pop(key))
        for key, duplicate in latest.items():
            if key not in self.current:
                self.current[key] = duplicate
                self._record("duplicate-mac", "warning", duplicate)
                if self.cfg.action == "down" and duplicate.source != "kernel":
                    self._set_newest_down(duplicate, links, internal)
        self.state = "acting" if self.current else "ok"
        return self.interval

    def _record(self, event: str, level: str, duplicate, **more) -> None:
        self.context.writer.emit(event, level, resource=self.name, mac=duplicate.mac,
                                 interfaces=",".join(duplicate.interfaces), kind=duplicate.kind,
                                 source=duplicate.source, **duplicate.extra, **more)

    # ------------------------------------------------------------ acting
    def _set_newest_down(self, duplicate, links, internal) -> None:
        dry = "yes" if self.context.dry_run else "no"
        refusal, target = self._down_target(duplicate, links, internal)
        if refusal:
            self._record("down", "info", duplicate, result="skipped", reason=refusal, dry_run=dry)
            return
        if not self.context.dry_run:
            try:
                set_down(target.name)
            except OSError as err:
                self._record("error", "err", duplicate, interface=target.name,
                             reason=f"cannot set {target.name} down: {err.strerror or err}")
                return
        self._record("down", "warning", duplicate, interface=target.name,
                     ifindex=target.ifindex, dry_run=dry)

    def _down_target(self, duplicate, links, internal):
        """(why not, None) or ("", the Link to set down)."""
        if ovs.available() and not self.ovs_answered:
            return "the Open vSwitch database did not answer: its internal ports cannot be told apart", None
        by_name = {link.name: link for link in links}
        members = [by_name[n] for n in duplicate.carriers or duplicate.interfaces if n in by_name]
        if not members:
            return "none of these interfaces is visible to the kernel here", None
        target = netscan.newest(members)
        refusal = netscan.vm_port_refusal(target, internal)
        if refusal:
            return f"the newest interface {target.name} is {refusal}", None
        return "", target

    # ------------------------------------------------------------ reporting
    def status(self):
        if not self.scanned:
            _, found, _ = self.scan(0.0)
            duplicates = found
        else:
            duplicates = list(self.current.values())
        state = "acting" if duplicates else "ok"
        summary = {"resource": self.name, "state": state, "duplicates": len(duplicates),
                   "interval": self.interval, "action": self.cfg.action,
                   "ovs": "yes" if self.ovs_answered else (self.ovs_problem or "no"),
                   "kernel_log": self.kmsg.problem or "watched"}
        rows = [{"resource": self.name, "state": state, "mac": d.mac,
                 "interfaces": ",".join(d.interfaces), "kind": d.kind, "source": d.source}
                for d in sorted(duplicates, key=lambda d: d.key)]
        return [summary, *rows]

    def close(self) -> None:
        self.kmsg.close()
