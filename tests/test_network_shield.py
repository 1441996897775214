"""The network shield end to end: the installed daemon, real interfaces in a
private network namespace, its records read from its stderr.

A duplicated MAC is reported once
(`duplicate-mac`), its end once (`duplicate-mac-cleared`); legitimate sharing
is not a duplicate; `action: down` sets down only a VM's tap/vnet port, the
newest one, and dry run sets nothing down.
"""
from __future__ import annotations

import shutil

import pytest

from sandbox import events
from scenarios_network import in_net_namespace, namespaces_available

pytestmark = pytest.mark.skipif(bool(namespaces_available()), reason=namespaces_available() or "ok")

OVS_TOOLS = ("ovs-vsctl", "ovsdb-server", "ovs-vswitchd", "ovsdb-tool")
OVS_MISSING = [tool for tool in OVS_TOOLS if shutil.which(tool) is None]


def test_two_veth_ends_with_one_mac_are_reported_once_then_cleared():
    result = in_net_namespace("veth_same_mac")
    assert result["seen"] is not None, result["records"]
    assert result["seen"]["interfaces"] == "va,vb"
    assert result["seen"]["kind"] == "local"
    assert len(events(result, "duplicate-mac")) == 1, "reported again on a later interval"
    assert result["cleared"] is not None, result["records"]
    assert result["cleared"]["interfaces"] == "va,vb"
    assert len(events(result, "duplicate-mac-cleared")) == 1
    assert not events(result, "error") and not events(result, "down")
    assert result["stopped"]["rc"] == 0


def test_a_bridge_and_its_port_or_a_macvlan_and_its_parent_are_not_duplicates():
    result = in_net_namespace("legitimate_sharing")
    assert result["canary"] is not None, "the daemon never scanned"
    reported = {r["mac"] for r in events(result, "duplicate-mac")}
    assert reported == {"02:00:00:00:0c:0c"}, result["records"]


def test_two_taps_with_one_fe_address_are_two_guests_with_one_mac():
    result = in_net_namespace("guest_taps")
    seen = result["seen"]
    assert seen is not None, result["records"]
    assert (seen["interfaces"], seen["kind"]) == ("tapA,tapB", "guest")
    assert seen["stacked"] == "br0"            # the bridge took their MAC: named apart
    assert not events(result, "down"), "action alert must not set anything down"
    assert result["state"] == {"br0": "up", "tapA": "up", "tapB": "up"}


def test_action_down_sets_the_newest_tap_down_and_never_the_bridge():
    result = in_net_namespace("guest_taps", action="down")
    down = result["down"]
    assert down is not None, result["records"]
    assert down["interface"] == "tapB" and down["dry_run"] == "no"
    # br0 was created last (highest ifindex of all) and still stays up
    assert result["state"] == {"br0": "up", "tapA": "up", "tapB": "down"}
    assert len(events(result, "down")) == 1


def test_dry_run_says_what_would_be_set_down_and_sets_nothing_down():
    result = in_net_namespace("guest_taps", action="down", dry_run=True)
    assert result["down"] is not None, result["records"]
    assert (result["down"]["interface"], result["down"]["dry_run"]) == ("tapB", "yes")
    assert result["state"] == {"br0": "up", "tapA": "up", "tapB": "up"}


def test_a_bridge_complaining_of_its_own_address_becomes_a_kernel_sourced_record():
    result = in_net_namespace("kernel_own_address")
    seen = result["seen"]
    assert seen is not None, result["records"]
    assert (seen["source"], seen["bridge"], seen["port"]) == ("kernel", "brk", "bp0")


def test_a_user_forging_our_bridges_complaint_from_a_namespace_of_their_own_gets_no_record_and_no_hook():
    result = in_net_namespace("forged_own_address", timeout=120)
    assert result["forger_rc"] == 0, result["forger_err"]
    assert result["forged_lines"], "the forged complaint must really reach the kernel log"
    assert result["after_forgery"] == {"records": [], "hook_ran": False}
    # The shield still reports the real complaint, and runs the hook for it.
    assert result["real"] is not None and result["real"]["port"] == "bp0", result["records"]
    assert result["hook_after_real"]


@pytest.mark.skipif(bool(OVS_MISSING), reason=f"Open vSwitch tools missing: {', '.join(OVS_MISSING)} "
                    "(tests/setup-machine.sh installs openvswitch-switch)")
def test_guests_with_one_attached_mac_on_open_vswitch_are_named_by_their_ports():
    result = in_net_namespace("ovs_guests_same_mac", timeout=120)
    seen = result["seen"]
    assert seen is not None, result["records"]
    assert (seen["mac"], seen["interfaces"], seen["kind"]) == ("52:54:00:ab:cd:ef", "vnet7,vnet8", "ovs")
    # their taps also share fe:54:00:ab:cd:ef: the OVS view replaces that one
    assert len(events(result, "duplicate-mac")) == 1, result["records"]
    assert not events(result, "error")


@pytest.mark.skipif(bool(OVS_MISSING), reason=f"Open vSwitch tools missing: {', '.join(OVS_MISSING)}")
def test_action_down_on_open_vswitch_downs_the_newest_guest_port_never_an_internal_port():
    result = in_net_namespace("ovs_guests_same_mac", timeout=120, action="down")
    assert result["down"]["interface"] == "vnet8", result["records"]
    skipped = result["internal"]
    assert skipped is not None and skipped["result"] == "skipped", result["records"]
    assert "internal port" in skipped["reason"]
    assert result["state"]["vnet8"] == "down"
    assert result["state"]["vnet7"] == "up"
    assert result["state"]["int1"] == result["state"]["int2"] == "up"
