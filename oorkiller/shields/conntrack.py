"""The conntrack shield: say so before the connection-tracking table is full.

A full nf_conntrack table drops every new connection of the machine (the
kernel logs "nf_conntrack: table full, dropping packet"). Nothing can be
killed for it: the entries belong to the network, not to a process. So the
shield only warns: a `conntrack-full` Notice (resource=network), and
through it the hooks, when net.netfilter.nf_conntrack_count reaches the
`used.warn` level of nf_conntrack_max; once per stretch above the level,
and once more when the kernel starts dropping. The record counts the
kernel's own "table full" lines (facility 0, proc/kmsg.py) since the
previous step.

Without the nf_conntrack module the files do not exist and the shield does
nothing but look for them again at each interval (a module loads later).
"""
from __future__ import annotations

from oorkiller.judge.decision import Notice
from oorkiller.proc.kmsg import KernelLogWatch
from oorkiller.proc.tables import HeldNumber, read_number
from oorkiller.proc._calm import COUNT
from oorkiller.shields.base import Shield, Step

TABLE_FULL = "nf_conntrack: table full, dropping packet"


class ConntrackShield(Shield):
    name = "conntrack"

    def __init__(self, context):
        super().__init__(context)
        self.dir = f"{context.proc_root}/sys/net/netfilter"
        self.count_file: HeldNumber | None = None
        self.kmsg = KernelLogWatch(f"{context.dev_root}/kmsg")
        self.reading: dict | None = None
        self.warned = False               # a notice made in this stretch
        self.warned_dropping = False      # one that counted drops

    @property
    def cfg(self):
        return self.context.config.network.conntrack

    @property
    def interval(self) -> float:
        return self.cfg.interval

    def read(self) -> dict | None:
        """{"count", "max", "level", "dropped"}; None without nf_conntrack."""
        dropped = sum(TABLE_FULL in line for line in self.kmsg.kernel_lines())
        if self.count_file is None:
            try:
                self.count_file = HeldNumber(f"{self.dir}/nf_conntrack_count")
            except OSError:
                return None               # the module is not loaded
        count = self.count_file.read()
        maximum = read_number(f"{self.dir}/nf_conntrack_max")   # a sysctl: may change
        return {"count": count, "max": maximum, "level": self.cfg.used.warn.resolve(maximum),
                "dropped": dropped}

    def step(self, now: float) -> Step:
        reading = self.reading = self.read()
        if reading is None:
            self.state = "unavailable"
            return Step(self.interval)
        if reading["count"] < reading["level"] and not reading["dropped"]:
            self.state, self.warned, self.warned_dropping = "ok", False, False
            return Step(self.interval)
        self.state = "full"
        if self.warned and (self.warned_dropping or not reading["dropped"]):
            return Step(self.interval)
        self.warned = True
        self.warned_dropping = reading["dropped"] > 0
        return Step(self.interval, [self.notice(reading)])

    def calm_gates(self) -> list | None:
        """While the entries stay under the level and the kernel log gets no
        new record (no "table full" line), every step is calm. Without
        nf_conntrack, only the log is watched: the module loading is seen at
        the next housekeeping step."""
        kmsg = self.kmsg.quiet_gate()
        if kmsg is None or self.state not in ("ok", "unavailable"):
            return None
        if self.reading is None:
            return [kmsg]
        return [(COUNT, self.count_file.file.path, self.reading["level"]), kmsg]

    def notice(self, reading: dict) -> Notice:
        reason = (f"conntrack entries {reading['count']} >= warn level "
                  f"{self.cfg.used.warn.described(reading['max'])} of nf_conntrack_max {reading['max']}")
        # not `level`: that is the record's own severity
        return Notice("network", reason, {"count": reading["count"], "max": reading["max"],
                                          "warn_level": reading["level"], "dropped": reading["dropped"]},
                      event="conntrack-full", level="warning")

    def status(self) -> list[dict]:
        reading = self.reading or self.read()
        if reading is None:
            return [{"resource": self.name, "state": "unavailable",
                     "reason": "nf_conntrack is not loaded"}]
        return [{"resource": self.name, "state": self.state, "count": reading["count"],
                 "max": reading["max"], "warn_level": reading["level"],
                 "kernel_log": self.kmsg.problem or "watched"}]

    def close(self) -> None:
        if self.count_file is not None:
            self.count_file.close()
        self.kmsg.close()
