"""The memory shield: MemAvailable (and swap, and optionally PSI) against levels.

Polling adapts to the headroom: the sleep is the time the fastest plausible
hog (WORST_FILL_RATE) would need to eat the headroom above the next level, so
the daemon idles at `interval` on a healthy machine and reads every few
milliseconds when memory is about to run out. While memory is near the levels
the ranking is kept warm (refreshed at most every WARM_REFRESH seconds), so a
crossing is answered with a signal, not with a scan of the process table.
"""
from __future__ import annotations

import collections
import functools
import signal
import time

from oorkiller.judge import choice as victims
from oorkiller.judge import shares
from oorkiller.judge.rules import exclusions
from oorkiller.judge.decision import Escalate
from oorkiller.proc._calm import MEM_AVAILABLE, PSI_FULL
from oorkiller.proc._readers import HeldFile, parse_meminfo, parse_psi
from oorkiller.shields.base import Step
from oorkiller.shields.process import ProcessShield
from oorkiller.quantities import format_size

WORST_FILL_RATE = 8 << 30   # bytes/s: faster than a hog touching pages can go here
MIN_SLEEP = 0.002           # never poll more often than this
WARM_ZONE = 4.0             # keep the ranking warm within this many intervals of term
WARM_REFRESH = 0.1          # seconds between warm re-rankings
RANK_DEPTH = 16             # candidates examined in detail per choice
RULES_SWEEP = 60.0          # seconds between re-judgements of excluded processes (calm machine)
SETTLE = 3.0                # seconds the memory of a dead victim may take to show
SETTLE_SLACK = 64 << 20     # a fall this large after a death is a new shortage
GROWTH_WINDOW = 10.0        # seconds of sizes behind a candidate's growth (the cause)

SEVERITY = {None: 0, "term": 1, "kill": 2}


def below(value: int, term: int, kill: int) -> str | None:
    if value < kill:
        return "kill"
    if value < term:
        return "term"
    return None


def describe_level(size, resolved: int) -> str:
    return str(size) if size.percent else format_size(resolved)


def describe_value(value: int, total: int, size) -> str:
    if size.percent and total:
        return f"{value * 100 / total:.1f}%"
    return format_size(value)


def regained(proc_root: str, available_before: int) -> dict:
    """What came back after a kill, read afresh (on the engine's worker: its
    own open of /proc/meminfo, never the shield's held file)."""
    with open(f"{proc_root}/meminfo", "rb") as f:
        now = parse_meminfo(f.read()).available
    return {"available_before": format_size(available_before),
            "available_after": format_size(now),
            "regained": format_size(max(now - available_before, 0))}


class MemoryShield(ProcessShield):
    name = "memory"
    housekeeping = RULES_SWEEP          # the sweep of renamed processes goes on while gated

    def __init__(self, context):
        super().__init__(context)
        root = context.proc_root
        self.meminfo_file = HeldFile(f"{root}/meminfo")
        self.psi_file = self.open_psi("memory", self.cfg.pressure.full_avg10)
        self.reading = None                   # last MemInfo
        self.severity = None
        self.reason = ""
        self.pressure_since = None            # when PSI first exceeded its level
        self.warm_at = 0.0                    # when the warm ranking was made
        self.warm: list = []                  # ranked Procs, best first
        self.last_available = None
        self.last_read_at = None
        self.swept_at = 0.0
        self.said_nothing_at = float("-inf")  # when nothing-to-kill was last recorded
        self.after_death = None               # (last kill, MemAvailable first seen after it)
        self.escalated = None                 # the kill we asked to escalate
        self.sizes: dict[int, collections.deque] = {}   # serial -> (at, points) of the ranked
        self.refresh_table()

    @property
    def cfg(self):
        return self.context.config.memory

    @property
    def interval(self) -> float:
        return self.cfg.interval

    # ------------------------------------------------------------- reading
    def read(self):
        self.reading = parse_meminfo(self.meminfo_file.read())
        return self.reading

    def levels(self, mem) -> dict:
        cfg = self.cfg
        return {
            "term": cfg.available.term.resolve(mem.total),
            "kill": cfg.available.kill.resolve(mem.total),
            "swap_term": cfg.swap_free.term.resolve(mem.swap_total),
            "swap_kill": cfg.swap_free.kill.resolve(mem.swap_total),
        }

    def judge(self, mem, now: float) -> tuple[str | None, str]:
        """(severity, reason): None, 'term' or 'kill'."""
        cfg, lv = self.cfg, self.levels(mem)
        severity = below(mem.available, lv["term"], lv["kill"])
        reason = ""
        if severity:
            level = cfg.available.kill if severity == "kill" else cfg.available.term
            reason = (f"MemAvailable {describe_value(mem.available, mem.total, level)} < "
                      f"{severity} level {describe_level(level, lv[severity])}")
        if severity and mem.swap_total > 0:
            swap_severity = below(mem.swap_free, lv["swap_term"], lv["swap_kill"])
            if SEVERITY[swap_severity] < SEVERITY[severity]:
                severity = swap_severity       # both must be short
            if severity:
                level = cfg.swap_free.kill if severity == "kill" else cfg.swap_free.term
                reason += (f" and SwapFree {describe_value(mem.swap_free, mem.swap_total, level)}"
                           f" < {severity} level {describe_level(level, lv['swap_' + severity])}")
        psi_reason = self._judge_pressure(now)
        if psi_reason and not severity:
            return "term", psi_reason
        return severity, reason

    def _judge_pressure(self, now: float) -> str:
        if self.psi_file is None:
            return ""
        try:
            full = parse_psi(self.psi_file.read()).full_avg10
        except OSError:
            return ""
        limit = self.cfg.pressure.full_avg10
        if full < limit:
            self.pressure_since = None
            return ""
        if self.pressure_since is None:
            self.pressure_since = now
        if now - self.pressure_since < self.cfg.pressure.for_:
            return ""
        return f"memory PSI full avg10 {full:.2f} >= {limit:g} for {self.cfg.pressure.for_:g}s"

    # ------------------------------------------------------------- stepping
    def step(self, now: float) -> Step:
        mem = self.read()
        severity, reason = self.judge(mem, now)
        self.severity, self.reason = severity, reason
        lv = self.levels(mem)
        decisions = []
        if severity:
            decision = self._act(mem, lv, severity, reason, now)
            if decision is not None:
                decisions.append(decision)
        else:
            self.state = "ok"
            if self._near(mem, lv):
                self._warm_up(now)
            elif now - self.swept_at >= RULES_SWEEP:
                self._sweep_rules()
                self.swept_at = now
        sleep = self._next_sleep(mem, lv, now)
        self.last_available, self.last_read_at = mem.available, now
        return Step(sleep, decisions)

    def calm_gates(self) -> list | None:
        """While MemAvailable stays so far above the term level that neither
        the fastest plausible hog nor the fall just seen could reach it within
        an interval (and PSI, when judged, under its level), every step would
        sleep its whole interval, far from the warm zone, and decide nothing."""
        mem = self.reading
        if mem is None or self.severity or self.state != "ok" or self.pressure_since is not None:
            return None
        gates = [(MEM_AVAILABLE, self.meminfo_file.path, self.levels(mem)["term"], WORST_FILL_RATE)]
        if self.psi_file is not None:
            gates.append((PSI_FULL, self.psi_file.path, self.cfg.pressure.full_avg10))
        return gates

    def _near(self, mem, lv) -> bool:
        headroom = mem.available - lv["term"]
        return headroom < WORST_FILL_RATE * self.interval * WARM_ZONE / 8

    def _next_sleep(self, mem, lv, now: float) -> float:
        """Time for the fastest plausible hog to reach the next level."""
        target = lv["kill"] if mem.available < lv["term"] else lv["term"]
        headroom = max(mem.available - target, 0)
        rate = WORST_FILL_RATE
        if self.last_read_at is not None and now > self.last_read_at:
            observed = (self.last_available - mem.available) / (now - self.last_read_at)
            rate = max(rate, observed)
        return min(self.interval, max(MIN_SLEEP, headroom / rate))

    # ------------------------------------------------------------- ranking
    def _sweep_rules(self) -> list:
        """Judge again every excluded process whose name changed since it was
        judged, however old (a program may rename itself at any time). Returns
        the processes that became candidates."""
        return self.rejudge_renamed(self.table.entries())

    def _warm_up(self, now: float) -> None:
        """Rank again, and read what a choice reads of each candidate now.
        A process's /proc files cost more at their first read than after
        (the kernel looks each one up once); read here, while memory is
        still near the level, they are cheap at the crossing, where the
        choice reads them again. Who vanished or became protected since
        leaves the warm ranking."""
        if now - self.warm_at < WARM_REFRESH:
            return
        self.warm = [proc for proc in self._rank() if self._fresh_facts(proc) is not None]
        self.warm_at = now

    def _rank(self) -> list:
        self.refresh_table()
        self.table.sample_memory()
        self.warm = self.table.rank_memory(RANK_DEPTH)
        self._remember_sizes(self.warm)
        return self.warm

    def _remember_sizes(self, ranked) -> None:
        """The sizes of the ranked (kernel points: share + oom_score_adj) over
        the last GROWTH_WINDOW: who grew is the cause of a shortage."""
        now = time.monotonic()
        for proc in ranked:
            sizes = self.sizes.setdefault(proc.serial, collections.deque())
            sizes.append((now, proc.memory_score - proc.adjust))
            while len(sizes) > 2 and now - sizes[1][0] >= GROWTH_WINDOW:
                sizes.popleft()
        if len(self.sizes) > 4 * RANK_DEPTH:
            live = {p.serial for p in ranked}
            self.sizes = {s: d for s, d in self.sizes.items() if s in live}

    def growth(self, proc, age: float) -> tuple[int, float]:
        """(points grown, over how many seconds) within the last GROWTH_WINDOW.
        A process born inside the window grew by all it holds."""
        now_points = proc.memory_score - proc.adjust
        if age <= GROWTH_WINDOW:
            return max(now_points, 0), age
        sizes = self.sizes.get(proc.serial)
        if not sizes or len(sizes) < 2:
            return 0, 0.0
        return max(now_points - sizes[0][1], 0), time.monotonic() - sizes[0][0]

    def _fresh_facts(self, proc):
        """(oom_score_adj, status) of proc read now, once the rules have
        judged it again by its name now; None if it vanished since the
        ranking or is no candidate now."""
        try:
            self.table.read_stat(proc)                # fresh name and CPU time
            if not self.context.rules.rejudge(self.table, proc):
                return None                           # it became protected
            return self.table.read_oom_score_adj(proc), self.table.read_status(proc)
        except OSError:
            return None                               # vanished since the ranking

    def evaluate(self, ranked, need: int) -> list:
        """Candidates with score parts, reclaimable bytes, `enough` (the
        predicted MemAvailable without it back above the term level), work
        (CPU time and age) and growth."""
        found, uptime = [], shares.uptime()
        mem = self.reading
        point_bytes = ((mem.total + mem.swap_total) / 1000) if mem is not None else 0
        for proc in ranked:
            facts = self._fresh_facts(proc)
            if facts is None:
                continue
            adj, status = facts
            kernel_points = proc.memory_score - proc.adjust   # share + oom_score_adj
            reclaim = status.vm_rss + status.vm_swap
            age = shares.age_of(proc, uptime)
            grown, over = self.growth(proc, age)
            after = mem.available + reclaim if mem is not None else reclaim
            found.append(victims.Candidate(
                proc=proc, score=kernel_points + proc.adjust, share=kernel_points - adj,
                adj=adj, adjust=proc.adjust, work=victims.work_of(proc.cpu_ticks, age),
                reclaim=reclaim, enough=reclaim >= need, growth=grown, age=age,
                after=f"MemAvailable {format_size(after)}",
                growth_text=f"grew {format_size(int(grown * point_bytes))} in {over:.0f}s"))
        return found

    # ------------------------------------------------------------- acting
    def _act(self, mem, lv, severity: str, reason: str, now: float):
        """The decision for a reading below a level: a Kill, an Escalate of
        the kill under way, a nothing-to-kill Notice, or None (waiting)."""
        self.state = "acting"
        current = self.pending
        if self.acting():
            # One victim per shortage: wait for it, but never let a SIGTERM
            # grace period run on while memory falls through the kill level.
            if (severity == "kill" and current.first_signal == signal.SIGTERM
                    and self.escalated is not current):
                self.escalated = current
                return Escalate(self.name, reason, kill=current)
            return None
        if self._settling(mem, now):
            return None
        fresh = self.warm and now - self.warm_at <= 2 * WARM_REFRESH
        need = max(lv["term"] - mem.available, 1)
        choice = victims.choose(self.evaluate(self.warm, need)) if fresh else None
        if choice is None or not choice.chosen.enough:
            # No warm ranking, or one made before the process that now eats
            # memory was big (or born): rank the whole table again.
            choice = victims.choose(self.evaluate(self._rank(), need))
        if (choice is None or not choice.chosen.enough) and self._sweep_rules():
            # The one eating memory may have been judged under another name.
            choice = victims.choose(self.evaluate(self._rank(), need))
        self.warm, self.warm_at = [], 0.0     # the next choice ranks anew
        if choice is None:
            return self._nothing_to_kill(reason)
        chosen = choice.chosen
        unit = victims.build_unit(self._unit_kind(chosen), chosen.proc, self.table,
                                  self.context.self_pid, self.cgroup_of)
        fields = {"user": chosen.proc.uid, "score": chosen.score, "rss": format_size(chosen.reclaim),
                  "after": chosen.after, "why": choice.why, "runner_up": choice.runner_up_text}
        members = [unit.leader] + [p for p in unit.members if p is not unit.leader]
        return self.kill(members, reason, fields, term_timeout=self.cfg.term_timeout,
                         unit=unit.kind, group=unit.key if unit.kind != "process" else "",
                         refused=unit.fallback_reason,
                         first_signal=signal.SIGKILL if severity == "kill" else signal.SIGTERM,
                         measure=functools.partial(regained, self.context.proc_root, mem.available))

    def _settling(self, mem, now: float) -> bool:
        """Just after a victim died, its memory may not show yet: the kernel
        frees it into per-CPU lists and reporting queues that MemFree does not
        count for a while (seen on a VM: hundreds of MiB, for up to a second
        and once for longer, when a second kill took a bystander). Wait for
        it, up to SETTLE, unless memory keeps falling: that is a new
        shortage, and it is answered at once. While memory holds still the
        machine gets no worse by waiting."""
        last = self.pending
        if last is None or not last.over or last.outcome != "dead" or now - last.finished >= SETTLE:
            self.after_death = None
            return False
        if self.after_death is None or self.after_death[0] is not last:
            self.after_death = (last, mem.available)
        return mem.available > self.after_death[1] - SETTLE_SLACK

    def _unit_kind(self, chosen) -> str:
        kind = self.cfg.kill
        if kind != "auto":
            return kind
        return "process" if chosen.enough else "process_group"

    def _nothing_to_kill(self, reason: str):
        now = time.monotonic()
        if now - self.said_nothing_at < 10 * self.interval:
            return None                       # say it once per stretch, not per reading
        self.said_nothing_at = now
        return self.nothing_to_kill(reason)

    # ------------------------------------------------------------- reporting
    def status(self) -> list[dict]:
        mem = self.reading or self.read()
        lv = self.levels(mem)
        out = {
            "resource": self.name, "state": self.state,
            "available": mem.available, "total": mem.total,
            "available_pct": round(mem.available * 100 / mem.total, 1) if mem.total else 0,
            "term_level": lv["term"], "kill_level": lv["kill"],
            "swap_total": mem.swap_total, "swap_free": mem.swap_free,
        }
        if self.reason:
            out["reason"] = self.reason
        return [out]

    def candidates(self, top: int) -> dict:
        """The ranking as a shortage now would see it (`need`: what is missing
        to the term level, at least a byte), with the choice it would make."""
        ranked = self.table.rank_memory(max(top, RANK_DEPTH)) if self._rank() is not None else []
        mem = self.read()
        need = max(self.levels(mem)["term"] - mem.available, 1)
        evaluated = self.evaluate(ranked, need)
        rows = []
        for cand in evaluated:
            rows.append({"pid": cand.pid, "name": cand.proc.comm, "user": cand.proc.uid,
                         **cand.parts(), "rss": cand.reclaim, "after": cand.after,
                         "enough": cand.enough, "growth": cand.growth_text,
                         "age": round(cand.age), "work": round(cand.work, 1)})
        return {"ranked": rows[:top], "excluded": exclusions(self.table.entries()),
                "choice": victims.summary(victims.choose(evaluated))}

    def close(self) -> None:
        self.meminfo_file.close()
        if self.psi_file is not None:
            self.psi_file.close()
        super().close()
