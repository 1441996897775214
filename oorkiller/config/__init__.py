"""The configuration file: YAML in, validated frozen objects out.

- `schema.py`: the frozen dataclasses the daemon reads, one field per YAML
  key carrying its key name, converter and default, and each class's rules
  that involve two keys (its `_check` attribute).
- `validate.py`: the checking mini-language: the reader that reports each
  problem with its line, the converters, and the sections derived from the
  dataclass fields.
- `load.py`: trusted loading: owner and mode checks of the file and of every
  directory above it, the size limit, reading, parsing, the embedded default.

Each problem is reported as `FILE:LINE: message`, all problems of a file at
once, in one `ConfigError`.
"""

from oorkiller.config.load import (
    ConfigError, check_file, config_warnings, default_config, default_config_text, load_config, load_config_text,
)
from oorkiller.config.schema import (
    ACTION_EVENTS, RESOURCES, CleanupRule, Config, CpuConfig, DaemonConfig, DiskConfig, Hook,
    IoConfig, LogConfig, MemoryConfig, NetworkConfig,
)
from oorkiller.config.validate import Problem

__all__ = [
    "ACTION_EVENTS", "RESOURCES", "CleanupRule", "Config", "ConfigError", "CpuConfig",
    "DaemonConfig", "DiskConfig", "Hook", "IoConfig", "LogConfig", "MemoryConfig",
    "NetworkConfig", "Problem", "check_file", "config_warnings", "default_config", "default_config_text",
    "load_config", "load_config_text",
]
