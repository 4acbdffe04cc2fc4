"""The exec watcher's parsers (tests/lab/execwatch.py), from datagrams laid out as the kernel sends them."""

from __future__ import annotations

import struct

from tests.lab import execwatch


def event(what: int, pid: int) -> bytes:
    data = struct.pack("=IIQ", what, 0, 123) + struct.pack("=II", pid, pid) + b"\0" * 8
    message = struct.pack("=IIIIHH", 1, 1, 0, 0, len(data), 0) + data
    return struct.pack("=IHHII", 16 + len(message), 3, 0, 0, 0) + message


def test_exec_events_give_their_pids_and_other_events_are_left_out():
    fork, exit_ = 0x1, 0x80000000
    assert execwatch.exec_pids(event(execwatch.PROC_EVENT_EXEC, 4242)) == [4242]
    assert execwatch.exec_pids(event(fork, 7) + event(execwatch.PROC_EVENT_EXEC, 8) + event(exit_, 9)) == [8]
    assert execwatch.exec_pids(b"") == [] and execwatch.exec_pids(b"\0" * 8) == []
    assert execwatch.exec_pids(event(execwatch.PROC_EVENT_EXEC, 5)[:30]) == []  # cut short: nothing made up


def test_a_process_is_placed_in_the_container_whose_id_its_cgroup_names():
    containers = {"a" * 64: "lpse-test-site1", "b" * 64: "lpse-test-offsite"}
    assert execwatch.place_of(f"12:pids:/docker/{'a' * 64}\n0::/\n", containers) == "lpse-test-site1"
    assert execwatch.place_of("12:pids:/user.slice\n0::/\n", containers) == "control"
