"""The lab's WAN link (lab/wan.py): the shaping commands, the parsers of tc's and curl's output, the bounds."""

from __future__ import annotations

import pytest

from lpse_ops.lab import wan


def test_shaping_is_htb_both_ways_on_the_offsite_address_only():
    commands = wan.shape_commands(wan.Link(100), "172.18.0.2")
    text = [" ".join(argv) for argv in commands]
    assert "ip link add lpse-wan type ifb" in text
    up = [t for t in text if "dev eth0 parent 1: protocol ip" in t]
    assert up == ["tc filter add dev eth0 parent 1: protocol ip prio 1 u32 match ip dst 172.18.0.2/32 flowid 1:10"]
    down = [t for t in text if "parent ffff:" in t]
    assert down == ["tc filter add dev eth0 parent ffff: protocol ip prio 1 u32 match ip src 172.18.0.2/32 action "
                    "mirred egress redirect dev lpse-wan"]
    rates = [argv[argv.index("rate") + 1] for argv in commands if "classid" in argv and "1:10" in argv]
    assert rates == ["100000kbit", "100000kbit"]  # the same rate each way, ceiling equal to the rate
    assert text[2].endswith("htb default 99")  # everything else (the control node, mirrors) unshaped
    assert not any("netem" in argv for argv in commands)


def test_a_delay_adds_netem_under_both_classes_and_zero_rate_shapes_nothing():
    commands = wan.shape_commands(wan.Link(20, 10), "10.0.0.9")
    netem = [argv for argv in commands if "netem" in argv]
    assert [argv[argv.index("dev") + 1] for argv in netem] == ["eth0", "lpse-wan"]
    assert all(argv[argv.index("delay") + 1] == "10ms" for argv in netem)
    assert wan.shape_commands(wan.Link(0), "10.0.0.9") == []


def test_a_link_refuses_negative_values_and_a_delay_without_a_rate():
    with pytest.raises(wan.WanError, match="0 or more"):
        wan.Link(-1)
    with pytest.raises(wan.WanError, match="needs a rate"):
        wan.Link(0, 20)


def test_parse_rates_reads_tc_class_show_in_any_unit():
    text = ("class htb 1:10 root prio 0 rate 100Mbit ceil 100Mbit burst 1600b cburst 1600b \n"
            "class htb 1:99 root prio 0 rate 10Gbit ceil 10Gbit burst 0b cburst 0b \n"
            "class htb 1:20 root prio 0 rate 512Kbit ceil 512Kbit burst 1600b cburst 1600b \n")
    assert wan.parse_rates(text) == [100.0, 10000.0, 0.512]
    assert wan.parse_rates("") == []


def test_curl_rate_and_transfer_size_bounds():
    assert wan.parse_curl_rate("12500000.000") == 100.0
    with pytest.raises(wan.WanError, match="no transfer speed"):
        wan.parse_curl_rate("")
    assert wan.transfer_size(100, 4) == 50_000_000
    assert wan.transfer_size(0.1, 1) == 2 << 20  # at least 2 MiB
    assert wan.transfer_size(10_000, 60) == 256 << 20  # at most 256 MiB
