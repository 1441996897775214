"""Network-shield scenarios. Each runs inside its own network and mount
namespaces (`in_net_namespace`), with a private sysfs mounted on /sys, so the
interfaces it makes and the daemon it starts see nothing of the host's network.
They return what they observed; the tests judge."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from sandbox import run_in_scratch

TESTS = os.path.dirname(os.path.abspath(__file__))
INTERVAL = "200ms"


# ------------------------------------------------------------------ outside
def in_net_namespace(function: str, timeout: float = 90, **params) -> dict:
    """Run scenarios_network.FUNCTION(**params) under `unshare --net --mount`."""
    code = (f"import sys, json; sys.path.insert(0, {TESTS!r}); import scenarios_network as s; "
            f"s.enter_private_sysfs(); result = s.{function}(**json.loads(sys.argv[1])); "
            f"print(json.dumps(result), flush=True)")
    proc = run_in_scratch(["unshare", "--net", "--mount", sys.executable, "-c", code, json.dumps(params)],
                          capture_output=True, text=True, timeout=timeout, cwd="/")
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise AssertionError(f"scenario {function} failed (rc={proc.returncode})\n"
                             f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return json.loads(lines[-1])


def namespaces_available() -> str:
    """'' when network namespaces with veth/bridge/tap work here, else why not."""
    if os.geteuid() != 0:
        return "needs root for network namespaces"
    if not shutil.which("unshare") or not shutil.which("ip"):
        return "needs unshare (util-linux) and ip (iproute2)"
    probe = subprocess.run(["unshare", "--net", "--mount", "sh", "-c",
                            "ip link add v0 type veth peer name v1"], capture_output=True, text=True)
    return "" if probe.returncode == 0 else f"veth in a network namespace fails: {probe.stderr.strip()}"


# ------------------------------------------------------------------ inside
def enter_private_sysfs() -> None:
    """Our own /sys, which lists this network namespace's interfaces only."""
    subprocess.run(["mount", "-t", "sysfs", "sysfs", "/sys"], check=True)


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def network_config(action: str = "alert", **extra) -> dict:
    from sandbox import base_config
    section = {"enabled": True, "interval": INTERVAL, "ignore": ["^lo$"], "action": action}
    section.update(extra)
    return base_config(network={"duplicate_mac": section})


def veth(a: str, b: str, mac_a: str | None = None, mac_b: str | None = None) -> None:
    ip("link", "add", a, "type", "veth", "peer", "name", b)
    if mac_a:
        ip("link", "set", a, "address", mac_a)
    if mac_b:
        ip("link", "set", b, "address", mac_b)


def tap(name: str, mac: str) -> None:
    ip("tuntap", "add", name, "mode", "tap")
    ip("link", "set", name, "address", mac)
    ip("link", "set", name, "up")


def operstate_flags(name: str) -> str:
    """'up' when IFF_UP is set (a carrier-less tap is never operstate up)."""
    with open(f"/sys/class/net/{name}/flags") as f:
        return "up" if int(f.read(), 16) & 1 else "down"


def network_records(daemon) -> list[dict]:
    return [r for r in daemon.records() if r.get("resource") == "network" or r["event"] == "error"]


def settle(seconds: float = 1.2) -> None:
    """Several intervals: long enough for a repeated report to show up."""
    time.sleep(seconds)


# ------------------------------------------------------------------ scenarios
def veth_same_mac() -> dict:
    """Two veth ends given one MAC: reported once, cleared when one changes."""
    from sandbox import Daemon
    veth("va", "vb", "02:00:00:00:00:01", "02:00:00:00:00:01")
    daemon = Daemon(network_config())
    seen = daemon.wait_for("duplicate-mac", 10, mac="02:00:00:00:00:01")
    settle()
    ip("link", "set", "vb", "address", "02:00:00:00:00:02")
    cleared = daemon.wait_for("duplicate-mac-cleared", 10, mac="02:00:00:00:00:01")
    settle()
    stopped = daemon.stop()
    return {"seen": seen, "cleared": cleared, "records": network_records(daemon), "stopped": stopped}


def legitimate_sharing() -> dict:
    """A bridge and its port, a macvlan and its parent: one MAC each, no report
    (and so that the test knows the daemon did scan, one real duplicate)."""
    from sandbox import Daemon
    veth("p0", "p1", "02:00:00:00:01:01", "02:00:00:00:01:02")
    ip("link", "add", "br0", "type", "bridge")
    ip("link", "set", "br0", "address", "02:00:00:00:01:01")
    ip("link", "set", "p0", "master", "br0")
    # passthru: the macvlan carries its parent's MAC (the kernel refuses it otherwise)
    ip("link", "add", "mv0", "link", "p1", "type", "macvlan", "mode", "passthru")
    veth("canary0", "canary1", "02:00:00:00:0c:0c", "02:00:00:00:0c:0c")
    daemon = Daemon(network_config())
    canary = daemon.wait_for("duplicate-mac", 10, mac="02:00:00:00:0c:0c")
    settle()
    stopped = daemon.stop()
    return {"canary": canary, "records": network_records(daemon), "stopped": stopped}


def guest_taps(action: str = "alert", dry_run: bool = False) -> dict:
    """Two libvirt-style taps with one fe: address (two guests with one MAC),
    both on a bridge whose own MAC is one of theirs."""
    from sandbox import Daemon
    mac = "fe:54:00:12:34:56"
    tap("tapA", mac)
    tap("tapB", mac)
    ip("link", "add", "br0", "type", "bridge")   # the newest interface of all
    ip("link", "set", "tapA", "master", "br0")
    ip("link", "set", "tapB", "master", "br0")
    ip("link", "set", "br0", "address", mac)     # the bridge took a port's MAC
    ip("link", "set", "br0", "up")
    daemon = Daemon(network_config(action), *(["--dry-run"] if dry_run else []))
    seen = daemon.wait_for("duplicate-mac", 10, mac=mac)
    down = daemon.wait_for("down", 5) if action == "down" else None
    settle()
    state = {name: operstate_flags(name) for name in ("br0", "tapA", "tapB")}
    stopped = daemon.stop()
    return {"seen": seen, "down": down, "state": state,
            "records": network_records(daemon), "stopped": stopped}


def bridge_with_port(mac: str) -> None:
    """Bridge brk with address `mac` and port bp0, whose veth peer bp1 can
    send it frames."""
    veth("bp0", "bp1", None, "02:00:00:00:0b:09")
    ip("link", "add", "brk", "type", "bridge")
    ip("link", "set", "brk", "address", mac)
    ip("link", "set", "bp0", "master", "brk")
    for name in ("brk", "bp0", "bp1"):
        ip("link", "set", name, "up")


def kernel_own_address() -> dict:
    """A frame whose source is the bridge's own MAC arrives on a port: the
    kernel's complaint becomes a duplicate-mac record with source=kernel."""
    import socket
    from sandbox import Daemon
    mac = "02:00:00:00:0b:01"
    bridge_with_port(mac)
    daemon = Daemon(network_config())
    time.sleep(0.5)                      # the daemon's kernel-log reader is open
    frame = bytes.fromhex("ffffffffffff" + mac.replace(":", "") + "88b5") + b"oorkiller-test".ljust(46, b"\0")
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
        sock.bind(("bp1", 0))
        seen = None
        for _ in range(30):              # the kernel rate-limits the warning
            sock.send(frame)
            seen = daemon.wait_for("duplicate-mac", 0.3, source="kernel", mac=mac)
            if seen:
                break
    settle(0.5)
    stopped = daemon.stop()
    return {"seen": seen, "records": network_records(daemon), "stopped": stopped}


# The attacker's side: an unprivileged user in a user and network namespace
# of their own builds a bridge named like ours, with a port named like ours,
# and makes the kernel complain about a MAC they want to accuse.
FORGER = r"""
import socket, subprocess, sys, time
def ip(*args):
    subprocess.run(["ip", *args], check=True, capture_output=True)
bridge, port, mac, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
ip("link", "add", port, "type", "veth", "peer", "name", "fk1")
ip("link", "add", bridge, "type", "bridge")
ip("link", "set", bridge, "address", mac)
ip("link", "set", port, "master", bridge)
for name in (bridge, port, "fk1"):
    ip("link", "set", name, "up")
frame = bytes.fromhex("ffffffffffff" + mac.replace(":", "") + "88b5") + b"forged".ljust(46, b"\0")
with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
    sock.bind(("fk1", 0))
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        sock.send(frame)
        time.sleep(0.1)
"""


# A user cannot reach a virtual environment under root's home from a user
# namespace of their own; the forger needs only the standard library.
SYSTEM_PYTHON = "/usr/bin/python3"


def kernel_lines_since(fd: int) -> list[str]:
    """The kernel-log messages written since `fd` was opened at the end."""
    lines = []
    while True:
        try:
            entry = os.read(fd, 8192)
        except BlockingIOError:
            return lines
        except BrokenPipeError:            # overwritten records: read on
            continue
        lines.append(entry.decode("utf-8", "replace").split(";", 1)[-1].split("\n", 1)[0])


def forged_own_address() -> dict:
    """The daemon watches bridge brk (port bp0, MAC ...0b:01) with a hook on
    every event. User nobody, in a namespace of their own, makes the kernel
    log 'brk: received packet on bp0 with own address' about another MAC. Then
    the real complaint happens here, and must still be reported."""
    import socket
    from sandbox import Daemon
    mac, accused = "02:00:00:00:0b:01", "02:00:00:00:0b:77"
    bridge_with_port(mac)
    hooked = os.path.join(tempfile.mkdtemp(), "hook-ran")
    config = network_config()
    config["hooks"] = [{"command": ["/usr/bin/touch", hooked]}]
    daemon = Daemon(config)
    time.sleep(0.5)                      # the daemon's kernel-log reader is open
    kmsg = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    os.lseek(kmsg, 0, os.SEEK_END)
    forger = subprocess.run(["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
                             "unshare", "--user", "--net", "--map-root-user",
                             SYSTEM_PYTHON, "-c", FORGER, "brk", "bp0", accused, "2"],
                            capture_output=True, text=True, timeout=30, cwd="/")
    settle(1.5)                          # several intervals of the shield
    forged_lines = [line for line in kernel_lines_since(kmsg)
                    if "received packet on bp0 with own address" in line and accused in line]
    os.close(kmsg)
    after_forgery = {"records": network_records(daemon), "hook_ran": os.path.exists(hooked)}
    settle(5.5)                          # the kernel's rate limit on the warning passes
    frame = bytes.fromhex("ffffffffffff" + mac.replace(":", "") + "88b5") + b"oorkiller-test".ljust(46, b"\0")
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
        sock.bind(("bp1", 0))
        real = None
        for _ in range(30):
            sock.send(frame)
            real = daemon.wait_for("duplicate-mac", 0.3, source="kernel", mac=mac)
            if real:
                break
    hook_after_real = wait_for_file(hooked, 5)
    stopped = daemon.stop()
    return {"forger_rc": forger.returncode, "forger_err": forger.stderr[-500:],
            "forged_lines": forged_lines, "after_forgery": after_forgery, "real": real,
            "hook_after_real": hook_after_real, "records": network_records(daemon),
            "stopped": stopped}


def wait_for_file(path: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path):
            return True
        time.sleep(0.05)
    return False


# ------------------------------------------------------------------ Open vSwitch
class OpenVSwitch:
    """ovsdb-server and ovs-vswitchd of our own, all state in a temporary dir."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="oorkiller-ovs-")
        self.env = {**os.environ, "OVS_RUNDIR": self.dir, "OVS_DBDIR": self.dir,
                    "OVS_LOGDIR": self.dir, "OVS_SYSCONFDIR": self.dir,
                    "OVS_PKGDATADIR": "/usr/share/openvswitch"}
        self.sock = os.path.join(self.dir, "db.sock")
        self.pidfiles = [os.path.join(self.dir, "ovsdb-server.pid"),
                         os.path.join(self.dir, "ovs-vswitchd.pid")]
        db = os.path.join(self.dir, "conf.db")
        self.run("ovsdb-tool", "create", db, "/usr/share/openvswitch/vswitch.ovsschema")
        self.run("ovsdb-server", db, f"--remote=punix:{self.sock}",
                 "--remote=db:Open_vSwitch,Open_vSwitch,manager_options",
                 f"--pidfile={self.pidfiles[0]}", f"--log-file={self.dir}/ovsdb-server.log",
                 f"--unixctl={self.dir}/ovsdb-server.ctl", "--detach")
        self.vsctl("--no-wait", "init")
        self.run("ovs-vswitchd", f"unix:{self.sock}", f"--pidfile={self.pidfiles[1]}",
                 f"--log-file={self.dir}/ovs-vswitchd.log",
                 f"--unixctl={self.dir}/ovs-vswitchd.ctl", "--detach")

    def run(self, *argv: str) -> str:
        done = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
        return done.stdout

    def vsctl(self, *args: str) -> str:
        return self.run("ovs-vsctl", f"--db=unix:{self.sock}", "--timeout=10", *args)

    def stop(self) -> list[int]:
        """SIGTERM exactly the two daemons we started (pids from their pidfiles)."""
        stopped = []
        for pidfile in reversed(self.pidfiles):
            try:
                with open(pidfile) as f:
                    pid = int(f.read().strip())
            except (OSError, ValueError):
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            for _ in range(100):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
            else:
                os.kill(pid, signal.SIGKILL)
            stopped.append(pid)
        shutil.rmtree(self.dir, ignore_errors=True)
        return stopped


def ovs_guests_same_mac(action: str = "alert") -> dict:
    """Two guests' ports on an OVS bridge declare one attached-mac (their taps
    carry it with 0xfe first, as libvirt does). Then two OVS internal ports
    (taps too, in the userspace datapath) are given one MAC, the newest last."""
    from sandbox import Daemon
    switch = OpenVSwitch()
    try:
        guest_mac = "52:54:00:ab:cd:ef"
        switch.vsctl("add-br", "ovsbr0", "--", "set", "Bridge", "ovsbr0", "datapath_type=netdev")
        for port in ("vnet7", "vnet8"):
            tap(port, "fe:54:00:ab:cd:ef")
            switch.vsctl("add-port", "ovsbr0", port, "--", "set", "Interface", port,
                         f"external_ids:attached-mac={guest_mac}")
        os.environ["OVS_RUNDIR"] = switch.dir        # the daemon inherits it
        daemon = Daemon(network_config(action))
        seen = daemon.wait_for("duplicate-mac", 15, kind="ovs")
        down = daemon.wait_for("down", 5) if action == "down" else None
        internal = None
        if action == "down":
            for port in ("int1", "int2"):
                switch.vsctl("add-port", "ovsbr0", port, "--", "set", "Interface", port,
                             "type=internal", "mac=\"02:00:00:00:1a:1a\"")
                ip("link", "set", port, "up")
            internal = daemon.wait_for("down", 15, mac="02:00:00:00:1a:1a")
        settle()
        state = {name: operstate_flags(name) for name in os.listdir("/sys/class/net")}
        stopped = daemon.stop()
        listed = switch.vsctl("--format=json", "--columns=name,mac_in_use,external_ids,type",
                              "list", "Interface")
        return {"seen": seen, "down": down, "internal": internal, "state": state,
                "records": network_records(daemon), "stopped": stopped, "listed": json.loads(listed)}
    finally:
        switch.stop()
