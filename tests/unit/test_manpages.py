"""The man pages are generated from the code, cover all of it, and are valid roff.

hadirector.yaml(5) must describe every key the loader accepts and every field of the
model a key sets, with a type, a default and a keepalived equivalent; hadirector(8)
every subcommand and option of the real parser. groff checks both with all warnings
on (``-ww``): a warning is a test failure, as lintian would make it one.
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import typing

import pytest

from hadirector import manpages, model as m
from hadirector.cli import build_parser
from hadirector.config import loader
from hadirector.config.fields import Record
from hadirector.exitcodes import ExitCode

# Model fields no YAML key sets under their own name, and the key that sets them.
DERIVED = {
    ("Config", "source"): None,                  # where the file was loaded from
    ("ApiSettings", "listen_host"): "listen",
    ("ApiSettings", "listen_port"): "listen",
    ("HealthCheck", "probe"): "type",            # type + the probe keys build the probe
    ("HttpProbe", "tls"): "type",                # type: https
    ("UdpProbe", "payload"): "payload",          # payload (text) or payload_hex
    ("AuthKey", "secret"): "secret_file",        # read from that file, never written
    ("StatusRange", "low"): "status_codes",      # an item of status_codes: 204 or "200-299"
    ("StatusRange", "high"): "status_codes",
    ("RealServer", "port_from_service"): "port",  # port: 0, resolved to the service's at load
}
# The probe dataclasses are set through the check mapping's keys.
PROBE_CLASSES = {"TcpProbe", "HttpProbe", "ScriptProbe", "StatusRange", "DnsProbe", "UdpProbe",
                 "PingProbe", "SmtpProbe"}


def model_classes() -> dict[str, type]:
    """Every dataclass reachable from Config through its fields' types."""
    found: dict[str, type] = {}
    todo: list[type] = [m.Config]
    while todo:
        cls = todo.pop()
        if cls.__name__ in found:
            continue
        found[cls.__name__] = cls
        for hint in typing.get_type_hints(cls).values():
            stack = [hint]
            while stack:
                t = stack.pop()
                stack += typing.get_args(t)
                if dataclasses.is_dataclass(t):
                    todo.append(t)
    return found


def documented() -> dict[str, set[str]]:
    """record name -> the model attributes its documented keys set."""
    out: dict[str, set[str]] = {}
    for _path, spec, key in manpages.every_key():
        f = spec.by_key[key]
        out.setdefault(manpages.record_name(spec), set()).add(f.attr or f.key)
    return out


def test_every_model_field_is_set_by_a_key_described_in_the_config_page():
    page = manpages.config_page()
    docs = documented()
    check_keys = docs["HealthCheck"]
    missing = []
    for name, cls in model_classes().items():
        have = check_keys if name in PROBE_CLASSES else docs.get(name, set())
        for f in dataclasses.fields(cls):
            if (name, f.name) in DERIVED:
                key = DERIVED[(name, f.name)]
                if key is not None and key not in have:
                    missing.append(f"{name}.{f.name} (via {key})")
                continue
            if f.name not in have:
                missing.append(f"{name}.{f.name}")
    assert not missing, "model fields no documented key sets: " + ", ".join(missing)
    for path, spec, key in manpages.every_key():
        assert f"\\fB{manpages.opt(key)}\\fR" in page, f"{path}.{key} is not in the page"


def test_every_key_has_a_type_a_default_and_a_keepalived_entry():
    for path, spec, key in manpages.every_key():
        assert manpages.type_of(spec, key), f"{path}.{key}"
        assert manpages.default_of(spec, key), f"{path}.{key}"
        assert manpages.key_doc(spec, key).text, f"{path}.{key}"


def test_no_described_key_is_one_the_loader_does_not_accept():
    # A key's words sit on its loader line (doc=K(...)), so they describe an accepted
    # key as long as its record is in use: every record the loader declares is reached
    # from the top level, and its keys are in the page.
    have = {(manpages.record_name(spec), key) for _path, spec, key in manpages.every_key()}
    reached = {id(spec) for _path, spec, _same_as in manpages.sections()}
    for name, spec in vars(loader).items():
        if isinstance(spec, Record):
            assert id(spec) in reached, f"loader.{name} is described but no key leads to it"
            for f in spec.fields:
                assert (manpages.record_name(spec), f.key) in have, f"loader.{name}: {f.key}"


def test_config_page_shows_ranges_defaults_and_keepalived_keywords():
    page = manpages.config_page()
    assert "an integer 1..255" in page                 # vrid, priority
    assert "virtual_router_id" in page and "advert_int" in page and "delay_loop" in page
    assert ".SS virtual_services[].real_servers[].check" in page


def test_cli_page_lists_every_subcommand_and_option():
    parser = build_parser()
    page = manpages.cli_page(parser)
    for name, _help, sub in manpages._subparsers(parser):
        assert f".SS {name}\n" in page
        for action in sub._actions:
            hidden = isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS
            for option in action.option_strings if not hidden else ():
                assert manpages.opt(option) in page, f"{name} {option}"
    for code in ExitCode:
        assert f"\\fB{int(code)}\\fR" in page


@pytest.mark.parametrize("page", ["hadirector.8", "hadirector.yaml.5"])
def test_pages_format_without_a_groff_warning(tmp_path, page):
    path = {p.name: p for p in manpages.write(tmp_path)}[page]
    r = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(path)], capture_output=True, text=True,
                       env={"LC_ALL": "C.UTF-8", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0 and r.stderr == "", r.stderr
    r = subprocess.run(["man", "-l", "-Tutf8", str(path)], capture_output=True, text=True,
                       env={"LC_ALL": "C.UTF-8", "PATH": "/usr/bin:/bin", "MANWIDTH": "80"})
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert "hadirector" in r.stdout
