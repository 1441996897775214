"""netscan (and ovs) over fake /sys/class/net trees and canned ovs-vsctl output:
what is a duplicate MAC, what is legitimate sharing, what may be set down.
The NetworkMonitor's record-once/cleared/down logic runs here too, on a fake
tree with a recording writer (the real namespace runs are test_network_shield)."""
from __future__ import annotations

import json
import os
import re
import types

import pytest

from oorkiller.proc import netscan
from oorkiller.proc import ovs
from oorkiller.config import load_config_text

MAC = "52:54:00:00:00:01"
TAP_MAC = "fe:54:00:00:00:01"


class FakeSys:
    """A /sys root with class/net/NAME directories made as the kernel does."""

    def __init__(self, root):
        self.root = str(root)
        self.net = os.path.join(self.root, "class", "net")
        os.makedirs(self.net, exist_ok=True)
        self.next_index = 2

    def add(self, name, mac, *, iflink=None, type_=1, tap=False, master=None, lowers=(),
            bridge=False, bond=False, physical=False, devtype="", operstate="up"):
        path = os.path.join(self.net, name)
        os.makedirs(path)
        index, self.next_index = self.next_index, self.next_index + 1
        files = {"address": mac, "ifindex": index, "iflink": iflink or index, "type": type_,
                 "addr_assign_type": 3, "operstate": operstate,
                 "uevent": (f"DEVTYPE={devtype}\n" if devtype else "") + f"INTERFACE={name}\nIFINDEX={index}\n"}
        if tap:
            files["tun_flags"] = "0x1002"
        for key, value in files.items():
            with open(os.path.join(path, key), "w") as f:
                f.write(f"{value}\n")
        for flag, sub in ((bridge, "bridge"), (bond, "bonding")):
            if flag:
                os.mkdir(os.path.join(path, sub))
        if physical:
            os.symlink("../../../devices/pci0000:00/0000:00:03.0", os.path.join(path, "device"))
        if master:
            os.symlink(f"../{master}", os.path.join(path, "master"))
            os.symlink(f"../{master}", os.path.join(path, f"upper_{master}"))
            os.symlink(f"../{name}", os.path.join(self.net, master, f"lower_{name}"))
        for lower in lowers:
            os.symlink(f"../{lower}", os.path.join(path, f"lower_{lower}"))
            os.symlink(f"../{name}", os.path.join(self.net, lower, f"upper_{name}"))
        return index

    def duplicates(self, **kw):
        return netscan.find_duplicates(netscan.read_links(self.root), **kw)


@pytest.fixture
def sys_tree(tmp_path):
    return FakeSys(tmp_path)


def described(duplicates):
    return sorted((d.mac, d.interfaces, d.kind) for d in duplicates)


# ------------------------------------------------------------ reading sysfs
def test_a_snapshot_reads_what_the_rules_need(sys_tree):
    sys_tree.add("br0", MAC, bridge=True, devtype="bridge")
    sys_tree.add("vnet0", TAP_MAC, tap=True, master="br0")
    links = {l.name: l for l in netscan.read_links(sys_tree.root)}
    assert links["vnet0"].master == "br0" and links["vnet0"].uppers == {"br0"}
    assert links["br0"].lowers == {"vnet0"} and links["br0"].is_bridge
    assert links["vnet0"].is_tap and links["vnet0"].is_guest_tap
    assert links["vnet0"].ifindex == 3 and links["vnet0"].mac == TAP_MAC


def test_an_interface_vanishing_mid_scan_is_skipped(sys_tree):
    sys_tree.add("eth0", MAC, physical=True)
    os.makedirs(os.path.join(sys_tree.net, "gone"))     # no files: removed under us
    assert [l.name for l in netscan.read_links(sys_tree.root)] == ["eth0"]


def test_mac_case_does_not_hide_a_duplicate(sys_tree):
    sys_tree.add("a", MAC.upper())
    sys_tree.add("b", MAC)
    assert described(sys_tree.duplicates()) == [(MAC, ("a", "b"), "local")]


# ------------------------------------------------------------ what is a duplicate
def test_two_unrelated_interfaces_with_one_mac_are_a_local_duplicate(sys_tree):
    sys_tree.add("veth0", MAC, iflink=3)
    sys_tree.add("veth1", MAC, iflink=2)           # peers point at each other: no stacking
    assert described(sys_tree.duplicates()) == [(MAC, ("veth0", "veth1"), "local")]


def test_a_bridge_and_its_port_are_not_a_duplicate(sys_tree):
    sys_tree.add("br0", MAC, bridge=True, devtype="bridge")
    sys_tree.add("eth0", MAC, physical=True, master="br0")
    assert sys_tree.duplicates() == []


def test_two_ports_of_one_bridge_with_the_bridges_mac_are_a_duplicate(sys_tree):
    sys_tree.add("br0", TAP_MAC, bridge=True, devtype="bridge")
    sys_tree.add("vnet0", TAP_MAC, tap=True, master="br0")
    sys_tree.add("vnet1", TAP_MAC, tap=True, master="br0")
    [found] = sys_tree.duplicates()
    assert (found.interfaces, found.kind, found.extra) == (("vnet0", "vnet1"), "guest", {"stacked": "br0"})


def test_a_vlan_and_its_parent_are_not_a_duplicate(sys_tree):
    parent = sys_tree.add("eth0", MAC, physical=True)
    sys_tree.add("eth0.100", MAC, lowers=["eth0"], devtype="vlan", iflink=parent)
    assert sys_tree.duplicates() == []


def test_a_vlan_without_lower_links_is_known_by_its_iflink(sys_tree):
    parent = sys_tree.add("eth0", MAC, physical=True)
    sys_tree.add("eth0.100", MAC, devtype="vlan", iflink=parent)
    assert sys_tree.duplicates() == []


def test_a_veth_iflink_naming_an_interface_is_not_stacking(sys_tree):
    peer = sys_tree.add("eth0", MAC, physical=True)
    sys_tree.add("veth9", MAC, iflink=peer)        # same number, but a veth's iflink is its peer
    assert len(sys_tree.duplicates()) == 1


def test_a_bond_its_slaves_and_a_vlan_on_it_are_not_duplicates(sys_tree):
    sys_tree.add("bond0", MAC, bond=True, devtype="bond")
    sys_tree.add("eth0", MAC, physical=True, master="bond0")
    sys_tree.add("eth1", MAC, physical=True, master="bond0")
    sys_tree.add("bond0.7", MAC, lowers=["bond0"], devtype="vlan")
    assert sys_tree.duplicates() == []


def test_a_macvlan_and_its_parent_are_not_a_duplicate(sys_tree):
    sys_tree.add("eth0", MAC, physical=True)
    sys_tree.add("macvtap0", MAC, lowers=["eth0"])
    assert sys_tree.duplicates() == []


def test_an_ovs_internal_port_and_the_port_whose_mac_it_took_are_not_a_duplicate(sys_tree):
    sys_tree.add("eth0", MAC, physical=True)
    sys_tree.add("br-ex", MAC)
    assert sys_tree.duplicates(ovs_internal={"br-ex"}, ovs_ports={"eth0", "br-ex"}) == []
    assert len(sys_tree.duplicates()) == 1          # without the OVS database it is one


def test_zero_macs_non_ethernet_and_ignored_names_are_skipped(sys_tree):
    sys_tree.add("lo", "00:00:00:00:00:00", type_=772)
    sys_tree.add("tun0", "", type_=65534)
    sys_tree.add("ib0", MAC, type_=32)
    sys_tree.add("x0", "00:00:00:00:00:00")
    sys_tree.add("x1", "00:00:00:00:00:00")
    sys_tree.add("test-a", MAC)
    sys_tree.add("test-b", MAC)
    assert sys_tree.duplicates(ignore=(re.compile("^test-"),)) == []


def test_a_guest_tap_and_a_physical_nic_with_one_mac_are_a_local_duplicate(sys_tree):
    sys_tree.add("eth0", TAP_MAC, physical=True)
    sys_tree.add("vnet0", TAP_MAC, tap=True)
    assert described(sys_tree.duplicates()) == [(TAP_MAC, ("eth0", "vnet0"), "local")]


# ------------------------------------------------------------ what may be set down
@pytest.mark.parametrize("kind, options, refusal", [
    ("vm tap", {"tap": True}, None),
    ("physical", {"tap": False, "physical": True}, "a physical NIC"),
    ("bridge", {"bridge": True, "devtype": "bridge"}, "a bridge"),
    ("bond", {"bond": True, "devtype": "bond"}, "a bond"),
    ("veth", {}, "not a tap/vnet port"),
])
def test_only_a_vm_tap_may_be_set_down(sys_tree, kind, options, refusal):
    sys_tree.add("x", MAC, **options)
    [link] = netscan.read_links(sys_tree.root)
    assert netscan.vm_port_refusal(link) == refusal, kind


def test_an_ovs_internal_tap_may_not_be_set_down(sys_tree):
    sys_tree.add("br-int", MAC, tap=True)
    [link] = netscan.read_links(sys_tree.root)
    assert netscan.vm_port_refusal(link, {"br-int"}) == "an Open vSwitch internal port"


# ------------------------------------------------------------ the kernel log
def test_a_bridge_own_address_line_is_understood():
    line = "br0: received packet on vnet3 with own address as source address (addr:52:54:00:AA:bb:cc, vlan:0)"
    found = netscan.parse_own_address_line(line)
    assert (found.mac, found.interfaces, found.source) == ("52:54:00:aa:bb:cc", ("br0", "vnet3"), "kernel")
    assert found.extra == {"bridge": "br0", "port": "vnet3"}


@pytest.mark.parametrize("line", [
    "", "br0: port 1(vnet3) entered forwarding state",
    "br0: received packet on vnet3 with own address as source address (addr:zz, vlan:0)",
    "received packet on vnet3 with own address as source address (addr:52:54:00:aa:bb:cc",
])
def test_other_kernel_lines_are_not_findings(line):
    assert netscan.parse_own_address_line(line) is None


def own_address_line(bridge="br0", port="vnet3", mac=MAC):
    return f"{bridge}: received packet on {port} with own address as source address (addr:{mac}, vlan:0)"


def bridge_with_port(sys_tree):
    sys_tree.add("br0", MAC, bridge=True, devtype="bridge")
    sys_tree.add("vnet3", TAP_MAC, tap=True, master="br0")
    sys_tree.add("eth0", "52:54:00:00:00:09", physical=True, master="br0")


@pytest.mark.parametrize("mac", [MAC, TAP_MAC, "52:54:00:00:00:09"])
def test_an_own_address_line_this_namespace_bears_out_is_confirmed(sys_tree, mac):
    """The bridge's own addresses: its own MAC and each of its ports'."""
    bridge_with_port(sys_tree)
    seen = netscan.parse_own_address_line(own_address_line(mac=mac))
    assert netscan.own_address_confirmed(seen, sys_tree.root)


@pytest.mark.parametrize("line", [
    own_address_line(port="veth-nothere"),                  # no such port here
    own_address_line(bridge="br-elsewhere"),               # no such bridge here
    own_address_line(port="lonely"),                       # a port of no bridge
    own_address_line(bridge="eth0", port="vnet3"),         # not a bridge
    own_address_line(mac="02:00:00:00:00:66"),             # not one of the bridge's addresses
    own_address_line(bridge="..", port="vnet3"),
    own_address_line(port="../br0"),
])
def test_an_own_address_line_from_another_namespace_is_not_confirmed(sys_tree, line):
    """Another namespace's bridge writes the same kernel log: a user who made
    one in their own namespace can name any port and any MAC."""
    bridge_with_port(sys_tree)
    sys_tree.add("lonely", "52:54:00:00:00:07")
    seen = netscan.parse_own_address_line(line)
    assert seen is not None and not netscan.own_address_confirmed(seen, sys_tree.root)


def test_a_forged_own_address_line_makes_no_decision_and_a_real_one_does(sys_tree, monkeypatch):
    bridge_with_port(sys_tree)
    forged = own_address_line(port="veth-nothere")
    shield, step, writer, downs = network_shield(sys_tree, monkeypatch, kernel_lines=[forged])
    assert step(0.0).decisions == [] and writer.records == []
    shield, step, writer, downs = network_shield(sys_tree, monkeypatch, kernel_lines=[own_address_line()])
    step(0.0)
    assert [(r["event"], r["source"], r["port"]) for r in writer.records] == [("duplicate-mac", "kernel", "vnet3")]


# ------------------------------------------------------------ Open vSwitch
def ovs_table(*rows):
    return json.dumps({"headings": ["name", "mac_in_use", "external_ids", "type"], "data": [
        [name, mac, ["map", [["attached-mac", guest]] if guest else []], kind]
        for name, mac, guest, kind in rows]})


def test_ovs_rows_are_read_from_ovsdb_json():
    rows = ovs.parse_interfaces(ovs_table(("vnet0", "FE:54:00:00:00:01", "52:54:00:00:00:01", ""),
                                          ("br-int", ["set", []], None, "internal")))
    assert rows[0] == ovs.OvsInterface("vnet0", "fe:54:00:00:00:01", "52:54:00:00:00:01", "")
    assert rows[1].internal and rows[1].mac_in_use == "" and rows[1].attached_mac == ""


@pytest.mark.parametrize("junk", ["", "{", "[]", '{"headings": 1}', '{"data": [[1]]}'])
def test_unreadable_ovs_output_is_a_clear_error(junk):
    with pytest.raises(ovs.OvsError):
        ovs.parse_interfaces(junk)


def test_guests_with_one_attached_mac_are_an_ovs_duplicate_named_by_port():
    rows = ovs.parse_interfaces(ovs_table(("vnet0", "fe:54:00:00:00:01", MAC, ""),
                                          ("vnet5", "fe:54:00:00:00:02", MAC, ""),
                                          ("vnet6", "fe:54:00:00:00:03", "52:54:00:00:00:09", "")))
    assert described(ovs.find_duplicates(rows)) == [(MAC, ("vnet0", "vnet5"), "ovs")]
    assert ovs.find_duplicates(rows, ignore=(re.compile("^vnet5$"),)) == []


def test_ports_the_kernel_cannot_see_are_judged_on_their_mac_in_use():
    rows = ovs.parse_interfaces(ovs_table(("dpdk0", MAC, None, "dpdk"), ("dpdk1", MAC, None, "dpdk"),
                                          ("br-phy", MAC, None, "internal")))
    assert described(ovs.find_duplicates(rows)) == [(MAC, ("dpdk0", "dpdk1"), "ovs")]
    # the kernel sees both: netscan judges them, with more facts
    assert ovs.find_duplicates(rows, local_names={"dpdk0", "dpdk1"}) == []


def test_the_database_socket_follows_the_documented_order(tmp_path):
    sock = tmp_path / "db.sock"
    sock.touch()
    assert ovs.database({"OORKILLER_OVS_DB": "tcp:10.0.0.1:6640"}) == "tcp:10.0.0.1:6640"
    assert ovs.database({"OORKILLER_OVS_DB": "/x/db.sock"}) == "unix:/x/db.sock"
    assert ovs.database({"OVS_RUNDIR": str(tmp_path)}) == f"unix:{sock}"


def test_no_database_means_no_ovs_vsctl_run(tmp_path, monkeypatch):
    monkeypatch.setattr(ovs, "DEFAULT_SOCKETS", ())
    assert not ovs.available({"OVS_RUNDIR": str(tmp_path)})
    with pytest.raises(ovs.OvsError):
        ovs.list_interfaces({"OVS_RUNDIR": str(tmp_path)})


# ------------------------------------------------------------ the monitor's bookkeeping
class RecordingWriter:
    def __init__(self):
        self.records = []

    def emit(self, event, level="info", **fields):
        self.records.append({"event": event, "level": level, **fields})


def network_shield(sys_tree, monkeypatch, action="alert", dry_run=False, kernel_lines=()):
    """The network shield over a fake sysfs, its decisions carried out by a
    real engine whose link calls are recorded instead of made."""
    from oorkiller.act import engine as engine_module
    from oorkiller.shields import network
    from oorkiller.shields.base import Context
    monkeypatch.setattr(ovs, "available", lambda environ=None: False)
    monkeypatch.setattr(network, "KernelLogWatch", lambda path: types.SimpleNamespace(
        kernel_lines=lambda: list(kernel_lines), close=lambda: None, problem=""))
    downs = []
    monkeypatch.setattr(engine_module, "set_down", downs.append)
    config = load_config_text(f"network: {{duplicate_mac: {{action: {action}, interval: 1s}}}}\n", "t.yaml")
    writer = RecordingWriter()
    engine = engine_module.Engine(writer)
    engine.dry_run = dry_run
    shield = network.NetworkShield(Context(config=config, rules=None, sys_root=sys_tree.root))

    def step(now):
        done = shield.step(now)
        for decision in done.decisions:
            engine.submit(decision)
            assert decision.done.wait(5)
        return done
    return shield, step, writer, downs


def test_a_duplicate_is_reported_once_and_its_end_once(sys_tree, monkeypatch):
    sys_tree.add("a", MAC)
    sys_tree.add("b", MAC)
    shield, step, writer, downs = network_shield(sys_tree, monkeypatch)
    for now in range(3):
        assert step(float(now)).sleep == 1.0
    assert [(r["event"], r["level"], r["interfaces"], r["kind"]) for r in writer.records] == [
        ("duplicate-mac", "warning", "a,b", "local")]
    assert shield.status()[0]["state"] == "acting"
    with open(os.path.join(sys_tree.net, "b", "address"), "w") as f:
        f.write("52:54:00:00:00:02\n")
    step(3.0)
    step(4.0)
    assert [(r["event"], r["level"]) for r in writer.records[1:]] == [("duplicate-mac-cleared", "info")]
    assert shield.status()[0]["state"] == "ok" and downs == []


def test_action_down_decides_to_set_the_newest_tap_down(sys_tree, monkeypatch):
    from oorkiller.judge.decision import LinkDown
    sys_tree.add("vnet0", TAP_MAC, tap=True)
    sys_tree.add("vnet1", TAP_MAC, tap=True)
    shield, step, writer, downs = network_shield(sys_tree, monkeypatch, action="down")
    (down,) = [d for d in step(0.0).decisions if isinstance(d, LinkDown)]
    assert down.interface == "vnet1" and down.fields["mac"] == TAP_MAC
    assert [d for d in step(1.0).decisions if isinstance(d, LinkDown)] == [], "once per duplicate"
    assert downs == ["vnet1"]
    [record] = [r for r in writer.records if r["event"] == "down"]
    assert (record["level"], record["interface"], record["dry_run"]) == ("warning", "vnet1", "no")


def test_action_down_never_takes_a_newer_physical_nic_and_says_why(sys_tree, monkeypatch):
    sys_tree.add("vnet0", TAP_MAC, tap=True)
    sys_tree.add("eth9", TAP_MAC, physical=True)
    shield, step, writer, downs = network_shield(sys_tree, monkeypatch, action="down")
    step(0.0)
    assert downs == []
    [down] = [r for r in writer.records if r["event"] == "down"]
    assert down["result"] == "skipped" and "eth9 is a physical NIC" in down["reason"]


def test_dry_run_records_the_down_and_touches_nothing(sys_tree, monkeypatch):
    sys_tree.add("vnet0", TAP_MAC, tap=True)
    sys_tree.add("vnet1", TAP_MAC, tap=True)
    shield, step, writer, downs = network_shield(sys_tree, monkeypatch, action="down", dry_run=True)
    step(0.0)
    assert downs == []
    [down] = [r for r in writer.records if r["event"] == "down"]
    assert (down["interface"], down["dry_run"], down["level"]) == ("vnet1", "yes", "warning")


def test_status_scans_when_no_step_ran_yet(sys_tree, monkeypatch):
    sys_tree.add("a", MAC)
    sys_tree.add("b", MAC)
    shield, _, writer, _ = network_shield(sys_tree, monkeypatch)
    summary, row = shield.status()
    assert summary["resource"] == "network" and summary["state"] == "acting" and summary["duplicates"] == 1
    assert (row["mac"], row["interfaces"], row["kind"]) == (MAC, "a,b", "local")
    assert writer.records == []            # status reports, it does not record


def test_hostile_interface_names_round_trip(sys_tree):
    sys_tree.add("weird\u00e9", MAC)
    os.makedirs(os.path.join(os.fsencode(sys_tree.net), b"raw\xff"))
    for key, value in (("address", MAC), ("ifindex", "40"), ("iflink", "40"), ("type", "1")):
        with open(os.path.join(os.fsencode(sys_tree.net), b"raw\xff", key.encode()), "w") as f:
            f.write(value + "\n")
    [found] = sys_tree.duplicates()
    assert os.fsencode(found.interfaces[0]) == b"raw\xff"
