"""VRRP mappings: global_defs, vrrp_instance, vrrp_script, vrrp_sync_group, sync daemon.

Where keepalived's default differs from ours the converted file spells keepalived's out,
so a converted node interoperates with its still-keepalived peer.
"""

from __future__ import annotations

import ipaddress

from hadirector import model as m

from .helpers import convert, load, notes, only


def instance(body: str, head: str = "", **kw):
    conv = convert(head + "\nvrrp_instance VI_1 {\n" + body + "\n}\n", **kw)
    return conv, only(load(conv).vrrp_instances)


BASE = """
    interface eth0
    virtual_router_id 51
    virtual_ipaddress {
        192.0.2.10/24
    }
"""


def test_router_id_comes_from_global_defs():
    conv = convert("global_defs {\n router_id dir-a\n}\n")
    assert load(conv).node.router_id == "dir-a"
    assert notes(conv) == []


def test_router_id_option_names_this_node_and_replaces_global_defs_with_a_note():
    conv = convert("global_defs {\n router_id dir-a\n}\n", router_id="dir-b")
    assert load(conv).node.router_id == "dir-b"
    assert notes(conv) == ["info: keepalived.conf:2: router_id dir-a: replaced by --router-id dir-b"]


SCRIPT = "vrrp_script chk {\n script /bin/true\n}\n"


def test_missing_router_id_is_left_to_each_director_never_the_converting_hosts_name():
    conv = convert(SCRIPT, router_id="lb9")
    assert load(conv).node.router_id == "lb9"
    assert notes(conv) == []
    conv = convert(SCRIPT, router_id=None)
    # Left out: the loader resolves it on the director that runs the file, as
    # keepalived uses its host's name at run time.
    assert "node" not in conv.data
    assert "router_id" not in conv.to_yaml().split("\n\n", 1)[1]
    assert notes(conv) == [
        "info: global_defs has no router_id: node.router_id is left out, so each director uses "
        "its own host name at run time, as keepalived does (--router-id NAME sets one)"]


def test_ipv4_instance_uses_vrrp_version_2_like_keepalived_by_default():
    _, inst = instance(BASE)
    assert inst.version == 2
    assert inst.advert_interval == 1.0
    assert inst.priority == 100
    assert inst.preempt is True


def test_global_vrrp_version_3_applies_and_the_instance_version_wins():
    _, inst = instance(BASE, "global_defs {\n vrrp_version 3\n}\n")
    assert inst.version == 3
    _, inst = instance(BASE + "version 2\n", "global_defs {\n vrrp_version 3\n}\n")
    assert inst.version == 2


def test_ipv6_instance_uses_version_3():
    conv, inst = instance("""
        interface eth0
        virtual_router_id 7
        virtual_ipaddress {
            2001:db8::10/64
        }""")
    assert inst.version == 3
    assert inst.virtual_ips == (ipaddress.ip_interface("2001:db8::10/64"),)


def test_fractional_advert_int_is_kept_for_v3_in_centiseconds():  # RFC 5798 5.2.7
    conv, inst = instance(BASE + "version 3\nadvert_int 0.254\n")
    assert inst.advert_interval == 0.25
    assert any("rounded to 0.25" in n for n in notes(conv, "changed", "info"))


def test_fractional_advert_int_is_rounded_to_whole_seconds_for_v2():  # RFC 3768 5.3.7
    conv, inst = instance(BASE + "advert_int 1.5\n")
    assert inst.advert_interval == 2.0
    assert any("advert_int 1.5" in n and "VRRPv2" in n for n in notes(conv, "changed", "info"))


def test_state_backup_is_what_hadirector_does_anyway_and_master_is_a_change():
    conv, inst = instance(BASE + "state BACKUP\npriority 90\n")
    assert inst.priority == 90
    assert notes(conv) == []
    conv, inst = instance(BASE + "state MASTER\npriority 150\n")
    assert notes(conv) == ["changed: keepalived.conf:9: state MASTER: keepalived starts as master "
                           "at once; hadirector starts as backup and elects by priority"]


def test_state_master_without_priority_is_the_address_owner_255():
    conv, inst = instance(BASE + "state MASTER\n")
    assert inst.priority == 255
    assert inst.accept_mode is True     # an address owner always accepts (RFC 5798 6.4.3)


def test_nopreempt_and_preempt_delay():
    _, inst = instance(BASE + "nopreempt\n")
    assert inst.preempt is False
    _, inst = instance(BASE + "preempt_delay 30\n")
    assert (inst.preempt, inst.preempt_delay) == (True, 30.0)


# keepalived 2.2.7 vrrp_complete_instance clears these; the converted file says what
# keepalived really runs, with an info note on the line it ignores.
def test_preempt_delay_with_nopreempt_is_ignored_as_keepalived_does():
    conv, inst = instance(BASE + "state BACKUP\nnopreempt\npreempt_delay 30\n")
    assert (inst.preempt, inst.preempt_delay) == (False, 0.0)
    assert notes(conv) == ["info: keepalived.conf:11: vrrp_instance VI_1: preempt_delay is ignored "
                           "by keepalived with nopreempt; not converted"]


def test_nopreempt_and_preempt_delay_are_ignored_with_initial_state_master():
    conv, inst = instance(BASE + "state MASTER\npriority 150\nnopreempt\npreempt_delay 30\n")
    assert (inst.preempt, inst.preempt_delay) == (True, 0.0)
    assert notes(conv, "info") == [
        "info: keepalived.conf:11: vrrp_instance VI_1: nopreempt is ignored by keepalived with "
        "initial state MASTER; converted as preempt: true",
        "info: keepalived.conf:12: vrrp_instance VI_1: preempt_delay is ignored by keepalived "
        "with initial state MASTER; not converted"]


def test_nopreempt_is_ignored_for_the_address_owner():
    conv, inst = instance(BASE + "state BACKUP\npriority 255\nnopreempt\n")
    assert inst.preempt is True
    assert notes(conv) == ["info: keepalived.conf:11: vrrp_instance VI_1: nopreempt is ignored by "
                           "keepalived with priority 255 (address owner); converted as preempt: true"]


def test_without_state_priority_255_starts_as_master_so_preempt_delay_is_ignored():
    conv, inst = instance(BASE + "priority 255\npreempt_delay 5\n")
    assert inst.preempt_delay == 0.0
    assert "initial state MASTER" in only(notes(conv, "info"))


def test_preempt_delay_is_ignored_in_strict_mode():
    conv, inst = instance(BASE + "state BACKUP\npreempt_delay 5\n", "global_defs {\n vrrp_strict\n}\n")
    assert inst.preempt_delay == 0.0
    assert any("preempt_delay is ignored by keepalived with strict mode" in n
               for n in notes(conv, "info"))


def test_preempt_delay_on_a_backup_that_preempts_is_kept():
    conv, inst = instance(BASE + "state BACKUP\npreempt_delay 4.5\n")
    assert (inst.preempt, inst.preempt_delay) == (True, 4.5)
    assert notes(conv) == []


def test_accept_mode_is_on_unless_vrrp_strict_or_no_accept():
    _, inst = instance(BASE)
    assert inst.accept_mode is True
    _, inst = instance(BASE + "no_accept\n")
    assert inst.accept_mode is False
    conv, inst = instance(BASE, "global_defs {\n vrrp_strict\n}\n")
    assert inst.accept_mode is False
    assert any("vrrp_strict" in n for n in notes(conv, "changed", "info"))
    _, inst = instance(BASE + "accept\n", "global_defs {\n vrrp_strict\n}\n")
    assert inst.accept_mode is True


def test_virtual_addresses_without_prefix_are_host_addresses():
    conv, inst = instance("""
        interface eth0
        virtual_router_id 51
        virtual_ipaddress {
            192.0.2.10
            192.0.2.11/24 dev eth0
            192.0.2.12/24 dev eth1
            192.0.2.13/24 label eth0:vip
        }
        virtual_ipaddress_excluded {
            192.0.2.99
        }""")
    assert [str(v) for v in inst.virtual_ips] == [
        "192.0.2.10/32", "192.0.2.11/24", "192.0.2.12/24", "192.0.2.13/24", "192.0.2.99/32"]
    skipped = notes(conv, "lost")
    assert any(n.startswith("lost: keepalived.conf:9: 192.0.2.12/24 dev eth1") for n in skipped)
    assert any(n.startswith("lost: keepalived.conf:10: 192.0.2.13/24 label eth0:vip not supported") for n in skipped)
    assert any("virtual_ipaddress_excluded" in n for n in notes(conv, "changed", "info"))


def test_unicast_source_and_peers():
    _, inst = instance(BASE + """
        unicast_src_ip 192.0.2.1
        unicast_peer {
            192.0.2.2
            192.0.2.3
        }""")
    assert inst.unicast_src == ipaddress.ip_address("192.0.2.1")
    assert inst.unicast_peers == (ipaddress.ip_address("192.0.2.2"), ipaddress.ip_address("192.0.2.3"))


def test_track_interfaces_keep_their_weights_and_no_weight_means_fault():
    _, inst = instance(BASE + """
        track_interface {
            eth1 weight 10
            eth2 weight -20
            eth3
        }""")
    assert inst.track_interfaces == (m.TrackInterface("eth1", 10), m.TrackInterface("eth2", -20),
                                     m.TrackInterface("eth3", 0))


def test_vrrp_script_uses_keepalived_defaults_timeout_is_the_interval():
    conv = convert("""
        vrrp_script chk_a {
            script "/usr/local/bin/chk --port 80"
        }
        vrrp_script chk_b {
            script /bin/true
            interval 3
            weight -10
            rise 2
            fall 4
            user nobody
        }
        """)
    a, b = load(conv).track_scripts
    assert a == m.TrackScript(name="chk_a", command=("/usr/local/bin/chk", "--port", "80"),
                              interval=1.0, timeout=1.0, weight=0, rise=1, fall=1)
    assert b == m.TrackScript(name="chk_b", command=("/bin/true",), interval=3.0, timeout=3.0,
                              weight=-10, rise=2, fall=4)
    assert "lost: keepalived.conf:11: user in vrrp_script chk_b not supported, skipped" in notes(conv)


def test_track_script_weight_override_becomes_a_copy_with_that_weight():
    conv = convert("""
        vrrp_script chk {
            script /bin/chk
            weight -5
        }
        vrrp_instance VI_1 {
            interface eth0
            virtual_router_id 51
            virtual_ipaddress {
                192.0.2.10
            }
            track_script {
                chk weight 7
            }
        }
        vrrp_instance VI_2 {
            interface eth0
            virtual_router_id 52
            virtual_ipaddress {
                192.0.2.11
            }
            track_script {
                chk
            }
        }
        """)
    config = load(conv)
    assert [i.track_scripts for i in config.vrrp_instances] == [("chk_weight_7",), ("chk",)]
    assert {s.name: s.weight for s in config.track_scripts} == {"chk": -5, "chk_weight_7": 7}
    assert any("keepalived.conf:13: track_script chk weight 7" in n for n in notes(conv))


def test_notify_strings_become_argv_lists():
    conv, inst = instance(BASE + """
        notify_master "/etc/keepalived/notify.sh MASTER 'VI 1'"
        notify_backup /etc/keepalived/backup.sh
        notify_fault "/etc/keepalived/notify.sh FAULT" root
        notify_stop /bin/stop
        notify /usr/bin/log-state
        """)
    assert inst.notify == m.NotifyScripts(
        master=("/etc/keepalived/notify.sh", "MASTER", "VI 1"),
        backup=("/etc/keepalived/backup.sh",),
        fault=("/etc/keepalived/notify.sh", "FAULT"),
        stop=("/bin/stop",), notify=("/usr/bin/log-state",))
    assert any("running as user 'root' not supported" in n for n in notes(conv, "changed"))


def test_garp_settings_come_from_global_defs_and_the_instance():
    _, inst = instance(BASE + "garp_master_delay 2\ngarp_master_refresh 60\n",
                       "global_defs {\n vrrp_garp_master_repeat 3\n vrrp_garp_interval 0.01\n}\n")
    assert inst.garp == m.GarpSettings(count=3, interval=0.01, repeat_delay=2.0, refresh=60.0)
    _, inst = instance(BASE)
    assert inst.garp == m.GarpSettings(count=5, interval=0.0, repeat_delay=5.0, refresh=0.0)


def test_authentication_is_skipped_with_a_warning_about_keepalived_peers():
    conv, _ = instance(BASE + "authentication {\n auth_type PASS\n auth_pass secret\n}\n")
    note = only(notes(conv, "lost"))
    assert note.startswith("lost: keepalived.conf:9: authentication not supported")


def test_instance_without_virtual_addresses_is_skipped():
    conv = convert("vrrp_instance VI_1 {\n interface eth0\n virtual_router_id 5\n}\n")
    assert "vrrp_instances" not in conv.data
    assert any(n.startswith("lost: keepalived.conf:1: vrrp_instance VI_1: no virtual_ipaddress")
               for n in notes(conv, "lost"))


def test_sync_groups_in_new_and_old_syntax_with_notify():
    conv = convert("""
        vrrp_sync_group NEW {
            group {
                VI_1
            }
            notify_master "/bin/promote web"
        }
        vrrp_sync_group OLD {
            VI_2
        }
        vrrp_instance VI_1 {
            interface eth0
            virtual_router_id 1
            virtual_ipaddress {
                192.0.2.1
            }
        }
        vrrp_instance VI_2 {
            interface eth0
            virtual_router_id 2
            virtual_ipaddress {
                192.0.2.2
            }
        }
        """)
    new, old = load(conv).sync_groups
    assert new == m.SyncGroup("NEW", ("VI_1",), m.NotifyScripts(master=("/bin/promote", "web")))
    assert old == m.SyncGroup("OLD", ("VI_2",))


def test_lvs_sync_daemon_in_global_defs_with_all_options():
    conv, _ = instance(BASE, "global_defs {\n lvs_sync_daemon eth1 VI_1 id 7 maxlen 1400 port 8849"
                             " ttl 2 group 224.0.0.82\n}\n")
    assert load(conv).lvs.sync_daemon == m.SyncDaemon(
        interface="eth1", syncid=7, follow_instance="VI_1",
        mcast_group=ipaddress.ip_address("224.0.0.82"), port=8849, ttl=2, maxlen=1400)


def test_lvs_sync_daemon_syncid_defaults_to_the_followed_instances_vrid():
    conv, _ = instance(BASE, "global_defs {\n lvs_sync_daemon eth1 inst VI_1\n}\n")
    assert load(conv).lvs.sync_daemon == m.SyncDaemon(interface="eth1", syncid=51,
                                                      follow_instance="VI_1")


def test_old_lvs_sync_daemon_interface_in_an_instance():
    conv, _ = instance(BASE + "lvs_sync_daemon_interface eth2\n")
    sd = load(conv).lvs.sync_daemon
    assert (sd.interface, sd.follow_instance, sd.syncid) == ("eth2", "VI_1", 51)


def test_unknown_instance_keyword_is_listed_with_its_line():
    conv, _ = instance(BASE + "use_vmac\n")
    assert notes(conv) == ["lost: keepalived.conf:9: use_vmac in vrrp_instance VI_1 not supported, skipped"]


def test_unquoted_words_after_a_script_are_ignored_as_keepalived_does():
    conv = convert("vrrp_script chk {\n script /bin/chk --port 80\n}\n")
    assert conv.data["track_scripts"][0]["command"] == ["/bin/chk"]
    assert notes(conv, "info") == [
        "info: keepalived.conf:2: script: '--port 80' after the command is ignored (as by keepalived); "
        "quote the whole command line"]


def _key_file(tmp_path, name="k1") -> str:
    path = tmp_path / name
    path.write_text("hex:" + bytes(range(32)).hex() + "\n")
    path.chmod(0o600)
    return str(path)


def test_auth_hmac_with_file_keys_converts_to_auth(tmp_path):
    k1, k2 = _key_file(tmp_path, "k1"), _key_file(tmp_path, "k2")
    conv, inst = instance(BASE + f"auth_hmac {{\n key 1 file:{k1}\n key 2 file:{k2}\n active_key 2\n"
                                 " mode receive-only\n anti_replay monotonic\n time_window 30\n}\n")
    assert inst.auth == m.VrrpAuth(keys=(m.AuthKey(1, k1, bytes(range(32))), m.AuthKey(2, k2, bytes(range(32)))),
                                   active_key=2, mode=m.AuthMode.RECEIVE_ONLY,
                                   anti_replay=m.AntiReplay.MONOTONIC, time_window=30)
    assert notes(conv, "lost") == []


def test_auth_hmac_inline_key_is_lost_and_never_echoed(tmp_path):
    k1 = _key_file(tmp_path)
    conv, inst = instance(BASE + f"auth_hmac {{\n key 1 file:{k1}\n key 2 hex:{'ab' * 32}\n active_key 1\n}}\n")
    assert inst.auth.keys == (m.AuthKey(1, k1, bytes(range(32))),) and inst.auth.mode is m.AuthMode.ENFORCE
    [note] = notes(conv, "lost")
    assert note.startswith("lost: keepalived.conf:") and "auth_hmac key 2: an inline key is not converted" in note
    assert "abab" not in conv.to_yaml() and "abab" not in note


def test_auth_hmac_whose_active_key_is_inline_is_not_converted():
    conv, inst = instance(BASE + "auth_hmac {\n key 1 supersecretsupersecretsupersecret12\n active_key 1\n}\n")
    assert inst.auth is None
    lost = notes(conv, "lost")
    assert len(lost) == 2 and "auth_hmac not converted" in lost[1]
    assert all("supersecret" not in n for n in lost) and "supersecret" not in conv.to_yaml()


def test_strict_mode_makes_auth_hmac_enforce_as_keepalived_does(tmp_path):
    k1 = _key_file(tmp_path)
    conv, inst = instance(BASE + f"strict_mode on\nauth_hmac {{\n key 1 file:{k1}\n mode permissive\n}}\n")
    assert inst.auth.mode is m.AuthMode.ENFORCE
    assert any("strict_mode requires auth_hmac mode enforce" in n for n in notes(conv, "info"))


def test_legacy_authentication_points_to_auth():
    conv, _ = instance(BASE + "authentication {\n auth_type PASS\n auth_pass secret\n}\n")
    assert "Signed adverts: auth" in only(notes(conv, "lost"))
