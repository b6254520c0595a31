"""keepalived.conf syntax: comments, quotes, braces, includes, conditionals, definitions."""

from __future__ import annotations

import pytest

from hadirector.config.keepalived import KeepalivedSyntaxError, convert_file

from .helpers import convert, load, notes, only


def test_hash_and_bang_start_a_comment_anywhere_outside_quotes():
    conv = convert("""
        ! a keepalived comment
        # another one
        global_defs {          # trailing comment
            router_id lb7      ! and this style too
        }
        vrrp_script chk {
            script "/bin/check --tag a#b!c"   # quoted '#' and '!' are kept
        }
        """)
    assert conv.data["node"] == {"router_id": "lb7"}
    assert conv.data["track_scripts"][0]["command"] == ["/bin/check", "--tag", "a#b!c"]
    assert notes(conv) == []


def test_escaped_comment_characters_are_literal():
    conv = convert(r"""
        global_defs {
            router_id lb\#1
        }
        """)
    assert conv.data["node"]["router_id"] == "lb#1"


def test_quoted_strings_keep_spaces_and_inner_single_quotes():
    conv = convert("""
        global_defs {
            router_id lb1
        }
        vrrp_script chk_web {
            script "bash -c 'exec 3<>/dev/tcp/127.0.0.1/80'"
        }
        """)
    # keepalived splits the string into words with quoting, as a shell would, and execs
    # them: the redirection is quoted, so it is bash's argument, not shell syntax here.
    assert conv.data["track_scripts"][0]["command"] == ["bash", "-c",
                                                        "exec 3<>/dev/tcp/127.0.0.1/80"]
    assert notes(conv) == []


def test_brace_on_the_next_line_opens_the_block_of_the_statement_before():
    conv = convert("""
        vrrp_instance VI_1
        {
            interface eth0
            virtual_router_id 51
            virtual_ipaddress
            {
                192.0.2.10/24
            }
        }
        """)
    inst = only(load(conv).vrrp_instances)
    assert inst.name == "VI_1" and inst.vrid == 51
    assert [str(v) for v in inst.virtual_ips] == ["192.0.2.10/24"]


def test_blocks_may_open_and_close_on_one_line():
    conv = convert("""
        virtual_server 192.0.2.10 80 {
            lb_algo rr
            real_server 10.0.0.1 80 { weight 3
                HTTP_GET { url { path /ok status_code 200 } connect_timeout 2 }
            }
        }
        """)
    rs = only(conv.data["virtual_services"][0]["real_servers"])
    assert rs["weight"] == 3
    assert rs["check"]["path"] == "/ok" and rs["check"]["timeout"] == 2


def test_trailing_backslash_continues_the_line():
    conv = convert("""
        vrrp_script chk {
            script "/usr/bin/check \\
                    --fast"
        }
        """)
    assert conv.data["track_scripts"][0]["command"] == ["/usr/bin/check", "--fast"]


def test_include_is_relative_to_the_including_file_with_globs_and_braces(tmp_path):
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "keepalived.conf").write_text(
        "global_defs {\n  router_id lb1\n}\ninclude conf.d/*.conf\ninclude extra/{a,b}.inc\n")
    (tmp_path / "conf.d" / "10-web.conf").write_text(
        "virtual_server 192.0.2.10 80 {\n  lb_algo rr\n  real_server 10.0.0.1 80 {\n  }\n}\n")
    (tmp_path / "conf.d" / "20-dns.conf").write_text(
        "virtual_server 192.0.2.10 53 {\n  protocol UDP\n  lb_algo rr\n"
        "  include ../servers/dns.inc\n}\n")
    (tmp_path / "servers").mkdir()
    (tmp_path / "servers" / "dns.inc").write_text("real_server 10.0.0.53 53 {\n  weight 2\n}\n")
    (tmp_path / "extra").mkdir()
    (tmp_path / "extra" / "a.inc").write_text("vrrp_script chk_a {\n  script /bin/a\n}\n")
    (tmp_path / "extra" / "b.inc").write_text("vrrp_script chk_b {\n  script /bin/b\n  bogus 1\n}\n")

    conv = convert_file(str(tmp_path / "keepalived.conf"))
    config = load(conv)
    assert [vs.name for vs in config.virtual_services] == ["tcp/192.0.2.10:80", "udp/192.0.2.10:53"]
    assert config.virtual_services[1].real_servers[0].weight == 2
    assert [s.name for s in config.track_scripts] == ["chk_a", "chk_b"]
    # Notes about included files name that file and its own line number.
    note = only(conv.notes)
    assert note.where.file.endswith("extra/b.inc") and note.where.line == 3
    assert "bogus" in note.message


def test_include_pattern_without_a_match_is_noted_as_keepalived_reads_nothing_either(tmp_path):
    (tmp_path / "keepalived.conf").write_text(
        "include missing/*.conf\nglobal_defs {\n router_id x\n}\n")
    conv = convert_file(str(tmp_path / "keepalived.conf"))
    note = only(conv.notes)
    assert str(note).startswith("info: ")
    assert "keepalived.conf:1: include missing/*.conf: no file matches" in str(note)
    assert conv.data["node"]["router_id"] == "x"


def test_include_of_a_file_that_does_not_exist_is_an_error_naming_file_and_line(tmp_path):
    (tmp_path / "keepalived.conf").write_text(
        "global_defs {\n router_id x\n}\ninclude conf.d/vrrp.conf\n")
    with pytest.raises(KeepalivedSyntaxError) as e:
        convert_file(str(tmp_path / "keepalived.conf"), display="keepalived.conf")
    (where, message), = e.value.errors
    assert (where.file, where.line) == ("keepalived.conf", 4)
    assert "conf.d/vrrp.conf" in message and "does not exist" in message


def test_a_missing_brace_alternative_is_an_error_as_keepalived_reports_it(tmp_path):
    (tmp_path / "a.inc").write_text("global_defs {\n router_id x\n}\n")
    (tmp_path / "keepalived.conf").write_text("include {a,b}.inc\n")
    with pytest.raises(KeepalivedSyntaxError) as e:
        convert_file(str(tmp_path / "keepalived.conf"), display="keepalived.conf")
    (where, message), = e.value.errors
    assert where.line == 1 and "b.inc does not exist" in message


def test_an_include_loop_is_an_error(tmp_path):
    (tmp_path / "keepalived.conf").write_text("global_defs {\n router_id x\n}\n"
                                               "include keepalived.conf\n")
    with pytest.raises(KeepalivedSyntaxError) as e:
        convert_file(str(tmp_path / "keepalived.conf"), display="keepalived.conf")
    (where, message), = e.value.errors
    assert where.line == 4 and "include loop" in message


def test_conditional_lines_follow_the_config_id_like_keepalived_dash_i():
    text = """
        vrrp_instance VI_1 {
            interface eth0
            virtual_router_id 51
        @lb1    priority 150
        @lb2    priority 100
        @^lb1   nopreempt
            virtual_ipaddress {
                192.0.2.10/24
            }
        }
        """
    lb1 = only(load(convert(text, config_id="lb1")).vrrp_instances)
    lb2 = only(load(convert(text, config_id="lb2")).vrrp_instances)
    assert (lb1.priority, lb1.preempt) == (150, True)
    assert (lb2.priority, lb2.preempt) == (100, False)
    none = convert(text)
    assert [n.where.line for n in none.lost] == [5, 6]


def test_dollar_definitions_are_substituted():
    conv = convert("""
        $IF=eth1
        $VIP=192.0.2.10
        vrrp_instance VI_1 {
            interface $IF
            virtual_router_id 51
            virtual_ipaddress {
                ${VIP}/24
            }
        }
        """)
    inst = only(load(conv).vrrp_instances)
    assert inst.interface == "eth1" and str(inst.virtual_ips[0]) == "192.0.2.10/24"


def test_unbalanced_braces_are_errors_with_their_line_not_a_smaller_config():
    with pytest.raises(KeepalivedSyntaxError) as e:
        convert("""
            global_defs {
                router_id lb1
            }
            }
            vrrp_script chk {
                script /bin/true
            """)
    assert [(str(w), m) for w, m in e.value.errors] == [
        ("keepalived.conf:5", "'}' without a matching '{'"),
        ("keepalived.conf:6", "'{' is never closed (the input ends at keepalived.conf:7 inside "
                              "this block: a truncated file or a missing '}')"),
    ]


def test_a_file_cut_short_in_a_nested_block_is_an_error_at_each_open_brace():
    text = """\
global_defs {
    router_id lb1
}
vrrp_instance VI_1 {
    interface eth0
    virtual_router_id 51
    virtual_ipaddress {
        192.0.2.10/24
"""
    with pytest.raises(KeepalivedSyntaxError) as e:
        convert(text)
    assert [w.line for w, _ in e.value.errors] == [7, 4]
    assert str(e.value).startswith("keepalived.conf:7: '{' is never closed")


def test_unknown_top_level_block_is_skipped_with_its_line():
    conv = convert("""
        static_routes {
            10.1.0.0/16 via 192.0.2.1
        }
        global_defs {
            router_id lb1
        }
        """)
    assert notes(conv) == ["lost: keepalived.conf:2: static_routes not supported, skipped"]


def test_an_empty_or_comment_only_file_is_an_error_not_an_empty_config(tmp_path):
    for text in ("", "! keepalived.conf\n# nothing left\n\n"):
        (tmp_path / "keepalived.conf").write_text(text)
        with pytest.raises(KeepalivedSyntaxError) as e:
            convert_file(str(tmp_path / "keepalived.conf"), display="keepalived.conf")
        assert str(e.value) == ("keepalived.conf:1: no keepalived configuration in it (an empty "
                                "file, or only comments)")
