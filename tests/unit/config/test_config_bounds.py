"""Reading a config file costs bounded work, and its errors have a bounded length.

Issue 9, fault 3: 600 bytes of merge keys nested 7 deep cost 10^7 merges (~7 s) and
passed ``check``; an error could echo a 2 MB value. The limits (config.compose):
1 MiB of text, 200,000 nodes with every alias and merge key expanded, 64 levels.
"""

from __future__ import annotations

import textwrap

import pytest

from hadirector.config import ConfigError, compose, fields, load_config, parse_config
from hadirector.config.compose import MAX_DEPTH, MAX_FILE_BYTES, MAX_NODES, BoundedLoader
from hadirector.config.errors import ConfigIssue

TOO_MANY = f"config too complex: alias/merge expansion exceeds {MAX_NODES} nodes"
VI = "vrrp_instances: [{name: VI_1, interface: eth0, vrid: 51, virtual_ips: [192.0.2.100]}]\n"


def issues_of(text: str, source: str = "t.yaml") -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(textwrap.dedent(text), source)
    return info.value


def merge_bomb(depth: int, width: int = 10) -> str:
    lines = ["x-0: &a0 {router_id: lvs1}"]
    for k in range(1, depth + 1):
        lines.append(f"x-{k}: &a{k} {{<<: [{', '.join([f'*a{k - 1}'] * width)}]}}")
    return "\n".join(lines) + f"\nnode: {{<<: *a{depth}}}\n" + VI


def expanded(text: str) -> int:
    loader = BoundedLoader(text)
    try:
        loader.get_single_node()
    finally:
        loader.dispose()
    return loader.expanded


# --- the node budget -----------------------------------------------------------------


def test_merge_keys_nested_seven_deep_are_refused_at_the_alias_that_crosses_the_budget(monkeypatch):
    walked = []
    real = fields.mapping_pairs
    monkeypatch.setattr(fields, "mapping_pairs", lambda *a, **k: walked.append(1) or real(*a, **k))
    text = merge_bomb(7)
    assert len(text.encode()) < 700
    e = issues_of(text)
    # &a4 stands for 33,333 nodes; x-5 merges ten of them: its fifth alias crosses.
    assert [str(i) for i in e.issues] == [f"t.yaml:6:36: {TOO_MANY}"]
    assert text.splitlines()[5][35:] == "*a4, *a4, *a4, *a4, *a4, *a4]}"
    assert walked == [], "refused while composing, before any mapping was walked"


def test_billion_laughs_lists_are_refused_at_the_alias_that_crosses_the_budget():
    lines = ["x-0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"x-{k}: &l{k} [{', '.join([f'*l{k - 1}'] * 10)}]" for k in range(1, 9)]
    e = issues_of("\n".join(lines) + "\nvrrp_instances: [{track_scripts: *l8}]\n")
    assert [(i.line, i.column, i.message) for i in e.issues] == [(6, 11, TOO_MANY)]


def test_an_alias_counts_as_every_node_it_stands_for():
    # &a is 7 nodes (the mapping, 3 keys, 3 values); each alias adds 7 more.
    doc = "a: &a {x: 1, y: 2, z: 3}\nb: [*a, *a, *a]\n"
    assert expanded(doc) == 1 + (1 + 7) + (1 + 1 + 3 * 7)
    # A merge key is charged the same way: the merged mapping is walked again.
    assert expanded("a: &a {x: 1, y: 2, z: 3}\nb: {<<: *a}\n") == 1 + (1 + 7) + (1 + 1 + 1 + 7)


def test_the_error_names_the_very_alias_that_crossed_the_budget(monkeypatch):
    monkeypatch.setattr(compose, "MAX_NODES", 40)
    doc = textwrap.dedent("""\
        a: &a {x: 1, y: 2, z: 3}
        b:
          - *a
          - *a
          - *a
          - *a
          - *a
    """)
    # 9 nodes before b's list; each alias adds 7: 1+9+1+1+7*4 = 40 fits, the fifth does not.
    e = issues_of(doc)
    assert [(i.line, i.column) for i in e.issues] == [(7, 5)]
    assert e.issues[0].message == "config too complex: alias/merge expansion exceeds 40 nodes"


def test_a_file_with_many_plain_nodes_is_refused_naming_the_node_that_crossed(monkeypatch):
    monkeypatch.setattr(compose, "MAX_NODES", 10)
    e = issues_of("a: [1, 2, 3, 4, 5, 6, 7, 8, 9]\n")
    # The mapping, its key, the list, 1..7 fit; 8 is the eleventh node.
    assert [(i.line, i.column, i.message) for i in e.issues] == [
        (1, 26, "config too complex: more than 10 nodes")]


def test_a_chain_of_merges_is_refused_past_the_depth_limit_at_its_alias():
    lines = ["x-0: &m0 {router_id: lvs1}"]
    lines += [f"x-{k}: &m{k} {{<<: *m{k - 1}}}" for k in range(1, 100)]
    e = issues_of("\n".join(lines) + "\nnode: {<<: *m99}\n")
    # &m_k nests k + 2 levels; x-62's mapping is level 2 and *m61 in it nests 63 more.
    assert [(i.line, i.column, i.message) for i in e.issues] == [
        (63, 17, f"config too complex: alias/merge expansion nests more than {MAX_DEPTH} levels deep")]


def test_plain_nesting_is_refused_past_the_depth_limit():
    e = issues_of("x: " + "[" * 70 + "]" * 70 + "\n")
    assert [(i.line, i.column, i.message) for i in e.issues] == [
        (1, 4 + MAX_DEPTH - 1, f"config too complex: nested more than {MAX_DEPTH} levels deep")]


def test_a_recursive_merge_is_still_reported_where_it_is_written():
    e = issues_of("node: &self {<<: *self, router_id: t}\n")
    assert [str(i) for i in e.issues] == ["t.yaml:1:7: node: a mapping cannot merge itself (<<: recursive alias)"]


def test_anchors_aliases_and_merge_keys_of_a_real_config_still_work():
    rs = "\n".join(f"      - {{<<: *rs, address: 10.1.{i // 250}.{i % 250 + 1}}}" for i in range(2000))
    config = parse_config(textwrap.dedent("""\
        x-check: &web {type: http, path: /healthz, interval: 3s}
        x-rs: &rs {port: 8080, weight: 5, check: {<<: *web, interval: 1s}}
        x-vrrp: &vrrp {interface: eth0, priority: 150, advert_interval: 1s}
        vrrp_instances:
          - {<<: *vrrp, name: VI_1, vrid: 51, virtual_ips: [192.0.2.100]}
          - {<<: *vrrp, name: VI_2, vrid: 52, virtual_ips: [192.0.2.101]}
        virtual_services:
          - address: 192.0.2.100
            port: 80
            real_servers:
        """) + rs + "\n", "t.yaml")
    assert [i.priority for i in config.vrrp_instances] == [150, 150]
    servers = config.virtual_services[0].real_servers
    assert len(servers) == 2000
    assert {(s.port, s.weight, s.check.interval, s.check.probe.path) for s in servers} == {
        (8080, 5, 1.0, "/healthz")}


def test_a_service_check_is_converted_once_however_many_real_servers_inherit_it(monkeypatch):
    asked = []
    real = fields.unknown_key_message
    monkeypatch.setattr(fields, "unknown_key_message", lambda name, spec: asked.append(name) or real(name, spec))
    servers = ", ".join(f"{{address: 10.0.{i // 250}.{i % 250 + 1}}}" for i in range(300))
    e = issues_of(f"""\
        virtual_services:
          - address: 192.0.2.1
            port: 80
            check: {{type: tcp, bogus1: 1, bogus2: 2, bogus3: 3}}
            real_servers: [{servers}]
    """)
    assert sorted(asked) == ["bogus1", "bogus2", "bogus3"], "not once per real server"
    assert [i.path for i in e.issues] == [f"virtual_services[0].check.bogus{n}" for n in (1, 2, 3)]


# --- the file size ---------------------------------------------------------------------


def test_a_file_over_1_mib_is_refused_before_it_is_parsed(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("[" * (MAX_FILE_BYTES + 1))       # would be a YAML error if parsed
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert [str(i) for i in info.value.issues] == [
        f"{path}: file too large: {MAX_FILE_BYTES + 1} bytes; the limit is {MAX_FILE_BYTES} bytes (1 MiB)"]
    with pytest.raises(ConfigError) as info:
        parse_config("#" * MAX_FILE_BYTES + "é", "mem")     # bytes count, not characters
    assert info.value.issues[0].message.startswith(f"file too large: {MAX_FILE_BYTES + 2} bytes")


def test_a_file_of_exactly_1_mib_is_read():
    text = VI + "#" * (MAX_FILE_BYTES - len(VI) - 1) + "\n"
    assert len(text.encode()) == MAX_FILE_BYTES
    assert parse_config(text).vrrp_instances[0].name == "VI_1"


def test_a_file_without_a_size_is_read_no_further_than_the_limit():
    with pytest.raises(ConfigError) as info:
        load_config("/dev/zero")
    assert info.value.issues[0].message == (
        f"file too large: {MAX_FILE_BYTES + 1} bytes; the limit is {MAX_FILE_BYTES} bytes (1 MiB)")


# --- bounded error messages ------------------------------------------------------------------


def test_a_huge_value_is_echoed_cut_to_80_characters_with_its_size():
    e = issues_of("node: {router_id: a, log_format: " + "x" * 900_000 + "}\n")
    (issue,) = e.issues
    assert issue.message == f"unknown log format {'x' * 80!r}… (900000 bytes); expected one of console, json, journal"
    assert len(str(e)) < 200


def test_a_huge_key_is_cut_in_the_key_path():
    e = issues_of("node: {router_id: a}\n? " + "k" * 500_000 + "\n: 1\n")
    (issue,) = e.issues
    assert issue.path == "k" * 80 + "… (500000 bytes)"
    assert issue.message.startswith("unknown key; expected one of api, auth, health, lvs, node")


def test_a_huge_name_in_a_reference_error_is_cut():
    e = issues_of("vrrp_instances: [{name: VI_1, interface: eth0, vrid: 51, virtual_ips: [192.0.2.100],"
                  " track_scripts: [" + "s" * 300_000 + "]}]\n")
    (issue,) = e.issues
    assert issue.message == f"no track script named {'s' * 80!r}… (300000 bytes) (defined: none)"


def test_a_yaml_error_that_quotes_the_text_is_cut_as_well():
    e = issues_of("a: *" + "n" * 5000 + "\n")                # PyYAML: found undefined alias 'nnn...'
    assert len(e.issues[0].message) < 500 and e.issues[0].message.endswith("bytes)")


def test_every_issue_is_bounded_whatever_made_it():
    issue = ConfigIssue("f", 1, 1, "p" * 10_000, "m" * 10_000)
    assert len(str(issue)) < 700 and "(10000 bytes)" in issue.path and "(10000 bytes)" in issue.message


def test_only_the_first_100_issues_are_kept_and_the_others_are_counted():
    e = issues_of("".join(f"bad{i}: 1\n" for i in range(150)))
    assert len(e.issues) == fields.MAX_ISSUES == 100 and e.unlisted == 50 and e.count == 150
    assert [i.line for i in e.issues] == list(range(1, 101))
    assert str(e).splitlines()[-1] == "... and 140 more errors"
