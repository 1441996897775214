"""One shield per resource. `MONITORS` maps a shield's name (the `resource=`
of its records; the `disk` shield reads the `disks:` section) to its class;
a shield is registered here and nowhere else."""
from __future__ import annotations

import importlib

# name -> "module:Class"; imported lazily so a broken shield cannot stop the
# others from loading.
MONITORS = {
    "memory": "oorkiller.shields.memory:MemoryMonitor",
    "cpu": "oorkiller.shields.cpu:CpuMonitor",
    "disk": "oorkiller.shields.disk:DiskMonitor",
    "io": "oorkiller.shields.io:IoMonitor",
    "network": "oorkiller.shields.network:NetworkMonitor",
}


def monitor_class(section: str):
    module_name, _, class_name = MONITORS[section].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name == module_name:
            return None            # this shield is not built yet
        raise
    return getattr(module, class_name)


def enabled_sections(config) -> list[str]:
    sections = []
    if config.memory.enabled:
        sections.append("memory")
    if config.cpu.enabled:
        sections.append("cpu")
    if config.disks:
        sections.append("disk")
    if config.io.enabled:
        sections.append("io")
    if config.network.duplicate_mac.enabled:
        sections.append("network")
    return sections
