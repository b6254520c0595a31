"""The reload diff (``hadirector.agent.reload``): old Config, new Config -> ReloadPlan.

Pure: configs are parsed from YAML text; nothing runs.
"""

from __future__ import annotations

from hadirector.agent.reload import in_force, instance_change, plan_reload
from hadirector.config import parse_config

BASE = """
node: {router_id: n1, state_dir: /run/rl-test}
api: {listen: "127.0.0.1:9110"}
track_scripts:
  - {name: chk, command: [/bin/true], weight: -20}
vrrp_instances:
  - {name: vi_1, interface: eth0, vrid: 51, priority: 150, virtual_ips: [10.236.0.100/24],
     track_scripts: [chk]}
  - {name: vi_2, interface: eth0, vrid: 52, priority: 100, virtual_ips: [10.236.0.101/24]}
sync_groups:
  - {name: g, instances: [vi_1, vi_2]}
virtual_services:
  - name: web
    address: 10.236.0.100
    port: 80
    scheduler: rr
    forward: dr
    real_servers:
      - {address: 10.236.0.11}
      - {address: 10.236.0.12}
"""


def cfg(text: str = BASE):
    return parse_config(text)


def edit(old: str, new: str, text: str = BASE):
    assert old in text, old
    return parse_config(text.replace(old, new, 1))


def test_an_identical_config_plans_nothing():
    plan = plan_reload(cfg(), cfg())
    assert plan.empty and plan.changes == ()
    assert plan.unchanged == ("vi_1", "vi_2")


def test_a_priority_change_is_applied_in_place():
    plan = plan_reload(cfg(), edit("priority: 150", "priority: 120"))
    assert [c.name for c in plan.updated] == ["vi_1"] and plan.restarted == ()
    assert plan.updated[0].fields == ("priority",)
    assert plan.unchanged == ("vi_2",)
    assert plan.changes == ("vrrp_instance vi_1: updated in place (priority)",)


def test_notify_garp_preempt_and_interval_changes_are_applied_in_place():
    new = edit("priority: 100,", "priority: 100, preempt: false, advert_interval: 2s, "
                                 "garp: {count: 1}, notify: {master: [/bin/true]},")
    plan = plan_reload(cfg(), new)
    assert [(c.name, c.restart) for c in plan.updated] == [("vi_2", False)]
    assert set(plan.updated[0].fields) == {"preempt", "advert_interval", "garp", "notify"}


def test_vip_vrid_or_interface_changes_restart_the_instance():
    for old, new in (("10.236.0.101/24", "10.236.0.102/24"), ("vrid: 52", "vrid: 53"),
                     ("vrid: 52, priority: 100", "vrid: 52, priority: 100, version: 2")):
        plan = plan_reload(cfg(), edit(old, new))
        assert [(c.name, c.restart) for c in plan.restarted] == [("vi_2", True)], (old, new)
        assert plan.updated == ()


def test_becoming_address_owner_restarts_the_instance():  # RFC 5798 6.4.1: owners start as master
    a, b = cfg().vrrp_instances[0], edit("priority: 150", "priority: 255").vrrp_instances[0]
    change = instance_change(a, b)
    assert change is not None and change.fields == ("priority",) and change.restart


def test_added_and_removed_instances_are_listed():
    new = parse_config(BASE.replace("vi_2", "vi_3").replace("vrid: 52", "vrid: 53"))
    plan = plan_reload(cfg(), new)
    assert plan.added == ("vi_3",) and plan.removed == ("vi_2",)
    assert "vrrp_instance vi_3: added" in plan.changes
    assert "vrrp_instance vi_2: removed" in plan.changes
    assert plan.sync_groups == ("g: changed (members)",)


def test_sync_group_track_script_and_lvs_changes_are_named():
    new = parse_config(BASE.replace("weight: -20", "weight: -30")
                       .replace("{address: 10.236.0.12}", "{address: 10.236.0.13}")
                       .replace("{name: g, instances: [vi_1, vi_2]}",
                                "{name: g, instances: [vi_1, vi_2], notify: {master: [/bin/true]}}"))
    plan = plan_reload(cfg(), new)
    assert plan.track_scripts == ("chk: changed (weight)",)
    assert plan.sync_groups == ("g: changed (notify)",)
    assert plan.lvs == ("virtual_service web: changed (real_servers)",)
    assert not plan.vrrp_changed


def test_node_and_api_changes_need_a_restart_and_the_running_values_stay_in_force():
    old = cfg()
    new = parse_config(BASE.replace("router_id: n1", "router_id: n2")
                       .replace("127.0.0.1:9110", "127.0.0.1:9111"))
    plan = plan_reload(old, new)
    assert plan.needs_restart == ("node.router_id: n1 -> n2", "api.listen_port: 9110 -> 9111")
    assert "node.router_id: n1 -> n2 (needs restart, not applied)" in plan.changes
    assert plan.unchanged == ("vi_1", "vi_2")
    running = in_force(old, new)
    assert running.node == old.node and running.api == old.api
    assert running.vrrp_instances == new.vrrp_instances


def test_fields_the_model_marks_live_change_in_place_and_identity_fields_do_not():
    # The LIVE mark on the model field is the one declaration (not a list to keep in step).
    from hadirector.agent.reload import IN_PLACE_FIELDS
    assert {"priority", "preempt", "preempt_delay", "advert_interval", "accept_mode",
            "track_interfaces", "track_scripts", "notify", "garp"} <= IN_PLACE_FIELDS
    # What adverts say and peers check (RFC 5798 7.1), and where they go, needs a restart.
    assert not {"name", "interface", "vrid", "version", "virtual_ips", "unicast_src",
                "unicast_peers"} & IN_PLACE_FIELDS


def test_auth_and_peers_changes_are_applied_in_place_even_a_changed_key_file(tmp_path):
    key = tmp_path / "k1"
    key.write_text("hex:" + "11" * 32)
    key.chmod(0o600)
    old_line = "{name: vi_2, interface: eth0, vrid: 52, priority: 100, virtual_ips: [10.236.0.101/24]}"
    signed = BASE.replace(old_line, old_line[:-1] + f", auth: {{keys: [{{id: 1, secret_file: {key}}}]}}}}")
    plain = cfg()
    before = cfg(signed)
    plan = plan_reload(plain, before)
    assert [c.describe() for c in plan.updated] == ["vrrp_instance vi_2: updated in place (auth)"]
    assert plan.restarted == ()
    key.write_text("hex:" + "22" * 32)          # the same path, another key: a rotation
    plan = plan_reload(before, cfg(signed))
    assert [c.describe() for c in plan.updated] == ["vrrp_instance vi_2: updated in place (auth)"]
    assert "22" * 8 not in " ".join(plan.changes) and "11" * 8 not in repr(plan)
    peers = BASE.replace(old_line, old_line[:-1] + ", peers: [10.236.0.2]}")
    assert [c.name for c in plan_reload(plain, cfg(peers)).updated] == ["vi_2"]
