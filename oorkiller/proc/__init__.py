"""Reading the machine: /proc, /sys and statvfs, and nothing else.

Everything here reads; nothing changes the machine. The compiled core
(`_readers`: held-fd readers and parsers; `_proctable`: the process table)
turns bytes into plain records; the Python modules beside it read what the
shields need on top (mount table, disk statistics, network links, the Open
vSwitch database, open files of a process).
"""
