"""sd_notify over $NOTIFY_SOCKET, with no systemd library."""

import os
import socket

from hadirector.agent.sdnotify import SystemdNotifier


def test_ready_and_watchdog_datagrams_reach_the_notify_socket(tmp_path):
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as srv:
        srv.bind(path)
        n = SystemdNotifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000",
                             "WATCHDOG_PID": str(os.getpid())})
        assert n.enabled and n.watchdog_interval == 1.0
        assert n.ready(status="2 VRRP instance(s)")
        assert n.watchdog()
        assert srv.recv(100) == b"READY=1\nSTATUS=2 VRRP instance(s)"
        assert srv.recv(100) == b"WATCHDOG=1"


def test_without_notify_socket_everything_is_a_no_op():
    n = SystemdNotifier({})
    assert not n.enabled and n.watchdog_interval is None
    assert n.ready() is False


def test_watchdog_meant_for_another_pid_is_ignored():
    n = SystemdNotifier({"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"})
    assert n.watchdog_interval is None
