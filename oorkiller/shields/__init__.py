"""One shield per resource. `SHIELDS` maps a shield's name (the `resource=`
of its records; the `disk` shield reads the `disks:` section) to its class;
a shield is registered here and nowhere else."""
from __future__ import annotations

import importlib

# name -> "module:Class"; imported lazily so a broken shield cannot stop the
# others from loading.
SHIELDS = {
    "memory": "oorkiller.shields.memory:MemoryShield",
    "cpu": "oorkiller.shields.cpu:CpuShield",
    "disk": "oorkiller.shields.disk:DiskShield",
    "io": "oorkiller.shields.io:IoShield",
    "network": "oorkiller.shields.network:NetworkShield",
    "tasks": "oorkiller.shields.tasks:TasksShield",
    "files": "oorkiller.shields.files:FilesShield",
    "conntrack": "oorkiller.shields.conntrack:ConntrackShield",
}


def shield_class(name: str):
    module_name, _, class_name = SHIELDS[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name == module_name:
            return None            # this shield is not built yet
        raise
    return getattr(module, class_name)


def enabled_shields(config) -> list[str]:
    names = []
    if config.memory.enabled:
        names.append("memory")
    if config.cpu.enabled:
        names.append("cpu")
    if config.disks:
        names.append("disk")
    if config.io.enabled:
        names.append("io")
    if config.network.duplicate_mac.enabled:
        names.append("network")
    if config.tasks.enabled:
        names.append("tasks")
    if config.files.enabled:
        names.append("files")
    if config.network.conntrack.enabled:
        names.append("conntrack")
    return names
