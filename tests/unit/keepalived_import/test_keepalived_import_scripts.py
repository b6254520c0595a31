"""Check and notify commands: which ones need a shell, and which shell.

keepalived 2.x execs a command's words without a shell, except one starting with
``</``, which it hands to ``system()`` (/bin/sh -c). On Debian /bin/sh is dash, which
has no /dev/tcp: the idiom ``script "</dev/tcp/127.0.0.1/80"`` only works under bash.
The converted check is run here through hadirector's real script probe, against a
real listening socket.
"""

from __future__ import annotations

import os
import socket

import pytest

from hadirector.config.keepalived import shell_for
from hadirector.health.probes import script_probe

from .helpers import convert, load, notes, only


def _misc_check(path: str) -> str:
    return f"""
        virtual_server 192.0.2.10 80 {{
            lb_algo rr
            real_server 127.0.0.1 80 {{
                MISC_CHECK {{
                    misc_path "{path}"
                    misc_timeout 3
                }}
            }}
        }}
        """


def _listener() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    return s


async def test_dev_tcp_misc_check_runs_under_bash_and_passes_only_while_the_port_listens():
    sock = _listener()
    port = sock.getsockname()[1]
    conv = convert(_misc_check(f"</dev/tcp/127.0.0.1/{port}"))
    vs = only(load(conv).virtual_services)
    check = vs.real_servers[0].check
    assert check.probe.command == ("/bin/bash", "-c", f"</dev/tcp/127.0.0.1/{port}")
    assert notes(conv) == [
        f"changed: keepalived.conf:6: misc_path: '</dev/tcp/127.0.0.1/{port}' converted to "
        f"/bin/bash -c: keepalived runs it with /bin/sh -c, which on Debian is dash, where "
        f"/dev/tcp does not exist and the check always fails"]

    up = await script_probe(check.probe.command, check.timeout)
    assert (up.ok, up.detail) == (True, "exit 0")
    sock.close()
    down = await script_probe(check.probe.command, check.timeout)
    assert (down.ok, down.detail) == (False, "exit 1")


async def test_dash_as_bin_sh_fails_the_same_dev_tcp_check_which_is_why_it_is_converted():
    if os.path.realpath("/bin/sh") != os.path.realpath("/bin/dash"):
        pytest.fail("this host's /bin/sh is not dash; the test states Debian's behaviour")
    sock = _listener()
    try:
        port = sock.getsockname()[1]
        res = await script_probe(("/bin/sh", "-c", f"</dev/tcp/127.0.0.1/{port}"), 3.0)
        assert not res.ok
    finally:
        sock.close()


async def test_vrrp_script_dev_tcp_in_keepalived_sample_form_runs_under_bash():
    sock = _listener()
    port = sock.getsockname()[1]
    conv = convert(f"""
        vrrp_script chk_http_port {{
               script "</dev/tcp/127.0.0.1/{port}" # connects and exits
               interval 1
               weight -2
        }}
        """)
    script = only(load(conv).track_scripts)
    assert script.command[:2] == ("/bin/bash", "-c")
    try:
        assert (await script_probe(script.command, script.timeout)).ok
    finally:
        sock.close()


def test_a_plain_file_test_starting_with_redirect_stays_under_sh_as_keepalived_runs_it():
    conv = convert(_misc_check("</etc/hostname"))
    cmd = load(conv).virtual_services[0].real_servers[0].check.probe.command
    assert cmd == ("/bin/sh", "-c", "</etc/hostname")
    assert [n.split(":")[0] for n in notes(conv)] == ["info"]


@pytest.mark.parametrize("text", [
    "[[ -e /run/haproxy.pid ]]",
    "echo $'a\\tb' | grep -q a",
    "ports=(80 443); nc -z 127.0.0.1 ${ports[0]}",
    "function up { pidof haproxy; }; up",
    "source /etc/default/haproxy && pidof haproxy",
    "grep -q up <<< $(cat /run/state)",
    "pidof haproxy &> /dev/null",
    "diff <(ls /a) <(ls /b)",
    "exec 3<>/dev/tcp/127.0.0.1/80",
])
def test_commands_with_bash_syntax_run_under_bash(text):
    assert shell_for(text) == "/bin/bash"
    conv = convert(f'vrrp_script chk {{\n script "{text}"\n}}\n')
    assert conv.data["track_scripts"][0]["command"] == ["/bin/bash", "-c", text]
    assert only(notes(conv)).startswith("changed: keepalived.conf:2: script: ")


@pytest.mark.parametrize("text", [
    "pidof haproxy || exit 1",
    "test -e /run/haproxy.pid && kill -0 $(cat /run/haproxy.pid)",
    "curl -sf http://127.0.0.1/ > /dev/null",
])
def test_posix_shell_commands_run_under_sh(text):
    assert shell_for(text) == "/bin/sh"
    conv = convert(f'vrrp_script chk {{\n script "{text}"\n}}\n')
    assert conv.data["track_scripts"][0]["command"] == ["/bin/sh", "-c", text]


def test_shell_syntax_inside_quotes_is_an_argument_and_needs_no_wrapper():
    conv = convert("""vrrp_script chk {\n script "/bin/bash -c '</dev/tcp/127.0.0.1/80'"\n}\n""")
    assert conv.data["track_scripts"][0]["command"] == ["/bin/bash", "-c", "</dev/tcp/127.0.0.1/80"]
    assert notes(conv) == []


async def test_posix_command_converted_to_sh_really_runs_through_the_probe():
    conv = convert('vrrp_script chk {\n script "test -d / && test ! -e /nonexistent"\n}\n')
    script = only(load(conv).track_scripts)
    assert (await script_probe(script.command, 3.0)).ok
