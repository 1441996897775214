"""oorkiller.proc._proctable: the process table, its samples, ranking and pidfds.

Fake /proc trees check exact behaviour (scores, ties, reuse by start time);
the real /proc, with psutil as the oracle, checks it on processes this test
spawns. Only those children are ever signalled, by their PID.
"""
import os
import resource
import signal
import subprocess
import sys
import textwrap

import psutil
import pytest

from oorkiller.config import load_config_text
from oorkiller.judge.rules import RuleSet
from oorkiller.proc._proctable import ProcTable, raise_fd_limit
from fakeproc import FakeProc, io_text

NO_RULES = load_config_text("rules: []\n", "no-rules.yaml")


def refreshed(table):
    """table.refresh(), then the new entries judged as a shield judges them:
    the table itself decides nobody's eligibility (judge/rules.py does)."""
    added, removed = table.refresh()
    RuleSet(NO_RULES, self_pid=table.self_pid).apply(table, added)
    return added, removed

CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- helpers

@pytest.fixture
def tree(tmp_path):
    return FakeProc(tmp_path / "proc")


@pytest.fixture
def children():
    """Spawns sleeping children; kills exactly those at the end."""
    spawned = []

    def spawn(name=None, oom_score_adj=None):
        code = textwrap.dedent("""
            import ctypes, signal, sys
            name = bytes.fromhex(sys.argv[1])
            if name:
                ctypes.CDLL(None).prctl(15, ctypes.c_char_p(name), 0, 0, 0)  # PR_SET_NAME
            sys.stdout.write("ready\\n"); sys.stdout.flush()
            signal.pause()
        """)
        child = subprocess.Popen([sys.executable, "-c", code, (name or b"").hex()],
                                 stdout=subprocess.PIPE)
        spawned.append(child)            # before anything below can fail: never leaked
        assert child.stdout.readline() == b"ready\n"
        if oom_score_adj is not None:
            with open(f"/proc/{child.pid}/oom_score_adj", "w") as f:
                f.write(str(oom_score_adj))
        return child

    yield spawn
    for child in spawned:
        if child.poll() is None:
            child.kill()
        child.wait()


def kill_and_reap(child):
    child.kill()
    child.wait()


# ---------------------------------------------------------------- fake trees

def test_new_pids_get_their_static_facts(tree):
    tree.add_process(100, comm=b"worker", uid=1000, ppid=1, starttime=5555, utime=7, stime=3)
    tree.add_process(2, comm=b"kthreadd", kthread=True, oom_score=0)
    tree.write("self", b"not a pid")  # non-numeric names are ignored
    table = ProcTable(tree.root, self_pid=1)
    added, removed = refreshed(table)
    assert sorted(p.pid for p in added) == [2, 100] and removed == []
    worker = table.get(100)
    assert (worker.comm, worker.uid, worker.ppid, worker.starttime) == (b"worker", 1000, 1, 5555)
    assert worker.cpu_ticks == 10 and not worker.kthread and worker.eligible
    assert table.get(2).kthread and not table.get(2).eligible
    assert len(table) == 2 and table.get(3) is None
    assert worker.held_fds == 1  # the sampled file only: oom_score


def test_the_daemon_itself_is_not_eligible(tree):
    tree.add_process(100)
    tree.add_process(200)
    table = ProcTable(tree.root, self_pid=200)
    refreshed(table)
    assert table.get(100).eligible and not table.get(200).eligible


def test_a_second_refresh_adds_only_new_pids_and_removes_vanished_ones(tree):
    tree.add_process(100)
    tree.add_process(101)
    table = ProcTable(tree.root, self_pid=1)
    refreshed(table)
    first = table.get(100)
    held_before = table.held_fds
    tree.remove_process(101)
    tree.add_process(102)
    added, removed = refreshed(table)
    assert [p.pid for p in added] == [102]
    assert [p.pid for p in removed] == [101] and not removed[0].alive
    assert table.get(100) is first  # same entry, not reopened
    assert table.held_fds == held_before  # 101's fds closed, 102's opened


@pytest.mark.parametrize("comm", [b"a) Z", b"x (y) z", b"new\nline", b"\xff\xfe\x80", b"  ", b")"])
def test_hostile_comm_in_a_fake_tree(tree, comm):
    tree.add_process(100, comm=comm, starttime=42)
    table = ProcTable(tree.root, self_pid=1)
    refreshed(table)
    table.sample_cpu()
    assert table.get(100).comm == comm and table.get(100).starttime == 42


def test_rank_memory_orders_by_score_then_less_cpu(tree):
    tree.add_process(100, oom_score=700, utime=50)
    tree.add_process(101, oom_score=900)
    tree.add_process(102, oom_score=700, utime=10)   # tie with 100, less work lost
    tree.add_process(103, oom_score=0)                # oom_score_adj -1000
    tree.add_process(104, oom_score=1000)             # made ineligible below
    tree.add_process(105, oom_score=680)              # lifted by a rule's adjust
    table = ProcTable(tree.root, self_pid=1)
    refreshed(table)
    table.get(104).eligible = False
    table.get(105).adjust = 400
    table.sample_memory()
    table.sample_cpu()
    ranked = table.rank_memory(10)
    assert [p.pid for p in ranked] == [105, 101, 102, 100]
    # (oom_score*3 + 2)//2 - 1000: the top of the range the kernel's 2/3 truncation left
    assert [p.memory_score for p in ranked] == [421, 351, 51, 51]
    assert [p.pid for p in table.rank_memory(2)] == [105, 101]
    assert table.rank_memory(0) == []


def test_sample_memory_reads_only_oom_score(tree):
    tree.add_process(100, oom_score=700, utime=1)
    table = ProcTable(tree.root, self_pid=1)
    refreshed(table)
    tree.set_oom_score(100, 800)
    tree.set_stat(100, utime=99)
    table.sample_memory()
    assert table.get(100).oom_score == 800
    assert table.get(100).cpu_ticks == 1  # stat untouched by sample_memory


def test_sample_cpu_follows_reparenting_and_renaming(tree):
    tree.add_process(100, comm=b"before", ppid=50, utime=1, stime=1, starttime=9)
    table = ProcTable(tree.root, self_pid=1)
    refreshed(table)
    tree.set_stat(100, comm=b"after", ppid=1, utime=30, stime=12, starttime=9)
    assert table.sample_cpu() == 0
    p = table.get(100)
    assert (p.comm, p.ppid, p.cpu_ticks) == (b"after", 1, 42)


def test_a_reused_pid_is_a_new_entry(tree):
    tree.add_process(100, comm=b"old", starttime=1000)
    table = ProcTable(tree.root, self_pid=1)
    refreshed(table)
    old = table.get(100)
    tree.set_stat(100, comm=b"new", starttime=2000)  # another process, same PID
    assert table.sample_cpu() == 1
    assert not old.alive and table.get(100) is None
    added, removed = refreshed(table)
    assert removed == [old]
    new = table.get(100)
    assert added == [new] and new.comm == b"new" and new.serial != old.serial
    with pytest.raises(ProcessLookupError):
        table.open_pidfd(old)


def test_a_table_holds_the_one_file_it_samples(tree):
    tree.add_process(100, io=io_text(read_bytes=4096, write_bytes=8192, syscr=3, syscw=4,
                                     cancelled_write_bytes=512))
    table = ProcTable(tree.root, self_pid=1, hold="io")
    refreshed(table)
    p = table.get(100)
    assert p.held_fds == 1 and table.held_fds == 1
    table.sample_io()
    table.sample_memory()              # a file it does not hold: read by path
    assert p.held_fds == 1
    assert (p.io_read_bytes, p.io_write_bytes, p.io_cancelled, p.io_syscalls) == (4096, 8192, 512, 7)


def test_on_demand_reads(tree):
    tree.add_process(100, cmdline=b"python\0-c\0pass\0", cgroup=b"0::/user.slice\n",
                     oom_score_adj=-500, vm_rss_kib=2048)
    table = ProcTable(tree.root, self_pid=1)
    refreshed(table)
    p = table.get(100)
    assert table.read_cmdline(p) == b"python\0-c\0pass\0"
    assert table.read_cgroup(p) == b"0::/user.slice\n"
    assert table.read_oom_score_adj(p) == -500
    assert p.rss_bytes == 0
    assert table.read_status(p).vm_rss == 2048 * 1024 and p.rss_bytes == 2048 * 1024
    assert table.read_exe(p) == b""  # no exe link in the fake tree


def test_entries_over_the_fd_budget_are_kept_and_read_by_path(tree):
    for pid in range(100, 110):
        tree.add_process(pid, oom_score=600 + pid)
    table = ProcTable(tree.root, self_pid=1, max_held_fds=9)
    refreshed(table)
    assert len(table) == 10 and table.held_fds <= 9
    unheld = [p for p in table.entries() if p.held_fds == 0]
    assert len(unheld) == 1
    tree.set_oom_score(unheld[0].pid, 1200)
    table.sample_memory()
    assert unheld[0].oom_score == 1200
    assert table.rank_memory(1) == [unheld[0]]


def test_close_releases_every_fd(tree):
    for pid in range(100, 105):
        tree.add_process(pid)
    table = ProcTable(tree.root, self_pid=1)
    before = len(os.listdir("/proc/self/fd"))
    refreshed(table)
    assert len(os.listdir("/proc/self/fd")) == before + 5      # one per process
    table.close()
    assert len(os.listdir("/proc/self/fd")) == before - 1  # the root fd too
    assert len(table) == 0


def test_a_missing_proc_root_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        ProcTable(tmp_path / "absent")


# ---------------------------------------------------------------- real /proc

def test_construction_raises_the_fd_limit_to_fit_10000_processes():
    ProcTable()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert soft == hard
    assert soft >= 3 * 10_000 or soft == raise_fd_limit()  # hard limit we may not raise


def test_real_children_match_psutil(children):
    spawned = [children() for _ in range(4)]
    busy = subprocess.Popen([sys.executable, "-c", "sum(range(30_000_000))"])
    table = ProcTable()
    refreshed(table)
    busy.wait()
    table.sample_cpu()
    table.sample_memory()
    for child in spawned:
        p, oracle = table.get(child.pid), psutil.Process(child.pid)
        assert p is not None and p.alive and p.eligible
        assert p.ppid == oracle.ppid() == os.getpid()
        assert p.comm.decode() == oracle.name()
        assert p.uid == oracle.uids().real
        assert p.starttime / CLK_TCK + psutil.boot_time() == pytest.approx(oracle.create_time(), abs=1.5)
        times = oracle.cpu_times()
        assert p.cpu_ticks / CLK_TCK == pytest.approx(times.user + times.system, abs=0.05)
        assert p.oom_score > 0
    me = table.get(os.getpid())
    assert me is not None and not me.eligible


@pytest.mark.parametrize("name, expected", [
    (b"a) Z", b"a) Z"),
    (b"two  spaces", b"two  spaces"),
    (b"new\nline", b"new\nline"),
    (b"\xff\xfe non-utf8", b"\xff\xfe non-utf8"),
    (b"0123456789abcdefXYZ", b"0123456789abcde"),  # the kernel keeps 15 bytes
])
def test_real_hostile_comm_parses(children, name, expected):
    child = children(name=name)
    table = ProcTable()
    refreshed(table)
    p = table.get(child.pid)
    assert p.comm == expected and p.ppid == os.getpid()
    table.sample_cpu()
    assert table.get(child.pid) is p and p.comm == expected


def test_a_process_exiting_between_refresh_and_sample_is_dropped_quietly(children):
    child = children()
    table = ProcTable()
    refreshed(table)
    p = table.get(child.pid)
    kill_and_reap(child)
    assert table.sample_memory() == 1
    assert not p.alive and table.get(child.pid) is None
    assert table.sample_cpu() == 0 and table.sample_io() == 0
    _, removed = refreshed(table)
    assert p in removed


def test_rank_memory_follows_oom_score_adj(children):
    favoured = children(oom_score_adj=800)
    others = [children() for _ in range(2)]
    table = ProcTable()
    refreshed(table)
    table.sample_memory()
    ranked = table.rank_memory(len(table))
    assert ranked[0].pid == favoured.pid
    assert {c.pid for c in others} <= {p.pid for p in ranked}
    assert all(p.oom_score > 0 and p.eligible for p in ranked)


def test_oom_score_zero_is_never_ranked_even_when_eligible():
    table = ProcTable()
    refreshed(table)
    kthreads = [p for p in table.entries() if p.kthread]
    if not kthreads:
        pytest.skip("no kernel threads in this PID namespace")
    for p in table.entries():
        p.eligible = True
    table.sample_memory()
    assert all(p.oom_score == 0 for p in kthreads)
    ranked = {p.pid for p in table.rank_memory(len(table))}
    assert not ranked & {p.pid for p in kthreads}


def test_oom_score_adj_minus_1000_is_never_ranked(children):
    try:
        protected = children(oom_score_adj=-1000)
    except PermissionError:
        pytest.skip("lowering oom_score_adj needs CAP_SYS_RESOURCE")
    table = ProcTable()
    refreshed(table)
    table.sample_memory()
    assert table.get(protected.pid).oom_score == 0
    assert protected.pid not in {p.pid for p in table.rank_memory(len(table))}


def test_open_pidfd_names_the_live_process(children):
    child = children()
    table = ProcTable()
    refreshed(table)
    pidfd = table.open_pidfd(table.get(child.pid))
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)  # our own child, by pidfd
        child.wait(timeout=5)
        assert child.returncode == -signal.SIGKILL
    finally:
        os.close(pidfd)


def test_open_pidfd_refuses_a_killed_process(children):
    child = children()
    table = ProcTable()
    refreshed(table)
    stale = table.get(child.pid)
    kill_and_reap(child)
    with pytest.raises(ProcessLookupError):  # the entry is still in the table
        table.open_pidfd(stale)
    table.sample_memory()
    assert not stale.alive and table.get(child.pid) is None
    with pytest.raises(ProcessLookupError):  # and once dropped
        table.open_pidfd(stale)


def test_open_pidfd_refuses_a_reused_pid(tree, children):
    """The real PID of a live child, but a start time the entry does not
    have: the held stat fd reads another process, so no pidfd."""
    child = children()
    real_stat = open(f"/proc/{child.pid}/stat", "rb").read()
    tree.add_process(child.pid, comm=b"python", starttime=1)  # the old process
    table = ProcTable(tree.root, self_pid=1)
    refreshed(table)
    tree.write(f"{child.pid}/stat", real_stat)  # now the stat of the live child
    with pytest.raises(ProcessLookupError):
        table.open_pidfd(table.get(child.pid))
    assert child.poll() is None


def test_running_out_of_fds_degrades_without_failing():
    """In a child: the table fills the fds it may hold, then new processes
    appear; the refresh keeps working and samples still read them."""
    code = textwrap.dedent("""
        import os, resource, subprocess, sys
        from oorkiller.proc._proctable import ProcTable
        def refreshed(t):          # every user process a candidate: the table samples candidates
            added, removed = t.refresh()
            for p in added:
                p.eligible = not p.kthread
            return added, removed
        table = ProcTable()
        refreshed(table)
        open_now = len(os.listdir("/proc/self/fd"))
        resource.setrlimit(resource.RLIMIT_NOFILE, (open_now + 4, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
        kids = [subprocess.Popen(["sleep", "30"], close_fds=True) for _ in range(8)]
        added, _ = refreshed(table)
        table.sample_memory(); table.sample_cpu()
        found = [table.get(k.pid) for k in kids]
        resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
        added_later, _ = refreshed(table)
        table.sample_memory()
        missing = [k.pid for k in kids if table.get(k.pid) is None]
        unheld = [p for p in table.entries() if p.held_fds == 0]
        print(len([p for p in found if p]), len(missing), len(unheld),
              all(table.get(k.pid).oom_score > 0 for k in kids))
        for k in kids:
            k.kill(); k.wait()
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, cwd="/")   # the installed package, not the source tree
    assert result.returncode == 0, result.stderr
    found, missing, unheld, all_scored = result.stdout.split()
    assert int(missing) == 0 and all_scored == "True"
    assert int(unheld) > 0  # some entries live without held fds


def test_read_stat_refreshes_one_entry_and_refuses_a_dead_one():
    import subprocess, sys
    child = subprocess.Popen([sys.executable, "-c",
                              "import time\nend=time.process_time()+0.3\nwhile time.process_time()<end: pass\ninput()"],
                             stdin=subprocess.PIPE)
    try:
        table = ProcTable("/proc", self_pid=os.getpid())
        refreshed(table)
        entry = table.get(child.pid)
        first = entry.cpu_ticks
        import time
        time.sleep(0.5)
        assert table.read_stat(entry) >= first
        assert entry.cpu_ticks >= 20, "0.3 s of CPU is at least 20 ticks at any HZ >= 100"
    finally:
        child.kill()
        child.wait()
    with pytest.raises(ProcessLookupError):
        table.read_stat(entry)


def test_hold_must_name_a_sampled_file(tree):
    with pytest.raises(ValueError):
        ProcTable(tree.root, self_pid=1, hold="cmdline")
