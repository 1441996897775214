"""`oorkiller install-service` / `uninstall-service`: the systemd unit and the
default configuration, written for the program that runs this command.

The unit is the shipped template (oorkiller/oorkiller.service) with
`ExecStart=` pointing at this installed program and a marker comment on its
first line; uninstall removes a unit only when it carries that marker, so an
operator's own unit is never overwritten nor removed. The configuration file
is written only when absent and never removed: it is the operator's.
"""
from __future__ import annotations

import importlib.resources
import os
import re
import subprocess
import sys

from oorkiller.config import default_config_text

UNIT_NAME = "oorkiller.service"
CONFIG_NAME = "oorkiller.yaml"
DEFAULT_CONFIG_DIR = "/etc/oorkiller"
MARKER = "# Written by `oorkiller install-service`; `oorkiller uninstall-service` removes it."
TEMPLATE_EXEC_START = "ExecStart=/usr/local/bin/oorkiller run\n"
# Characters systemd takes literally in a command line: anything else
# (spaces, quotes, `%` specifiers, `$` variables) would change its meaning.
PLAIN_PATH = re.compile(r"[A-Za-z0-9/._+@-]+")
EXIT_OK, EXIT_FATAL = 0, 1


class ServiceError(Exception):
    """A refusal or failure, said in one line."""


# ---------------------------------------------------------------- what to write
def program_command() -> list[str]:
    """The installed program running now: its console script, else `python -m oorkiller`.

    Neither path is resolved through links: a venv's python is a link to the
    base interpreter, and only the link's path finds the venv's packages.
    """
    script = os.path.abspath(sys.argv[0])
    if os.path.basename(script) == "oorkiller" and os.access(script, os.X_OK):
        return [script]
    return [os.path.abspath(sys.executable), "-m", "oorkiller"]


def exec_start(config_path: str) -> str:
    argv = [*program_command(), "run"]
    if config_path != os.path.join(DEFAULT_CONFIG_DIR, CONFIG_NAME):
        argv += ["-c", config_path]   # the daemon looks in /etc/oorkiller by itself
    for word in argv:
        if not PLAIN_PATH.fullmatch(word):
            raise ServiceError(f"{word!r} has characters systemd would reinterpret in ExecStart=; "
                               "install oorkiller under a plain path")
    return "ExecStart=" + " ".join(argv) + "\n"


def unit_text(config_path: str) -> str:
    """The shipped unit, its install notes replaced by the marker, ExecStart= ours."""
    template = importlib.resources.files("oorkiller").joinpath(UNIT_NAME).read_text(encoding="utf-8")
    if template.count(TEMPLATE_EXEC_START) != 1 or "[Unit]" not in template:
        raise ServiceError(f"the packaged {UNIT_NAME} does not have the expected ExecStart= line")
    body = template[template.index("[Unit]"):]
    header = (f"{MARKER}\n# oorkiller: the Out Of Resource killer. Change settings with drop-ins\n"
              "# (systemctl edit oorkiller), not here: a new install-service replaces this file.\n\n")
    return header + body.replace(TEMPLATE_EXEC_START, exec_start(config_path))


def is_ours(path: str) -> bool:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.readline().rstrip("\n") == MARKER


# ---------------------------------------------------------------- writing
def write_file(path: str, text: str, replace: bool) -> None:
    """Write root's 0644 file atomically; with replace=False never over an existing one."""
    temp = f"{path}.tmp-{os.getpid()}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            os.fchmod(f.fileno(), 0o644)        # whatever the umask
            os.fchown(f.fileno(), 0, 0)          # the daemon refuses a config that is not root's
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.rename(temp, path)
        else:
            os.link(temp, path)                  # fails if the file appeared meanwhile
    finally:
        if os.path.exists(temp):
            os.unlink(temp)


def make_dir(path: str) -> None:
    if not os.path.isdir(path):
        os.makedirs(path, mode=0o755)
        os.chmod(path, 0o755)                    # makedirs obeys the umask


# ---------------------------------------------------------------- systemd
def systemd_running() -> bool:
    """sd_booted(): systemd is PID 1 when it has made this directory."""
    return os.path.isdir("/run/systemd/system")


def systemctl(*args: str) -> None:
    result = subprocess.run(["systemctl", *args], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise ServiceError(f"systemctl {' '.join(args)} failed: {result.stderr.strip()}")


def reload_systemd(dry_run: bool) -> None:
    if not systemd_running():
        print("systemd is not running: no daemon-reload (systemd reads the unit when it starts)")
    elif dry_run:
        print("would run: systemctl daemon-reload")
    else:
        systemctl("daemon-reload")
        print("ran: systemctl daemon-reload")


def loaded_from(unit_path: str) -> bool:
    """systemd knows oorkiller.service as this very file (not one elsewhere)."""
    result = subprocess.run(["systemctl", "show", "-P", "FragmentPath", UNIT_NAME],
                            capture_output=True, text=True, timeout=60)
    return result.returncode == 0 and result.stdout.strip() == unit_path


# ---------------------------------------------------------------- commands
def install(unit_dir: str, config_dir: str, dry_run: bool) -> None:
    unit_path = os.path.join(unit_dir, UNIT_NAME)
    config_path = os.path.join(config_dir, CONFIG_NAME)
    unit = unit_text(config_path)
    if os.path.exists(unit_path) and not is_ours(unit_path):
        raise ServiceError(f"{unit_path} exists and was not written by install-service: "
                           "remove it, or keep your changes in a drop-in")
    keep_config = os.path.exists(config_path)
    if dry_run:
        print(f"would write {unit_path} (mode 0644, root):\n{unit}")
        if keep_config:
            print(f"would keep {config_path} (it exists)")
        else:
            print(f"would write {config_path} (mode 0644, root; directory 0755):\n{default_config_text()}")
    else:
        make_dir(unit_dir)
        write_file(unit_path, unit, replace=True)
        print(f"wrote {unit_path}")
        if keep_config:
            print(f"kept {config_path} (it exists)")
        else:
            make_dir(config_dir)
            write_file(config_path, default_config_text(), replace=False)
            print(f"wrote {config_path} (the default configuration)")
    reload_systemd(dry_run)
    if not dry_run:
        print(f"next: oorkiller check-config {config_path} && systemctl enable --now oorkiller")


def uninstall(unit_dir: str, config_dir: str, dry_run: bool) -> None:
    unit_path = os.path.join(unit_dir, UNIT_NAME)
    config_path = os.path.join(config_dir, CONFIG_NAME)
    if not os.path.exists(unit_path):
        print(f"nothing to remove: {unit_path} does not exist")
    elif not is_ours(unit_path):
        raise ServiceError(f"{unit_path} was not written by install-service: left as it is")
    elif dry_run:
        print(f"would stop and disable {UNIT_NAME} if systemd runs it, and remove {unit_path}")
    else:
        if systemd_running() and loaded_from(unit_path):
            systemctl("disable", "--now", UNIT_NAME)   # no daemon left running from a removed unit
            print(f"ran: systemctl disable --now {UNIT_NAME}")
        os.unlink(unit_path)
        print(f"removed {unit_path}")
    reload_systemd(dry_run)
    if os.path.exists(config_path):
        print(f"kept {config_path}: the configuration is the operator's; remove it by hand if unwanted")


def run_from_args(args) -> int:
    action = install if args.command == "install-service" else uninstall
    try:
        action(args.unit_dir, args.config_dir, args.dry_run)
    except BrokenPipeError:
        raise                                    # `| head`: not a failure, main() says so
    except (ServiceError, OSError, subprocess.SubprocessError) as err:
        print(f"oorkiller: {args.command}: {err}", file=sys.stderr)
        return EXIT_FATAL
    return EXIT_OK
