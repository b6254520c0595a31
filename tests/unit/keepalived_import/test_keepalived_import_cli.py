"""``hadirector import-keepalived keepalived.conf [-o out.yaml]``."""

from __future__ import annotations

import pytest

from hadirector.cli import main
from hadirector.config import load_config
from hadirector.exitcodes import ExitCode

CONF = """\
global_defs {
    router_id lb1
    notification_email {
        ops@example.org
    }
}
vrrp_instance VI_1 {
    interface eth0
    virtual_router_id 51
    virtual_ipaddress {
        192.0.2.10/24
    }
}
virtual_server 192.0.2.10 25 {
    lb_algo rr
    real_server 10.0.0.1 25 {
        BFD_CHECK {
        }
    }
}
"""


def test_writes_yaml_to_the_output_file_and_lists_every_note_with_its_severity(tmp_path, capsys):
    src = tmp_path / "keepalived.conf"
    src.write_text(CONF)
    out = tmp_path / "out.yaml"
    assert main(["import-keepalived", str(src), "-o", str(out)]) == ExitCode.CONVERSION_LOST == 8
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.splitlines()
    assert f"lost: {src}:3: notification_email: e-mail alerts not supported, skipped" in err
    assert (f"lost: {src}:17: BFD_CHECK of real_server 10.0.0.1 25 in virtual_server 192.0.2.10 "
            f"25 is not converted: hadirector has no BFD probe") in err
    assert err[-1] == (f"hadirector import-keepalived: 0 info, 0 changed, 3 lost; written to {out} "
                       f"for review, but 3 setting(s) not converted (--allow-loss accepts that)")
    # Written anyway, for the operator to look at; the notes are in its header too.
    config = load_config(out)
    assert config.node.router_id == "lb1"
    assert [vs.name for vs in config.virtual_services] == ["tcp/192.0.2.10:25"]
    assert f"#   lost: {src}:17: BFD_CHECK" in out.read_text()


def test_allow_loss_accepts_what_was_lost(tmp_path, capsys):
    src = tmp_path / "keepalived.conf"
    src.write_text(CONF)
    assert main(["import-keepalived", "--allow-loss", str(src), "-o", str(tmp_path / "o.yaml")]) == 0
    assert "lost: " in capsys.readouterr().err


def test_a_conversion_with_only_info_and_changed_notes_exits_0(tmp_path, capsys):
    src = tmp_path / "keepalived.conf"
    src.write_text("vrrp_instance VI_1 {\n state MASTER\n interface eth0\n virtual_router_id 51\n"
                   " virtual_ipaddress {\n  192.0.2.10/24\n }\n}\n")
    assert main(["import-keepalived", str(src), "-o", str(tmp_path / "o.yaml")]) == 0
    err = capsys.readouterr().err.splitlines()
    assert any(line.startswith(f"changed: {src}:2: state MASTER") for line in err)
    assert any(line.startswith(f"info: {src}:1: vrrp_instance VI_1: state MASTER without priority")
               for line in err)


def test_without_output_the_yaml_goes_to_stdout(tmp_path, capsys):
    src = tmp_path / "keepalived.conf"
    src.write_text(CONF)
    assert main(["import-keepalived", "--allow-loss", str(src)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# hadirector configuration converted from")
    assert "vrrp_instances:" in out


def test_router_id_option_names_this_node_over_global_defs(tmp_path, capsys):
    src = tmp_path / "keepalived.conf"
    src.write_text(CONF)
    out = tmp_path / "o.yaml"
    assert main(["import-keepalived", "--allow-loss", "--router-id", "lb2", str(src),
                 "-o", str(out)]) == 0
    assert load_config(out).node.router_id == "lb2"
    assert f"info: {src}:2: router_id lb1: replaced by --router-id lb2" in capsys.readouterr().err


def test_unreadable_input_is_a_config_error(tmp_path, capsys):
    assert main(["import-keepalived", str(tmp_path / "missing.conf")]) == ExitCode.CONFIG_INVALID
    assert "missing.conf" in capsys.readouterr().err


def test_a_truncated_file_is_an_error_naming_file_and_line_and_writes_nothing(tmp_path, capsys):
    src = tmp_path / "keepalived.conf"
    src.write_text(CONF[:CONF.index("real_server")])      # cut inside virtual_server
    out = tmp_path / "out.yaml"
    assert main(["import-keepalived", str(src), "-o", str(out)]) == ExitCode.CONFIG_INVALID
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"error: {src}:14: '{{' is never closed")
    assert err[-1] == f"hadirector import-keepalived: {src} is not well-formed; nothing converted"
    assert not out.exists()


def test_a_result_our_loader_rejects_is_reported_as_a_config_error(tmp_path, capsys):
    # Two instances claiming one VIP: keepalived only warns; hadirector refuses it.
    src = tmp_path / "keepalived.conf"
    src.write_text("vrrp_instance A {\n interface eth0\n virtual_router_id 1\n"
                   " virtual_ipaddress {\n  192.0.2.10\n }\n}\n"
                   "vrrp_instance B {\n interface eth1\n virtual_router_id 2\n"
                   " virtual_ipaddress {\n  192.0.2.10\n }\n}\n")
    out = tmp_path / "out.yaml"
    assert main(["import-keepalived", "--router-id", "lb1", str(src), "-o", str(out)]) == 3
    err = capsys.readouterr().err
    assert "the converted configuration does not load" in err
    assert "192.0.2.10 is also a virtual IP of 'A'" in err
    assert out.exists()     # written anyway, for the operator to fix by hand


def test_help_lists_the_severities_and_exit_statuses(capsys):
    with pytest.raises(SystemExit):
        main(["import-keepalived", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for word in ("'info'", "'changed'", "'lost'", "--allow-loss", "--router-id",
                 "exit status is 8 unless --allow-loss", "It is 3 when keepalived.conf is unreadable"):
        assert word in out
