"""`hadirector check` behaves like `keepalived -t`: exit 0 with a summary, or the
errors on stderr and exit 3 (CONFIG_INVALID, as `hadirector run` does). The shipped example pair must always pass."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from hadirector.cli import main
from hadirector.config import load_config
from hadirector.exitcodes import ExitCode

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = [ROOT / "etc" / "primary.yaml", ROOT / "etc" / "backup.yaml"]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_configs_pass_check(path, capsys):
    assert main(["check", "-c", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out == "config OK: 2 vrrp instances, 4 virtual services, 10 real servers\n"
    assert err == ""


def test_example_pair_differs_only_in_router_id_and_priorities():
    primary, backup = (load_config(p) for p in EXAMPLES)
    assert primary.node.router_id != backup.node.router_id
    for p, b in zip(primary.vrrp_instances, backup.vrrp_instances, strict=True):
        assert p.priority > b.priority
        assert dataclasses.replace(p, priority=b.priority) == b
    assert dataclasses.replace(primary, source=backup.source, node=backup.node,
                               vrrp_instances=backup.vrrp_instances) == backup


def test_check_prints_every_error_on_stderr_and_exits_config_invalid(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("node: {router_id: a}\nvrrp_instances:\n  - {name: v, interface: eth0, vrid: 0, priority: 256,"
                    " virtual_ips: [192.0.2.1]}\n")
    assert main(["check", "--config", str(path)]) == ExitCode.CONFIG_INVALID == 3
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"{path}:3:38: vrrp_instances[0].vrid: expected an integer 1..255, got 0",
        f"{path}:3:51: vrrp_instances[0].priority: expected an integer 1..255, got 256",
        f"{path}: 2 errors, config not valid",
    ]


def test_check_of_a_missing_file_exits_config_invalid(tmp_path, capsys):
    assert main(["check", "-c", str(tmp_path / "missing.yaml")]) == ExitCode.CONFIG_INVALID
    assert "cannot read: No such file or directory" in capsys.readouterr().err


def test_check_defaults_to_the_system_config_path():
    from hadirector.cli import build_parser

    args = build_parser().parse_args(["check"])
    assert args.config == "/etc/hadirector/hadirector.yaml"


def test_check_summary_counts_in_singular_and_plural(tmp_path, capsys):
    path = tmp_path / "one.yaml"
    path.write_text("vrrp_instances: [{name: v, interface: eth0, vrid: 1, virtual_ips: [192.0.2.1/24]}]\n")
    assert main(["check", "-c", str(path)]) == 0
    assert capsys.readouterr().out == "config OK: 1 vrrp instance, 0 virtual services, 0 real servers\n"


def test_check_refuses_a_merge_key_bomb_naming_the_alias_that_crossed_the_budget(capsys):
    # issue 9, fault 3: this file took ~7 s and passed check.
    path = ROOT / "tests" / "unit" / "config" / "bad" / "merge_key_bomb.yaml"
    assert main(["check", "-c", str(path)]) == ExitCode.CONFIG_INVALID
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"{path}:8:36: config too complex: alias/merge expansion exceeds 200000 nodes",
        f"{path}: 1 error, config not valid",
    ]


def test_check_prints_the_first_100_errors_and_counts_all(tmp_path, capsys):
    path = tmp_path / "many.yaml"
    path.write_text("".join(f"bad{i}: 1\n" for i in range(250)))
    assert main(["check", "-c", str(path)]) == ExitCode.CONFIG_INVALID
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 101 and lines[-1] == f"{path}: 250 errors (the first 100 shown), config not valid"
