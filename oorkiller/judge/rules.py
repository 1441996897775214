"""Who may be acted on: the hard exclusions, the scope, and the operator's rules.

A verdict is computed once, when a process is first seen by a process table
(and again after a reload, or when an excluded process takes a new name: see
ProcessShield.rejudge_renamed), and stored in the table's entry (`eligible`,
`adjust`, `note`), so the hot path never runs a regex.

Matching semantics: every key of a match must hold; every matching
rule's `adjust` is added; any matching `protect` rule protects. `cmdline`,
`exe` and `cgroup` are read on demand, only when some rule asks for them;
`cgroup` holds when any of the process's cgroup paths (v2, each v1
hierarchy) matches.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from oorkiller.proc.cgroup import cgroup_paths

MAX_ANCESTRY = 4096  # a ppid chain longer than this is a corrupted read, not a tree


@dataclass(slots=True)
class Verdict:
    eligible: bool
    reason: str = ""          # why a process is not a candidate
    adjust: int = 0           # sum of the matching rules' adjust
    rules: list[int] = field(default_factory=list)   # config lines of matching rules
    comm: bytes = b""         # the name the process had when judged


def decode(raw: bytes) -> str:
    """Process-controlled bytes to str for regex matching, losslessly."""
    return raw.decode("utf-8", "surrogateescape")


class ProcessFacts:
    """Lazy view of one table entry for matching; reads each extra file once."""

    __slots__ = ("proc", "table", "_cmdline", "_exe", "_cgroup")

    def __init__(self, proc, table):
        self.proc = proc
        self.table = table
        self._cmdline = self._exe = self._cgroup = None

    @property
    def name(self) -> str:
        return decode(self.proc.comm)

    @property
    def cmdline(self) -> str:
        if self._cmdline is None:
            raw = _safe_read(self.table.read_cmdline, self.proc)
            self._cmdline = decode(raw.rstrip(b"\0").replace(b"\0", b" "))
        return self._cmdline

    @property
    def exe(self) -> str:
        if self._exe is None:
            self._exe = decode(_safe_read(self.table.read_exe, self.proc))
        return self._exe

    @property
    def cgroups(self) -> list[str]:
        """Every cgroup path of the process (v2 and each v1 hierarchy)."""
        if self._cgroup is None:
            self._cgroup = cgroup_paths(_safe_read(self.table.read_cgroup, self.proc))
        return self._cgroup


def _safe_read(reader, proc) -> bytes:
    try:
        return reader(proc) or b""
    except OSError:
        return b""          # vanished or unreadable: the match simply fails


def is_descendant(proc, ancestor_pid: int, table) -> bool:
    """True if `proc` is `ancestor_pid` or below it in the table's ppid tree."""
    current = proc
    for _ in range(MAX_ANCESTRY):
        if current.pid == ancestor_pid:
            return True
        if current.ppid <= 1 or current.ppid == current.pid:
            return ancestor_pid == current.ppid
        parent = table.get(current.ppid)
        if parent is None:
            return False
        current = parent
    return False


def match_holds(match, facts: ProcessFacts) -> bool:
    """All keys given in `match` hold for the process."""
    proc = facts.proc
    if match.pid is not None and proc.pid != match.pid:
        return False
    if match.user is not None and proc.uid != match.user:
        return False
    if match.descendant_of is not None and not is_descendant(proc, match.descendant_of, facts.table):
        return False
    if match.name is not None and not match.name.search(facts.name):
        return False
    if match.cmdline is not None and not match.cmdline.search(facts.cmdline):
        return False
    if match.exe is not None and not match.exe.search(facts.exe):
        return False
    if match.cgroup is not None and not any(match.cgroup.search(p) for p in facts.cgroups):
        return False
    return True


class RuleSet:
    """The compiled scope and rules of one configuration."""

    def __init__(self, config, self_pid: int | None = None):
        self.scope = config.scope
        self.rules = config.rules
        self.self_pid = os.getpid() if self_pid is None else self_pid

    def judge(self, proc, table) -> Verdict:
        hard = self._hard_exclusion(proc, table)
        if hard:
            return Verdict(False, hard)
        facts = ProcessFacts(proc, table)
        if self.scope is not None and not match_holds(self.scope, facts):
            return Verdict(False, "outside scope")
        verdict = Verdict(True)
        for rule in self.rules:
            if not match_holds(rule.match, facts):
                continue
            verdict.rules.append(rule.line)
            if rule.protect:
                return Verdict(False, f"protected by rule at line {rule.line}", 0, verdict.rules)
            verdict.adjust += rule.adjust
        return verdict

    def _hard_exclusion(self, proc, table) -> str:
        if proc.pid == 1:
            return "pid 1"
        if proc.kthread:
            return "kernel thread"
        if proc.pid == self.self_pid:
            return "oorkiller itself"
        try:
            if table.read_oom_score_adj(proc) == -1000:
                return "oom_score_adj -1000"
        except OSError:
            return "vanished"
        return ""

    def rejudge(self, table, proc) -> bool:
        """Judge again with fresh facts (exec and prctl change a name; a rule
        must see the process as it is when it is chosen). True if eligible."""
        self.apply(table, [proc])
        return proc.eligible

    def apply(self, table, procs) -> None:
        """Judge new table entries and store the verdict in them."""
        for proc in procs:
            verdict = self.judge(proc, table)
            proc.eligible = verdict.eligible
            proc.adjust = verdict.adjust
            proc.note = verdict
            verdict.comm = proc.comm


def exclusions(entries) -> list[dict]:
    """Why each judged non-candidate is excluded, for `oorkiller candidates`;
    kernel threads summed up in one row."""
    rows, kernel_threads = [], 0
    for proc in entries:
        note = proc.note
        if note is None or note.eligible:
            continue
        if note.reason == "kernel thread":
            kernel_threads += 1
            continue
        rows.append({"pid": proc.pid, "name": proc.comm, "reason": note.reason})
    if kernel_threads:
        rows.append({"pid": "-", "name": f"({kernel_threads} kernel threads)", "reason": "kernel thread"})
    return rows
