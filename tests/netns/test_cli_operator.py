"""The command line as an operator meets it, run as real processes: ``--version``,
``--help`` with defaults and the exit code table, one exit code per kind of failure in
every command, ``check --host`` / ``--strict`` inside a namespace that is (or is not)
ready, and the log of a real agent under systemd-like ``JOURNAL_STREAM``: a journald
priority on every line, each event once, the version in ``agent.started``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import textwrap
from collections import Counter
from importlib import metadata
from pathlib import Path

import pytest

from hadirector.cli import COMMANDS, build_parser
from hadirector.exitcodes import ExitCode, epilog
from hadirector.ipvs.availability import probe

from lab.agents import HADIRECTOR, ROOT, agent_factory, wait_for
from lab.lan import sh

pytestmark = [pytest.mark.netns, pytest.mark.lan("op", nodes=2, net=50)]

START_TIMEOUT = 15.0


def cli(*argv: str, ns: str | None = None, env: dict | None = None, prefix: tuple[str, ...] = (),
        **kw) -> subprocess.CompletedProcess:
    cmd = [*(("ip", "netns", "exec", ns) if ns else ()), *prefix, *HADIRECTOR, *argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=str(ROOT),
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, **kw)


# --- version and help -------------------------------------------------------------------


def test_version_prints_the_package_version_and_exits_0():
    res = cli("--version")
    assert (res.returncode, res.stdout, res.stderr) == (0, f"hadirector {metadata.version('hadirector')}\n", "")


def _flat(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_subcommand_help_shows_its_defaults_and_the_exit_codes(command):
    res = cli(command, "--help")
    assert res.returncode == 0, res.stderr
    assert epilog() in res.stdout
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for action in sub.choices[command]._actions:
        if action.option_strings and action.default not in (None, False, argparse.SUPPRESS, []) \
                and action.help != argparse.SUPPRESS:
            shown = f"{action.default:g}" if isinstance(action.default, float) else str(action.default)
            assert f"default: {shown})" in _flat(res.stdout) or f"default {shown})" in _flat(res.stdout), \
                (command, action.option_strings)


def test_the_top_level_help_lists_the_commands_and_the_exit_codes():
    res = cli("--help")
    assert res.returncode == 0
    assert all(name in res.stdout for name in COMMANDS) and epilog() in res.stdout
    assert "--version" in res.stdout


# --- one exit code per kind of failure ----------------------------------------------------

BAD_YAML = "node: {router_id: t}\nvrrp_instances:\n  - name: VI_1\n    interface: eth0\n   vrid: 51\n"


def test_a_config_error_is_exit_3_in_check_config_run_reload_and_status(lan, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_YAML)
    where = f"{bad}:5:4: YAML syntax error: line 5: this line is indented differently from the lines above it"
    check = cli("check", "-c", str(bad))
    assert check.returncode == ExitCode.CONFIG_INVALID
    assert check.stderr.splitlines()[0].startswith(where)
    config = cli("config", "-c", str(bad), "--effective")
    assert (config.returncode, config.stdout) == (ExitCode.CONFIG_INVALID, "")
    assert config.stderr.splitlines()[0].startswith(where)
    # A namespace of its own: the lock of another agent on this host must not answer first.
    run = cli("run", "-c", str(bad), "--log-format", "json", ns=lan.ns(1))
    assert run.returncode == ExitCode.CONFIG_INVALID, run.stderr
    assert where in run.stderr and "Traceback" not in run.stderr
    for command in ("reload", "status"):
        res = cli(command, "-c", str(bad))
        assert res.returncode == ExitCode.CONFIG_INVALID, (command, res.stderr)
        assert f"cannot parse {bad}" in res.stderr


def test_a_reload_the_running_agent_refuses_is_exit_3_like_check(lan, tmp_path):
    with agent_factory(tmp_path, 0.1) as make:
        agent = make(lan, 1)
        agent.start()
        wait_for(lambda: agent.role() in ("BACKUP", "MASTER"), START_TIMEOUT, what="agent up")
        text = agent.config_path.read_text().replace("vrid: 51", "vrid: 300")
        agent.config_path.write_text(text)
        res = cli("reload", "-c", str(agent.config_path), ns=lan.ns(1))
        assert res.returncode == ExitCode.CONFIG_INVALID, res.stderr
        assert "reload refused" in res.stderr and "expected an integer 1..255, got 300" in res.stderr
        assert cli("check", "-c", str(agent.config_path)).returncode == ExitCode.CONFIG_INVALID
        assert agent.alive()


# --- check --host and --strict --------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "h.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_check_host_passes_where_the_interface_and_source_address_exist(lan, tmp_path):
    cfg = write(tmp_path, f"""\
        node: {{router_id: n1}}
        vrrp_instances:
          - name: VI_1
            interface: eth0
            vrid: 51
            virtual_ips: [{lan.vip4()}/24]
            unicast_src: {lan.ip4(1)}
            unicast_peers: [{lan.ip4(2)}]
        """)
    res = cli("check", "-c", str(cfg), "--host", "--strict", ns=lan.ns(1))
    assert (res.returncode, res.stderr) == (0, "")
    assert res.stdout == "config OK on this host: 1 vrrp instance, 0 virtual services, 0 real servers\n"
    # The same file on the other director: its unicast_src is not there, and the peer is itself.
    other = cli("check", "-c", str(cfg), "--host", ns=lan.ns(2))
    assert other.returncode == ExitCode.START_FAILED
    assert other.stderr.splitlines() == [
        f"error: {cfg}:7:18: vrrp_instances[0].unicast_src: {lan.ip4(1)} is not an address of this host",
        f"warning: {cfg}:8:21: vrrp_instances[0].unicast_peers[0]: {lan.ip4(2)} is an address of this host "
        f"(eth0); list only the other director(s)",
        f"{cfg}: 1 host error, 1 warning, this host is not ready",
    ]


def test_check_host_names_each_missing_interface_and_address_at_its_line(lan, tmp_path):
    sh("ip", "link", "add", "bare0", "type", "veth", "peer", "name", "bare1", ns=lan.ns(1))
    cfg = write(tmp_path, f"""\
        node: {{router_id: n1}}
        vrrp_instances:
          - name: VI_1
            interface: eth9
            vrid: 51
            virtual_ips: [{lan.vip4()}/24]
            track_interfaces: [eth0, eth8]
          - name: VI_2
            interface: bare0
            vrid: 52
            virtual_ips: [{lan.vip4(101)}/24]
        """)
    res = cli("check", "-c", str(cfg), "--host", ns=lan.ns(1))
    assert res.returncode == ExitCode.START_FAILED
    assert res.stderr.splitlines() == [
        f"error: {cfg}:4:16: vrrp_instances[0].interface: no interface 'eth9' on this host",
        f"error: {cfg}:7:30: vrrp_instances[0].track_interfaces[1]: no tracked interface 'eth8' on this host",
        f"error: {cfg}:9:16: vrrp_instances[1].interface: bare0 has no IPv4 address to send adverts from "
        "(RFC 5798 5.1.1.1 / 5.1.2.1): add one, or set unicast_src",
        f"{cfg}: 3 host errors, this host is not ready",
    ]
    # Without --host the file itself is valid.
    assert cli("check", "-c", str(cfg), ns=lan.ns(1)).returncode == 0


def test_check_host_probes_ipvs_when_virtual_services_are_configured(lan, tmp_path):
    cfg = write(tmp_path, f"""\
        node: {{router_id: n1}}
        vrrp_instances:
          - {{name: VI_1, interface: eth0, vrid: 51, virtual_ips: [{lan.vip4()}/24]}}
        virtual_services:
          - address: {lan.vip4()}
            port: 80
            forward: dr
            real_servers: [{{address: {lan.ip4(2)}}}]
        """)
    res = cli("check", "-c", str(cfg), "--host", ns=lan.ns(1))
    # The same probe, from this test: the host kernel decides which answer is right.
    problem = subprocess.run(["ip", "netns", "exec", lan.ns(1), sys.executable, "-c",
                              "from hadirector.ipvs.availability import probe; print(probe() or '')"],
                             capture_output=True, text=True, cwd=str(ROOT),
                             env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout.strip()
    if problem:
        assert res.returncode == ExitCode.START_FAILED
        assert res.stderr.splitlines()[0] == (f"error: {cfg}:5:5: virtual_services[0]: IPVS is not available "
                                              f"on this host: {problem}")
    else:
        assert (res.returncode, res.stderr) == (0, "")
    assert probe.__module__ == "hadirector.ipvs.availability"


def test_strict_turns_warnings_into_a_config_error(tmp_path):
    cfg = write(tmp_path, """\
        node: {router_id: n1}
        vrrp_instances:
          - {name: VI_1, interface: eth0, vrid: 51, virtual_ips: [192.0.2.100], unicast_src: 192.0.2.2}
        """)
    lenient = cli("check", "-c", str(cfg))
    assert lenient.returncode == 0
    assert lenient.stdout == "config OK: 1 vrrp instance, 0 virtual services, 0 real servers, 2 warnings\n"
    warnings = [line for line in lenient.stderr.splitlines()]
    assert len(warnings) == 2 and all(re.match(rf"warning: {re.escape(str(cfg))}:3:\d+: ", w) for w in warnings)
    strict = cli("check", "-c", str(cfg), "--strict")
    assert strict.returncode == ExitCode.CONFIG_INVALID
    assert strict.stderr.splitlines() == warnings + [f"{cfg}: 2 warnings (--strict: errors), config not valid"]


# --- logs under systemd ---------------------------------------------------------------------


def journal_lines(text: str) -> list[tuple[int, str]]:
    out = []
    for line in text.splitlines():
        m = re.fullmatch(r"<([0-7])>(.*)", line)
        assert m, f"a line without a journald priority: {line!r}"
        out.append((int(m.group(1)), m.group(2)))
    return out


def test_a_real_agent_under_journal_stream_prefixes_priorities_and_logs_each_event_once(lan, tmp_path,
                                                                                        monkeypatch):
    with agent_factory(tmp_path, 0.1) as make:
        # A VIP without a prefix length: valid, and one config.warned.
        agent = make(lan, 1, extra={"virtual_ips": [str(lan.vip4())]})
        agent.log_path.touch()
        st = os.stat(agent.log_path)
        # What systemd sets for a unit whose stderr is the journal (systemd.exec(5)).
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        agent.start()
        wait_for(lambda: agent.role() == "MASTER", START_TIMEOUT, what="agent MASTER")
        assert agent.stop() == 0
        lines = journal_lines(agent.log_path.read_text())
    events = [(prio, json.loads(body)) for prio, body in lines]
    by_name = Counter(e["event"] for _, e in events)
    assert by_name["agent.started"] == by_name["config.warned"] == by_name["agent.stopping"] == 1, by_name
    assert [e["new"] for _, e in events if e["event"] == "vrrp.role_changed"][:2] == ["BACKUP", "MASTER"]
    # Nothing twice: no two lines alike (a second handler would repeat each one).
    assert len(set(lines)) == len(lines)
    prio = {e["event"]: p for p, e in events}
    assert (prio["agent.started"], prio["config.warned"]) == (6, 4)
    started = next(e for _, e in events if e["event"] == "agent.started")
    assert started["version"] == metadata.version("hadirector")
    warned = next(e for _, e in events if e["event"] == "config.warned")
    assert warned["key"] == "vrrp_instances[0].virtual_ips[0]" and warned["line"] > 0
    assert "has no prefix length" in warned["detail"]


def test_a_start_failure_under_journal_stream_is_priority_err(lan, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_YAML)
    read, write_end = os.pipe()
    st = os.fstat(write_end)
    proc = subprocess.Popen(["ip", "netns", "exec", lan.ns(1), *HADIRECTOR, "run", "-c", str(bad), "--log-format", "console"],
                            stdout=subprocess.DEVNULL, stderr=write_end, cwd=str(ROOT),
                            env={**os.environ, "PYTHONPATH": str(ROOT), "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
    os.close(write_end)
    with os.fdopen(read) as f:
        text = f.read()
    assert proc.wait(60) == ExitCode.CONFIG_INVALID
    lines = journal_lines(text)
    assert [p for p, _ in lines] == [3, 3], text
    assert "agent.start_failed" in lines[0][1] and lines[1][1].startswith("hadirector run: ")
    assert "\x1b[" not in text


def test_without_journal_stream_lines_carry_no_prefix(lan, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_YAML)
    res = cli("run", "-c", str(bad), "--log-format", "json", ns=lan.ns(1),
              env={"JOURNAL_STREAM": "1:2"})         # set, but not our stderr: a child of a unit
    assert res.returncode == ExitCode.CONFIG_INVALID
    assert [line[:1] for line in res.stderr.splitlines()] == ["{", "h"]
