"""Which directories may be trusted: the one rule that the configuration's
loading (the file and every directory above it) and the cleanup walk (a
cleanup directory, every directory above it, every subdirectory entered)
share.

A directory an unprivileged user may write could be rearranged under us (an
entry renamed away and a link to any root-owned file put in its place), so
a trusted directory is owned by root and writable by nobody else. Above the
directory in question, a root-owned world-writable directory with the sticky
bit (/tmp) is accepted: nobody else can rename or replace root's entries in
it. ACLs are not consulted.
"""
from __future__ import annotations

import os
import stat


def untrusted_reason(st: os.stat_result, ancestor: bool) -> str:
    """Why a directory with this stat may not be trusted ('' when it may);
    `ancestor`: it lies above the directory in question."""
    if st.st_uid != 0:
        return f"owned by uid {st.st_uid}, not root"
    mode = st.st_mode
    if mode & stat.S_IWOTH and not (ancestor and mode & stat.S_ISVTX):
        return "writable by everyone"
    if mode & stat.S_IWGRP and st.st_gid != 0 and not (ancestor and mode & stat.S_ISVTX):
        return f"writable by group {st.st_gid}"
    return ""
