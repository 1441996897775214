"""The tasks shield: a fork bomb or a thread leak must not fill the task table.

Every step is one pread of /proc/loadavg, whose "running/total" field is
the kernel's count of tasks (threads) on the whole machine. (While calm, its
gate rarely reads even that: proc/_calm.pyx bounds the total by the forks
counted since it last read it.) The limit is the smaller of
kernel.threads-max and kernel.pid_max (every thread takes a PID), read at
start and again every LIMITS_EVERY seconds: a sysctl changes them, nothing
else does. Above the `threads.kill` level the processes' thread counts
(num_threads of /proc/PID/stat) are sampled and the unit that grew the
most is killed (shields/tables.py).

A group or cgroup is stopped as a whole first (`freeze_first`: SIGSTOP,
again for what it forked meanwhile, then SIGKILL, act/freeze.py): a bomb
forks faster than a kill pass goes through it. A single process (a thread
leak) gets SIGTERM, then SIGKILL after `term_timeout`.
"""
from __future__ import annotations

import signal
import time

from oorkiller.proc._calm import TASKS
from oorkiller.proc._readers import HeldFile
from oorkiller.proc.tables import parse_task_count, read_number
from oorkiller.shields.tables import TableShield

LIMITS_EVERY = 300.0       # seconds between two readings of threads-max and pid_max


class TasksShield(TableShield):
    name = "tasks"
    HOLD = "stat"              # num_threads is in stat
    what = "tasks"
    housekeeping = LIMITS_EVERY    # a sysctl'd limit is seen as soon as while stepping

    def __init__(self, context):
        super().__init__(context)
        root = context.proc_root
        self.loadavg_file = HeldFile(f"{root}/loadavg")
        self.limits_read = -LIMITS_EVERY
        self.threads_max = self.pid_max = 0

    @property
    def cfg(self):
        return self.context.config.tasks

    def limits(self) -> tuple[int, int]:
        now = time.monotonic()
        if now - self.limits_read >= LIMITS_EVERY:
            root = self.context.proc_root
            self.threads_max = read_number(f"{root}/sys/kernel/threads-max")
            self.pid_max = read_number(f"{root}/sys/kernel/pid_max")
            self.limits_read = now
        return self.threads_max, self.pid_max

    def read(self) -> dict:
        used = parse_task_count(self.loadavg_file.read())
        threads_max, pid_max = self.limits()
        limit = min(threads_max, pid_max)
        name = "kernel.threads-max" if threads_max <= pid_max else "kernel.pid_max"
        level = self.cfg.threads.kill.resolve(limit)
        return {"used": used, "limit": limit, "level": level,
                "reason": f"tasks {used} >= kill level {self.cfg.threads.kill.described(limit)} "
                          f"of {name} {limit}"}

    def gate(self) -> tuple[int, str]:
        return TASKS, self.loadavg_file.path

    def holdings(self) -> dict[int, int]:
        self.table.sample_cpu()                   # rereads stat: num_threads
        return {p.serial: p.threads for p in self.table.entries() if p.eligible}

    def kill_options(self, unit) -> dict:
        if unit.kind == "process":
            return {}                             # a thread leak: SIGTERM, then SIGKILL
        return {"first_signal": signal.SIGKILL, "freeze_first": True}

    def status(self) -> list[dict]:
        rows = super().status()
        rows[0].update(threads_max=self.threads_max, pid_max=self.pid_max)
        return rows

    def close(self) -> None:
        self.loadavg_file.close()
        super().close()
