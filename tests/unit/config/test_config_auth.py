"""``auth:`` (signed adverts, issue 12): keys only from root's files in keepalived's
format, a node-wide default, clear errors at file:line:key, a warning for a readable
key file, and the secret never in ``config --effective``."""

from __future__ import annotations

import ipaddress
import os

import pytest
import yaml

from hadirector import model as m
from hadirector.config import ConfigError
from hadirector.config.effective import effective_yaml
from hadirector.config.loader import parse

KEY = bytes(range(32))


def key_file(tmp_path, name="k1", data: bytes | None = None, mode=0o600) -> str:
    path = tmp_path / name
    path.write_bytes(b"hex:" + KEY.hex().encode() + b"\n" if data is None else data)
    os.chmod(path, mode)
    return str(path)


def config(auth: str, top: str = "", extra: str = "") -> str:
    return f"""\
node: {{router_id: t}}
{top}vrrp_instances:
  - name: vi_1
    interface: eth0
    vrid: 51
    virtual_ips: [192.0.2.100/24]
{auth}{extra}"""


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse(text, "a.yaml")
    return [str(i) for i in e.value.issues]


def test_an_instance_auth_reads_its_hex_key_file(tmp_path):
    path = key_file(tmp_path)
    cfg = parse(config(f"    auth: {{keys: [{{id: 1, secret_file: {path}}}]}}\n"), "a.yaml").config
    auth = cfg.vrrp_instances[0].auth
    assert auth == m.VrrpAuth(keys=(m.AuthKey(1, path, KEY),), active_key=1)
    assert auth.mode is m.AuthMode.ENFORCE and auth.anti_replay is m.AntiReplay.TIME


def test_a_raw_key_file_is_used_as_written_minus_its_line_end(tmp_path):
    path = key_file(tmp_path, data=b"a" * 40 + b"\n")
    cfg = parse(config(f"    auth: {{keys: [{{id: 1, secret_file: {path}}}]}}\n"), "a.yaml").config
    assert cfg.vrrp_instances[0].auth.keys[0].secret == b"a" * 40


def test_the_top_level_auth_is_the_default_and_null_opts_out(tmp_path):
    path = key_file(tmp_path)
    top = f"auth:\n  mode: permissive\n  keys: [{{id: 1, secret_file: {path}}}]\n"
    extra = "  - {name: vi_2, interface: eth0, vrid: 52, virtual_ips: [192.0.2.101/24], auth: null}\n"
    cfg = parse(config("", top, extra), "a.yaml").config
    assert cfg.vrrp_instances[0].auth.mode is m.AuthMode.PERMISSIVE
    assert cfg.vrrp_instances[1].auth is None


def test_receive_only_is_also_spelled_as_keepalived_does(tmp_path):
    path = key_file(tmp_path)
    cfg = parse(config(f"    auth: {{mode: receive-only, keys: [{{id: 1, secret_file: {path}}}]}}\n"),
                "a.yaml").config
    assert cfg.vrrp_instances[0].auth.mode is m.AuthMode.RECEIVE_ONLY


def test_a_short_key_is_an_error_naming_file_line_and_key_but_not_the_secret(tmp_path):
    path = key_file(tmp_path, data=b"hex:" + b"ab" * 10)
    errors = errors_of(config(f"    auth: {{keys: [{{id: 1, secret_file: {path}}}]}}\n"))
    assert errors == [f"a.yaml:7:40: vrrp_instances[0].auth.keys[0].secret_file: {path} holds a 10-byte "
                      "key; expected 32-64 bytes (raw, or hex: and 64-128 hex digits)"]
    assert "abab" not in errors[0]


def test_a_missing_key_file_is_an_error(tmp_path):
    errors = errors_of(config(f"    auth: {{keys: [{{id: 1, secret_file: {tmp_path}/none}}]}}\n"))
    assert errors == [f"a.yaml:7:40: vrrp_instances[0].auth.keys[0].secret_file: cannot read "
                      f"{tmp_path}/none: No such file or directory"]


def test_bad_hex_is_an_error(tmp_path):
    path = key_file(tmp_path, data=b"hex:" + b"zz" * 32)
    assert "after hex: expected hex digits only" in errors_of(
        config(f"    auth: {{keys: [{{id: 1, secret_file: {path}}}]}}\n"))[0]


def test_an_unknown_active_key_is_an_error_listing_the_keys(tmp_path):
    path = key_file(tmp_path)
    errors = errors_of(config(f"    auth: {{active_key: 3, keys: [{{id: 1, secret_file: {path}}}]}}\n"))
    assert errors == ["a.yaml:7:24: vrrp_instances[0].auth.active_key: no key with id 3 (keys: 1)"]


def test_two_keys_need_an_active_key_and_distinct_ids(tmp_path):
    p1, p2 = key_file(tmp_path, "k1"), key_file(tmp_path, "k2")
    assert errors_of(config(f"    auth: {{keys: [{{id: 1, secret_file: {p1}}}, {{id: 2, secret_file: {p2}}}]}}\n")) \
        == ["a.yaml:7:11: vrrp_instances[0].auth.active_key: missing required key (which of the keys signs)"]
    line = f"    auth: {{active_key: 1, keys: [{{id: 1, secret_file: {p1}}}, {{id: 1, secret_file: {p2}}}]}}\n"
    errors = errors_of(config(line))
    col = line.index(f"{{id: 1, secret_file: {p2}") + 1      # where keys[1] starts
    assert errors == [f"a.yaml:7:{col}: vrrp_instances[0].auth.keys[1]: key id 1 is listed twice (first as keys[0])"]


def test_a_window_outside_1_to_300_seconds_is_an_error(tmp_path):
    path = key_file(tmp_path)
    errors = errors_of(config(f"    auth: {{time_window: 301, keys: [{{id: 1, secret_file: {path}}}]}}\n"))
    assert len(errors) == 1 and "auth.time_window" in errors[0] and "300" in errors[0]


def test_a_key_file_readable_by_others_is_a_warning(tmp_path):
    path = key_file(tmp_path, mode=0o644)
    warnings = [str(w) for w in parse(config(f"    auth: {{keys: [{{id: 1, secret_file: {path}}}]}}\n"),
                                      "a.yaml").warnings]
    assert warnings == [f"a.yaml:7:40: vrrp_instances[0].auth.keys[0].secret_file: key file {path} is "
                        f"readable by group or others (mode 0644); chmod 600 {path}"]


def test_the_legacy_password_points_to_auth():
    errors = errors_of(config("    authentication: {auth_type: PASS, auth_pass: secret}\n"))
    assert len(errors) == 1 and "signed adverts: auth" in errors[0]


def test_the_effective_config_names_the_key_file_never_the_secret(tmp_path):
    path = key_file(tmp_path, data=b"s" * 40)
    text = config(f"    auth: {{keys: [{{id: 1, secret_file: {path}}}]}}\n")
    cfg = parse(text, "a.yaml").config
    out = effective_yaml(cfg)
    assert path in out and "ssss" not in out and "secret:" not in out
    assert parse(out, "a.yaml").config == cfg
    assert "ssss" not in repr(cfg)


def test_the_effective_config_leaves_a_default_time_window_out_and_writes_a_set_one(tmp_path):
    # The default (max(3 x advert interval, 5 s)) follows advert_interval: written out it
    # would freeze; ``null`` would read as a setting. Either way the file reloads the same.
    path = key_file(tmp_path)
    for auth, written in ((f"{{keys: [{{id: 1, secret_file: {path}}}]}}", None),
                          (f"{{keys: [{{id: 1, secret_file: {path}}}], time_window: 30}}", 30)):
        cfg = parse(config(f"    auth: {auth}\n"), "a.yaml").config
        out = effective_yaml(cfg)
        [inst] = yaml.safe_load(out)["vrrp_instances"]
        assert inst["auth"].get("time_window", "left out") == (written or "left out")
        assert parse(out, "a.yaml").config == cfg
        assert effective_yaml(parse(out, "a.yaml").config) == out


def test_peers_is_the_multicast_allow_list_and_excludes_unicast_peers():
    cfg = parse(config("    peers: [192.0.2.2]\n"), "a.yaml").config
    assert cfg.vrrp_instances[0].peers == (ipaddress.ip_address("192.0.2.2"),)
    errors = errors_of(config("    peers: [192.0.2.2]\n    unicast_peers: [192.0.2.3]\n"))
    assert len(errors) == 1 and "peers is the multicast allow-list" in errors[0]
