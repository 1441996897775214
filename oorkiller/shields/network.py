"""The network shield: interfaces carrying the same MAC address.

Each step looks at three sources and merges what they say:

- sysfs (/sys/class/net): local interfaces sharing a MAC without being stacked
  on one another (`netscan`), kind `local`, or `guest` for two libvirt taps;
- the Open vSwitch database, when there is one (`ovs`): guests with the same
  `external_ids:attached-mac`, kind `ovs`, named by their OVS ports;
- the kernel log: a bridge complaining it "received packet on PORT with own
  address as source address", read from /dev/kmsg where the monitor started,
  and kept only when this namespace's sysfs bears it out (the bridge and its
  port PORT exist here and the MAC is one of the bridge's own addresses:
  netscan.own_address_confirmed), since every namespace writes that log.

A duplicate is reported once when it appears (`duplicate-mac`) and once when
it goes away (`duplicate-mac-cleared`). With `action: down` the shield asks
for the newest member of a new duplicate (highest ifindex) to be set down,
but only when it is a VM's tap/vnet port; anything else is never touched and
the skip is recorded.
"""
from __future__ import annotations

from oorkiller.judge.decision import LinkDown, Notice
from oorkiller.proc import netscan
from oorkiller.proc._calm import LINKS_QUIET
from oorkiller.proc import ovs
from oorkiller.proc.kmsg import KernelLogWatch
from oorkiller.shields.base import Shield, Step

KERNEL_HOLD = 300.0          # a bridge complaint stays current this long after its last line


class NetworkShield(Shield):
    name = "network"

    def __init__(self, context):
        super().__init__(context)
        self.decisions: list = []             # made since the last step returned
        self.current: dict[tuple, netscan.Duplicate] = {}   # key -> what was reported
        self.kernel_seen: dict[tuple, tuple] = {}           # key -> (Duplicate, last seen)
        self.ovs_problem = ""
        self.ovs_answered = False
        self.scanned = False
        self.kmsg = KernelLogWatch(f"{context.dev_root}/kmsg")
        self.uses_ovs = ovs.available()       # its steps then wait on ovs-vsctl

    @property
    def cfg(self):
        return self.context.config.network.duplicate_mac

    @property
    def interval(self) -> float:
        return self.cfg.interval

    @property
    def may_block(self) -> bool:
        """With Open vSwitch each step runs ovs-vsctl, which waits on its
        database (up to ovs.TIMEOUT): a thread of its own, off the clock."""
        return self.uses_ovs

    def calm_gates(self) -> list | None:
        """While no link of this namespace appears, goes or changes (an
        rtnetlink subscription) and the kernel log gets no new record, a
        scan would find what the last one found: nothing. Not with a
        duplicate or a kernel complaint current (they are followed at every
        step), not with Open vSwitch, not over another sysfs than this
        namespace's own. Open vSwitch starting later is seen at the next
        housekeeping step."""
        kmsg = self.kmsg.quiet_gate()
        if (self.current or self.kernel_seen or self.uses_ovs or kmsg is None
                or self.context.sys_root != "/sys"):
            return None
        return [(LINKS_QUIET, "rtnetlink", 0.0), kmsg]

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
        self.uses_ovs = ovs.available()
        if not self.uses_ovs:
            self.ovs_problem = ""
            return []
        try:
            rows = ovs.list_interfaces()
        except ovs.OvsError as err:
            if str(err) != self.ovs_problem:
                self.decisions.append(Notice(self.name, str(err), {"source": "ovs"},
                                             event="error", level="err"))
            self.ovs_problem = str(err)
            return []
        self.ovs_problem, self.ovs_answered = "", True
        return rows

    def _kernel_findings(self, now: float) -> list:
        for line in self.kmsg.kernel_lines():
            seen = netscan.parse_own_address_line(line)
            if seen is None or any(p.search(seen.extra["port"]) for p in self.cfg.ignore):
                continue
            # Every namespace's bridges write to this one kernel log: only a
            # line that this namespace's interfaces bear out is a finding.
            if netscan.own_address_confirmed(seen, self.context.sys_root):
                self.kernel_seen[seen.key] = (seen, now)
        for key, (_, last) in list(self.kernel_seen.items()):
            if now - last > max(KERNEL_HOLD, 3 * self.interval):
                del self.kernel_seen[key]
        return [duplicate for duplicate, _ in self.kernel_seen.values()]

    # ------------------------------------------------------------ judging
    def step(self, now: float) -> Step:
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
        decisions, self.decisions = self.decisions, []
        return Step(self.interval, decisions)

    @staticmethod
    def describe(duplicate) -> dict:
        """The record fields that name a duplicate."""
        return {"mac": duplicate.mac, "interfaces": ",".join(duplicate.interfaces),
                "kind": duplicate.kind, "source": duplicate.source, **duplicate.extra}

    def _record(self, event: str, level: str, duplicate) -> None:
        self.decisions.append(Notice(self.name, "", self.describe(duplicate), event=event, level=level))

    # ------------------------------------------------------------ acting
    def _set_newest_down(self, duplicate, links, internal) -> None:
        refusal, target = self._down_target(duplicate, links, internal)
        if refusal:
            self.decisions.append(Notice(self.name, refusal, {**self.describe(duplicate), "result": "skipped"},
                                         event="down", level="info"))
            return
        self.decisions.append(LinkDown(self.name, "", {**self.describe(duplicate), "ifindex": target.ifindex},
                                       interface=target.name))

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
    def status(self) -> list[dict]:
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
