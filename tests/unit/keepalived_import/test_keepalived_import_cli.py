"""``hadirector import-keepalived keepalived.conf [-o out.yaml]``."""

from __future__ import annotations

from hadirector.cli import main
from hadirector.config import load_config

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
        SMTP_CHECK {
        }
    }
}
"""


def test_writes_yaml_to_the_output_file_and_lists_what_it_skipped_on_stderr(tmp_path, capsys):
    src = tmp_path / "keepalived.conf"
    src.write_text(CONF)
    out = tmp_path / "out.yaml"
    assert main(["import-keepalived", str(src), "-o", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"{src}:3: notification_email: e-mail alerts not supported, skipped" in captured.err.splitlines()
    assert f"{src}:17: SMTP_CHECK not supported, skipped" in captured.err.splitlines()
    config = load_config(out)
    assert config.node.router_id == "lb1"
    assert [vs.name for vs in config.virtual_services] == ["tcp/192.0.2.10:25"]


def test_without_output_the_yaml_goes_to_stdout(tmp_path, capsys):
    src = tmp_path / "keepalived.conf"
    src.write_text(CONF)
    assert main(["import-keepalived", str(src)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# hadirector configuration converted from")
    assert "vrrp_instances:" in out


def test_strict_fails_when_anything_was_skipped(tmp_path, capsys):
    src = tmp_path / "keepalived.conf"
    src.write_text(CONF)
    assert main(["import-keepalived", "--strict", str(src), "-o", str(tmp_path / "o.yaml")]) == 1
    clean = tmp_path / "clean.conf"
    clean.write_text("global_defs {\n router_id lb1\n}\n")
    assert main(["import-keepalived", "--strict", str(clean), "-o", str(tmp_path / "c.yaml")]) == 0


def test_unreadable_input_exits_2(tmp_path, capsys):
    assert main(["import-keepalived", str(tmp_path / "missing.conf")]) == 2
    assert "missing.conf" in capsys.readouterr().err


def test_a_result_our_loader_rejects_is_reported_and_exits_1(tmp_path, capsys):
    # Two instances claiming one VIP: keepalived only warns; hadirector refuses it.
    src = tmp_path / "keepalived.conf"
    src.write_text("vrrp_instance A {\n interface eth0\n virtual_router_id 1\n"
                   " virtual_ipaddress {\n  192.0.2.10\n }\n}\n"
                   "vrrp_instance B {\n interface eth1\n virtual_router_id 2\n"
                   " virtual_ipaddress {\n  192.0.2.10\n }\n}\n")
    out = tmp_path / "out.yaml"
    assert main(["import-keepalived", "--router-id", "lb1", str(src), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "the converted configuration does not load" in err
    assert "192.0.2.10 is also a virtual IP of 'A'" in err
    assert out.exists()     # written anyway, for the operator to fix by hand
