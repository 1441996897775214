"""Memory-shield scenarios. Each runs as PID 1 of its own PID namespace (see
sandbox.in_pid_namespace) and returns what it observed; the tests judge."""
from __future__ import annotations

import os
import sys
import tempfile
import time

from sandbox import MiB, Daemon, base_config, mem_available, reap, victim, wait_until


def memory_section(term: int, kill: int, **extra) -> dict:
    section = {"enabled": True, "interval": "1s", "term_timeout": "2s",
               "available": {"term": term, "kill": kill}}
    section.update(extra)
    return section


def wait_exit(proc, timeout: float) -> bool:
    return wait_until(lambda: proc.poll() is not None, timeout, step=0.02)


def records_of(daemon: Daemon) -> list[dict]:
    return [r for r in daemon.records() if r["event"] not in ("start",)]


def hog_among_others(chunk: int, pause: float, dry_run: bool = False) -> dict:
    """A hog grows while a larger avoided process and a protected one sit still."""
    big = victim("sleeper", "bigavoid", "--size", "1200")
    kept = victim("sleeper", "keepme", "--size", "1000")
    available = mem_available()
    config = base_config(
        memory=memory_section(available - 800 * MiB, available - 1200 * MiB),
        rules=[{"match": {"name": "^keepme$"}, "protect": True},
               {"match": {"name": "^bigavoid$"}, "adjust": -500}])
    daemon = Daemon(config, *(["--dry-run"] if dry_run else []))
    hog = victim("hog", "hog", "--chunk", str(chunk), "--pause", str(pause), "--cap", "2600")
    began = time.monotonic()
    if dry_run:
        # A signal would follow the decision within milliseconds: two
        # seconds after it, a hog still alive was not signalled.
        wait_until(lambda: daemon.records("term") or daemon.records("kill"), 15)
        died = wait_exit(hog, 2)
    else:
        died = wait_exit(hog, 30)
    died_after = time.monotonic() - began
    time.sleep(0.5)
    stopped = daemon.stop()
    return {"hog_died": died, "died_after": died_after, "ended": reap(hog, big, kept),
            "records": records_of(daemon), "stopped": stopped}


def sigterm_handling(ignore_term: bool) -> dict:
    """A victim between the term and kill levels: SIGTERM, then SIGKILL if ignored."""
    options = ["--ignore-term"] if ignore_term else []
    available = mem_available()
    config = base_config(memory=memory_section(available - 400 * MiB, available - 4000 * MiB,
                                               term_timeout="1500ms"))
    daemon = Daemon(config)
    # The cap leaves a wide margin past the term level: after large frees the
    # kernel keeps pages on per-CPU lists that MemFree does not count, and a
    # new hog's first hundreds of MiB may come from there unseen.
    hog = victim("hog", "stubborn" if ignore_term else "polite", "--chunk", "100",
                 "--pause", "0.05", "--cap", "3000", *options)
    died = wait_exit(hog, 20)
    time.sleep(0.5)
    stopped = daemon.stop()
    return {"died": died, "ended": reap(hog), "records": records_of(daemon), "stopped": stopped}


def choose_between(specs: list[dict], need_mib: int) -> dict:
    """Processes sit still; memory is made 'short by need_mib' at once, so the
    daemon's first reading acts at the term level. Which one goes?"""
    procs, rules = [], []
    for spec in specs:
        options = ["--size", str(spec["size"]), "--burn", str(spec.get("burn", 0))]
        procs.append(victim("sleeper", spec["name"], *options))
        if spec.get("adjust"):
            rules.append({"match": {"name": f"^{spec['name']}$"}, "adjust": spec["adjust"]})
    available = mem_available()
    config = base_config(rules=rules, memory=memory_section(
        available + need_mib * MiB, available - 6000 * MiB, term_timeout="3s"))
    daemon = Daemon(config)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and all(p.poll() is None for p in procs):
        time.sleep(0.05)
    time.sleep(0.3)
    stopped = daemon.stop()
    return {"ended": reap(*procs), "records": records_of(daemon), "stopped": stopped}


def reused_pid() -> dict:
    """A victim exits and its PID goes to a new process before the signal."""
    import signal
    from oorkiller.proc._proctable import ProcTable
    from oorkiller.act.signals import send
    from oorkiller.proc.targets import Target, take_targets

    first = victim("sleeper", "first")
    table = ProcTable("/proc", os.getpid())
    table.refresh()
    entry = table.get(first.pid)
    early_pidfd = table.open_pidfd(entry)          # taken when it was chosen
    first.kill()
    first.wait()
    with open("/proc/sys/kernel/ns_last_pid", "w") as f:
        f.write(str(first.pid - 1))
    second = victim("sleeper", "second")
    same_pid = second.pid == first.pid
    late_targets = take_targets([entry])           # chosen before, signalled after
    early_result = send(Target(first.pid, b"first", entry.starttime, early_pidfd), signal.SIGKILL)
    time.sleep(0.2)
    return {"same_pid": same_pid, "late_targets": len(late_targets),
            "early_result": early_result, "second_alive": second.poll() is None,
            "ended": reap(second)}


def group_kill() -> dict:
    """With `kill: process_group`, the hog's whole group goes in one action."""
    leader = victim("sleeper", "member1", "--size", "50", pgid=0)
    member = victim("sleeper", "member2", "--size", "50", pgid=leader.pid)
    outsider = victim("sleeper", "outsider", "--size", "50")
    available = mem_available()
    memory = memory_section(available - 600 * MiB, available - 3000 * MiB, term_timeout="1s")
    memory["kill"] = "process_group"
    config = base_config(memory=memory)
    daemon = Daemon(config)
    hog = victim("hog", "grouphog", "--chunk", "64", "--pause", "0.05", "--cap", "2000",
                 pgid=leader.pid)
    wait_exit(hog, 20)
    wait_exit(leader, 5)
    time.sleep(0.5)
    stopped = daemon.stop()
    return {"pgid": leader.pid, "ended": reap(hog, leader, member, outsider),
            "records": records_of(daemon), "stopped": stopped}


def renamed_hog(rename_after: float) -> dict:
    """A hog is first seen under a protected name (as a child forked by a
    protected parent is, before its exec), then takes its own name and grows.
    The verdict made under the old name must not hide it from the choice."""
    available = mem_available()
    config = base_config(memory=memory_section(available - 800 * MiB, available - 1600 * MiB),
                         rules=[{"match": {"name": "^guardian$"}, "protect": True}])
    daemon = Daemon(config)
    # Exec'd through a link named 'guardian', it is 'guardian' from its first
    # instant until it renames itself `rename_after` seconds later.
    link = os.path.join(tempfile.mkdtemp(), "guardian")
    os.symlink(sys.executable, link)
    # The cap leaves 2.6 GiB past the term level: a CI run on a slow host saw
    # a 2.6 GiB hog, started right after the previous hog's death, leave
    # MemAvailable above the term level (memory freed earlier showing late).
    hog = victim("hog", "renamedhog", "--rename-after", str(rename_after), "--chunk", "64", "--pause", "0.05",
                 "--cap", "3400", executable=link)
    died = wait_exit(hog, 30)
    time.sleep(0.5)
    stopped = daemon.stop()
    return {"hog_died": died, "ended": reap(hog), "records": records_of(daemon), "stopped": stopped}


def steady_giant_and_young_grower() -> dict:
    """An old, large, idle process and a young one growing fast; the grower
    drives MemAvailable through the kill level (term and kill levels equal:
    the first action is the SIGKILL)."""
    giant = victim("sleeper", "giant", "--size", "3000")
    time.sleep(11)                       # older than the growth window: steady
    available = mem_available()
    level = available - 900 * MiB
    daemon = Daemon(base_config(memory=memory_section(level, level)))
    grower = victim("hog", "grower", "--chunk", "64", "--pause", "0.03", "--cap", "2600")
    died = wait_exit(grower, 30)
    time.sleep(1.0)
    stopped = daemon.stop()
    return {"grower_died": died, "ended": reap(grower, giant), "records": records_of(daemon),
            "stopped": stopped}


def hog_with_metrics(textfile: str) -> dict:
    """A hog is killed while the daemon writes its metrics file every second;
    the file is read before and after the kill, as node_exporter would."""
    available = mem_available()
    config = base_config(memory=memory_section(available - 800 * MiB, available - 1200 * MiB),
                         metrics={"textfile": textfile, "interval": "1s"})
    daemon = Daemon(config)
    wait_until(lambda: os.path.exists(textfile), 10)
    before = open(textfile).read() if os.path.exists(textfile) else ""
    hog = victim("hog", "hog", "--chunk", "64", "--pause", "0.05", "--cap", "2600")
    died = wait_exit(hog, 30)
    time.sleep(2.5)                      # two more metric writes after the kill
    after = open(textfile).read()
    stopped = daemon.stop()
    return {"died": died, "before": before, "after": after, "ended": reap(hog),
            "records": records_of(daemon), "stopped": stopped}
