"""The files shield: a descriptor leak must not fill the open-file table.

Every step is one pread of /proc/sys/fs/file-nr: the open files of the
whole machine and fs.file-max, in one line. Above the `open.kill` level the
candidates' descriptors are counted (the entries of /proc/PID/fd, through
proc/fds.py: a walk per process, so only while above the level) and the
unit that grew the most is killed: SIGTERM, then SIGKILL after
`term_timeout` (shields/tables.py).
"""
from __future__ import annotations

from oorkiller.proc._calm import COUNT
from oorkiller.proc._readers import HeldFile
from oorkiller.proc.fds import count_fds
from oorkiller.proc.tables import parse_file_nr
from oorkiller.shields.tables import TableShield


class FilesShield(TableShield):
    name = "files"
    what = "open"

    def __init__(self, context):
        super().__init__(context)
        self.file_nr = HeldFile(f"{context.proc_root}/sys/fs/file-nr")

    @property
    def cfg(self):
        return self.context.config.files

    def read(self) -> dict:
        used, limit = parse_file_nr(self.file_nr.read())
        level = self.cfg.open.kill.resolve(limit)
        return {"used": used, "limit": limit, "level": level,
                "reason": f"open files {used} >= kill level {self.cfg.open.kill.described(limit)} "
                          f"of fs.file-max {limit}"}

    def gate(self) -> tuple[int, str]:
        return COUNT, self.file_nr.path          # its first number: the open files

    def holdings(self) -> dict[int, int]:
        counts = {}
        for proc in self.table.entries():
            if proc.eligible:
                found = count_fds(self.table, proc)
                if found is not None:
                    counts[proc.serial] = found
        return counts

    def close(self) -> None:
        self.file_nr.close()
        super().close()
