"""Fake /proc trees in a temporary directory, for parser and table tests.

    tree = FakeProc(tmp_path)
    tree.add_process(100, comm=b"a) Z", oom_score=900, uid=1000)
    tree.write("meminfo", meminfo_text(total_kib=8 << 20, available_kib=1 << 20))
    table = ProcTable(proc_root=tree.root)

Files are rewritten in place (same inode), so descriptors that a reader
already holds see the new content, as with the real /proc.
"""
import shutil
from pathlib import Path

PF_KTHREAD = 0x00200000


def stat_line(pid, comm=b"proc", state="S", ppid=1, pgrp=None, session=None,
              flags=0x400000, utime=0, stime=0, starttime=1000, rss_pages=100,
              num_threads=1):
    """One /proc/PID/stat line with all 52 fields, as Linux 6.x writes it."""
    if isinstance(comm, str):
        comm = comm.encode()
    pgrp = pid if pgrp is None else pgrp
    session = pid if session is None else session
    fields = [state, ppid, pgrp, session, 0, -1, flags,   # 3..9
              10, 0, 0, 0, utime, stime, 0, 0,            # 10..17
              20, 0, num_threads, 0, starttime,           # 18..22
              12345678, rss_pages]                        # 23..24
    fields += [0] * (52 - 24)                             # 25..52
    tail = " ".join(str(field) for field in fields).encode()
    return b"%d (%s) %s\n" % (pid, comm, tail)


def status_text(name="proc", uid=0, euid=None, vm_rss_kib=1024, vm_swap_kib=0,
                vm_pte_kib=48, threads=1, kthread=False):
    euid = uid if euid is None else euid
    lines = [f"Name:\t{name}", "Umask:\t0022", "State:\tS (sleeping)",
             f"Uid:\t{uid}\t{euid}\t{euid}\t{euid}", "Gid:\t0\t0\t0\t0"]
    if not kthread:  # kernel threads have no Vm* lines
        lines += [f"VmRSS:\t{vm_rss_kib:8d} kB", f"VmPTE:\t{vm_pte_kib:8d} kB",
                  f"VmSwap:\t{vm_swap_kib:8d} kB"]
    lines += [f"Threads:\t{threads}"]
    return ("\n".join(lines) + "\n").encode()


def io_text(rchar=0, wchar=0, syscr=0, syscw=0, read_bytes=0, write_bytes=0,
            cancelled_write_bytes=0):
    return (f"rchar: {rchar}\nwchar: {wchar}\nsyscr: {syscr}\nsyscw: {syscw}\n"
            f"read_bytes: {read_bytes}\nwrite_bytes: {write_bytes}\n"
            f"cancelled_write_bytes: {cancelled_write_bytes}\n").encode()


def meminfo_text(total_kib=16 << 20, free_kib=8 << 20, available_kib=12 << 20,
                 buffers_kib=1024, cached_kib=2 << 20, swap_total_kib=0,
                 swap_free_kib=0, with_available=True):
    lines = [f"MemTotal:       {total_kib} kB", f"MemFree:        {free_kib} kB"]
    if with_available:
        lines.append(f"MemAvailable:   {available_kib} kB")
    lines += [f"Buffers:        {buffers_kib} kB", f"Cached:         {cached_kib} kB",
              "SwapCached:            0 kB", f"SwapTotal:      {swap_total_kib} kB",
              f"SwapFree:       {swap_free_kib} kB", "HugePages_Total:       0"]
    return ("\n".join(lines) + "\n").encode()


def cpu_stat_text(ticks=(100, 1, 50, 1000, 5, 0, 2, 0, 0, 0), ncpu=2, procs_running=1, forks=4242):
    """/proc/stat; `procs_running` counts the reader itself, as the kernel's does;
    `forks` is "processes", the tasks created since boot."""
    total = "cpu  " + " ".join(str(t) for t in ticks)
    per_cpu = [f"cpu{i} " + " ".join(str(t // max(ncpu, 1)) for t in ticks) for i in range(ncpu)]
    return ("\n".join([total, *per_cpu, "intr 12345 0 0", "ctxt 999", "btime 1700000000",
                       f"processes {forks}", f"procs_running {procs_running}", "procs_blocked 0"]) + "\n").encode()


def psi_text(some=(0.0, 0.0, 0.0, 0), full=(0.0, 0.0, 0.0, 0)):
    def line(tag, values):
        a10, a60, a300, total = values
        return f"{tag} avg10={a10:.2f} avg60={a60:.2f} avg300={a300:.2f} total={total}"
    lines = [line("some", some)]
    if full is not None:  # /proc/pressure/cpu had no "full" line before 5.13
        lines.append(line("full", full))
    return ("\n".join(lines) + "\n").encode()


class FakeProc:
    """A directory laid out like /proc, with the files oorkiller reads."""

    def __init__(self, root):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def write(self, relative_path, content: bytes):
        """Writes root/relative_path in place (O_TRUNC keeps the inode)."""
        path = self.root / relative_path
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            f.write(content)
        return path

    def add_process(self, pid, comm=b"proc", uid=0, oom_score=667, oom_score_adj=0,
                    cmdline=b"", cgroup=b"0::/\n", io=None, kthread=False, vm_rss_kib=1024,
                    **stat_fields):
        """Creates root/PID with stat, status, oom_score, oom_score_adj, io,
        cmdline and cgroup. stat_fields go to stat_line (ppid, starttime, ...)."""
        if kthread:
            stat_fields["flags"] = stat_fields.get("flags", 0) | PF_KTHREAD
            stat_fields.setdefault("ppid", 2)
        self.write(f"{pid}/stat", stat_line(pid, comm, **stat_fields))
        name = comm.decode("utf-8", "replace") if isinstance(comm, bytes) else comm
        self.write(f"{pid}/status", status_text(name=name.replace("\n", "\\n"), uid=uid,
                                                vm_rss_kib=vm_rss_kib, kthread=kthread))
        self.write(f"{pid}/oom_score", b"%d\n" % oom_score)
        self.write(f"{pid}/oom_score_adj", b"%d\n" % oom_score_adj)
        self.write(f"{pid}/io", io if io is not None else io_text())
        self.write(f"{pid}/cmdline", cmdline)
        self.write(f"{pid}/cgroup", cgroup)
        return self.root / str(pid)

    def set_stat(self, pid, comm=b"proc", **stat_fields):
        """Rewrites PID/stat in place: a held fd sees the new line."""
        self.write(f"{pid}/stat", stat_line(pid, comm, **stat_fields))

    def set_oom_score(self, pid, value):
        self.write(f"{pid}/oom_score", b"%d\n" % value)

    def remove_process(self, pid):
        shutil.rmtree(self.root / str(pid))
