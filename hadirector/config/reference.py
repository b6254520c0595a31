"""What each config key means, and what keepalived calls it: the words of hadirector.yaml(5).

Theory of operation: everything a machine can know about a key -- its type, range,
default, whether it is required -- comes from the loader's ``Record`` tables and the
model's dataclass defaults (``hadirector/manpages.py`` reads them). What it cannot know
is declared here, in one table: a sentence per key and the keepalived.conf keyword an
operator migrating from keepalived would look for (``None``: keepalived has none).
``tests/unit/test_manpages.py`` fails when a key of any record is missing here, or
when an entry here names a key that no record has.

Keys are ``(record, key)``: the record is the model class the mapping becomes
(``Config`` for the top level).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KeyDoc:
    text: str                       # one or two sentences, plain text
    keepalived: str | None          # the keepalived.conf keyword(s), or None
    type: str | None = None         # only where the converter cannot say it itself
    default: str | None = None      # only where the model's default is not the story


K = KeyDoc
_CMD_NOTE = "keepalived runs it through /bin/sh; here it is an argv, never run by a shell"

KEYS: dict[tuple[str, str], KeyDoc] = {
    # --- the top level -------------------------------------------------------------
    ("Config", "node"): K("This director: its name, log format and state directory.", "global_defs",
                        default="(all defaults)"),
    ("Config", "api"): K("The local read-only HTTP API (/status, /metrics, /healthz).", None),
    ("Config", "vrrp_instances"): K("The VRRP virtual routers this node takes part in.", "vrrp_instance NAME { }"),
    ("Config", "sync_groups"): K("Instances that fail over together.", "vrrp_sync_group NAME { }"),
    ("Config", "track_scripts"): K("Periodic commands whose result moves the priority of the instances "
                                   "that track them.", "vrrp_script NAME { }"),
    ("Config", "lvs"): K("How the IPVS table is programmed, and the connection sync daemon.", None),
    ("Config", "virtual_services"): K("The IPVS virtual services and their real servers.",
                                      "virtual_server IP PORT { }"),
    # --- node, api -----------------------------------------------------------------------
    ("NodeSettings", "router_id"): K("This director's name in logs and status.", "router_id",
                                     default="the host name"),
    ("NodeSettings", "log_format"): K("console: key=value lines; json: one JSON object per event. "
                                      "--log-format and HADIRECTOR_LOG_FORMAT override it.", None),
    ("NodeSettings", "state_dir"): K("Where state.json and control.sock live (the unit's "
                                     "RuntimeDirectory).", None),
    ("ApiSettings", "listen"): K("Address and port of the HTTP API.", None,
                                 type="HOST:PORT, e.g. 127.0.0.1:9110 or [::1]:9110",
                                 default="127.0.0.1:9110"),
    ("ApiSettings", "enabled"): K("false: no HTTP API (hadirector reload still works over "
                                  "control.sock).", None),
    # --- VRRP ----------------------------------------------------------------------------
    ("VrrpInstance", "name"): K("The instance's name, unique in the file.", "vrrp_instance NAME"),
    ("VrrpInstance", "interface"): K("The interface VRRP adverts are sent and received on.", "interface"),
    ("VrrpInstance", "vrid"): K("The virtual router id, the same on both directors (RFC 5798 5.2.3).",
                                "virtual_router_id"),
    ("VrrpInstance", "priority"): K("Higher wins the election; 255 means this node owns the "
                                    "addresses (RFC 5798 5.2.4).", "priority"),
    ("VrrpInstance", "version"): K("3: VRRPv3 (RFC 5798); 2: VRRPv2 (RFC 3768, IPv4 only), for a pair "
                                   "with a keepalived peer on its default.", "version, or vrrp_version "
                                                                              "in global_defs"),
    ("VrrpInstance", "advert_interval"): K("Seconds between adverts; centiseconds resolution "
                                           "(VRRPv2: whole seconds).", "advert_int"),
    ("VrrpInstance", "virtual_ips"): K("The addresses the master holds, all of one family.",
                                       "virtual_ipaddress"),
    ("VrrpInstance", "preempt"): K("A higher-priority backup takes the VIPs from a live master.",
                                   "nopreempt (the opposite)"),
    ("VrrpInstance", "preempt_delay"): K("How long a node waits after start-up before it preempts.",
                                         "preempt_delay"),
    ("VrrpInstance", "accept_mode"): K("The master accepts packets sent to the VIPs it does not own "
                                       "(RFC 5798 6.1).", "accept / no_accept"),
    ("VrrpInstance", "unicast_src"): K("Send adverts by unicast from this address (with "
                                       "unicast_peers) instead of multicast.", "unicast_src_ip"),
    ("VrrpInstance", "unicast_peers"): K("The peers' addresses for unicast adverts.", "unicast_peer { }"),
    ("VrrpInstance", "track_interfaces"): K("Links whose state moves this instance's priority, or puts "
                                            "it in FAULT.", "track_interface { }",
                                            type="a list of: an interface name, or a mapping {name, weight}"),
    ("VrrpInstance", "track_scripts"): K("Names of track_scripts entries this instance follows.",
                                         "track_script { }"),
    ("VrrpInstance", "notify"): K("Commands run on a state change.", "notify_master, notify_backup, "
                                                                      "notify_fault, notify_stop, notify"),
    ("VrrpInstance", "garp"): K("Gratuitous ARP / unsolicited NA sent when becoming master.",
                                "garp_master_* and vrrp_garp_* in global_defs"),
    ("TrackInterface", "name"): K("The interface name.", "the interface in track_interface { }"),
    ("TrackInterface", "weight"): K("0: link down puts the instance in FAULT; otherwise the priority "
                                    "moves by this much while the link is down.", "weight"),
    ("NotifyScripts", "master"): K("Run on becoming MASTER. " + _CMD_NOTE + ".", "notify_master"),
    ("NotifyScripts", "backup"): K("Run on becoming BACKUP.", "notify_backup"),
    ("NotifyScripts", "fault"): K("Run on entering FAULT.", "notify_fault"),
    ("NotifyScripts", "stop"): K("Run when the instance stops.", "notify_stop"),
    ("NotifyScripts", "notify"): K("Run on every change, with keepalived's arguments appended: "
                                   "INSTANCE|GROUP name state priority.", "notify"),
    ("NotifyScripts", "timeout"): K("A script still running after this is killed with its whole "
                                    "process tree.", None),
    ("GarpSettings", "count"): K("Packets per VIP per burst.", "garp_master_repeat"),
    ("GarpSettings", "interval"): K("Seconds between the packets of one burst.", "garp_interval, "
                                                                                 "gna_interval"),
    ("GarpSettings", "repeat_delay"): K("A second burst this long after the first; 0: none.",
                                        "garp_master_delay"),
    ("GarpSettings", "refresh"): K("A burst this often while master; 0: never.", "garp_master_refresh"),
    ("SyncGroup", "name"): K("The group's name; lvs.sync_daemon.follow_instance may name it.",
                             "vrrp_sync_group NAME"),
    ("SyncGroup", "instances"): K("Member instances: if one goes to BACKUP or FAULT, all do.", "group { }"),
    ("SyncGroup", "notify"): K("Commands run on a state change of the group (keys as an instance's "
                               "notify).", "notify_* in vrrp_sync_group"),
    ("TrackScript", "name"): K("The name instances refer to in track_scripts.", "vrrp_script NAME"),
    ("TrackScript", "command"): K("The command; exit status 0 is success. " + _CMD_NOTE + ".", "script"),
    ("TrackScript", "interval"): K("Seconds between runs.", "interval"),
    ("TrackScript", "timeout"): K("A run taking longer fails.", "timeout"),
    ("TrackScript", "weight"): K("0: failing puts the tracking instances in FAULT; otherwise their "
                                 "priority moves by this much while failing.", "weight"),
    ("TrackScript", "rise"): K("Successes in a row that end a failure.", "rise"),
    ("TrackScript", "fall"): K("Failures in a row that start one.", "fall"),
    # --- LVS -----------------------------------------------------------------------------
    ("LvsSettings", "program"): K("always: both directors keep the IPVS table programmed (warm "
                                  "standby, a takeover moves only the VIPs); master_only: only the "
                                  "master programs it.", None),
    ("LvsSettings", "on_shutdown"): K("keep or remove the agent's own IPVS entries on a graceful stop.",
                                      "none: keepalived removes its virtual servers on stop "
                                      "(lvs_flush_onstop flushes the whole table)"),
    ("LvsSettings", "sync_daemon"): K("The kernel IPVS connection-sync daemon: master on the VRRP "
                                      "master, backup on the other node.", "lvs_sync_daemon"),
    ("SyncDaemon", "interface"): K("The interface sync messages go out and come in on.",
                                   "lvs_sync_daemon INTERFACE"),
    ("SyncDaemon", "syncid"): K("Sync id, the same on both directors.", "id"),
    ("SyncDaemon", "follow_instance"): K("The VRRP instance or sync group whose state the daemon "
                                         "follows; null: the only instance.", "lvs_sync_daemon "
                                                                               "INTERFACE INSTANCE"),
    ("SyncDaemon", "mcast_group"): K("Multicast group of sync messages; null: 224.0.0.81 (IPv4).", "group"),
    ("SyncDaemon", "port"): K("UDP port of sync messages.", "port"),
    ("SyncDaemon", "ttl"): K("Multicast TTL of sync messages.", "ttl"),
    ("SyncDaemon", "maxlen"): K("Largest sync message in bytes; 0: the interface MTU.", "maxlen"),
    ("SyncDaemon", "refresh_period"): K("Re-send an active connection to the backup at most this often "
                                        "(net.ipv4.vs.sync_refresh_period; also sets sync_threshold's "
                                        "period to 0); null: leave the kernel's settings alone.", None),
    ("SyncDaemon", "catch_up"): K("After its sync daemon starts as backup, a node does not preempt "
                                  "a live master for this long; null: twice refresh_period, or 0.", None),
    ("VirtualService", "name"): K("A name for logs and status, unique in the file.", None,
                                  default="from its key, e.g. tcp/192.0.2.10:80 or fwmark/1"),
    ("VirtualService", "protocol"): K("The transport protocol.", "protocol"),
    ("VirtualService", "address"): K("The virtual address (or give fwmark).", "virtual_server IP PORT",
                                     default="required, unless fwmark is given"),
    ("VirtualService", "port"): K("The virtual port; 0: all ports (needs persistence_timeout).",
                                  "virtual_server IP PORT", default="required with address"),
    ("VirtualService", "fwmark"): K("A firewall-mark service instead of address/port/protocol.",
                                    "virtual_server fwmark N"),
    ("VirtualService", "family"): K("With fwmark: the address family; otherwise taken from address.",
                                    "ip_family", type="4 or 6"),
    ("VirtualService", "scheduler"): K("The IPVS scheduler (the kernel module ip_vs_NAME).",
                                       "lb_algo, lvs_sched"),
    ("VirtualService", "scheduler_flags"): K("Flags of the sh and mh schedulers (ipvsadm -b).",
                                             "sh-port, sh-fallback, mh-port, mh-fallback"),
    ("VirtualService", "persistence_timeout"): K("Persistence: a client goes to the same real server for "
                                                 "this long; 0: not persistent.", "persistence_timeout"),
    ("VirtualService", "persistence_netmask"): K("Clients in one network of this size count as one for "
                                                 "persistence.", "persistence_granularity",
                                                 type="IPv4: a netmask like 255.255.255.0 or a prefix "
                                                      "length 0..32; IPv6: a prefix length 1..128",
                                                 default="none (each client address alone)"),
    ("VirtualService", "one_packet"): K("Schedule every UDP datagram on its own.", "ops"),
    ("VirtualService", "real_servers"): K("The real servers.", "real_server IP PORT { }"),
    ("VirtualService", "sorry_server"): K("Takes the traffic while the quorum is lost (keys as a real "
                                          "server, without check).", "sorry_server IP PORT, "
                                                                     "sorry_server_lvs_method"),
    ("VirtualService", "inhibit_on_failure"): K("A failed real server stays in the table with weight 0 "
                                                "instead of being removed.", "inhibit_on_failure (per "
                                                                             "real_server there)"),
    ("VirtualService", "quorum"): K("Minimum healthy weight for the service to be up.", "quorum"),
    ("VirtualService", "quorum_hysteresis"): K("Slack around quorum before it is gained or lost again.",
                                               "hysteresis"),
    ("VirtualService", "quorum_up"): K("Command run when the quorum is gained.", "quorum_up"),
    ("VirtualService", "quorum_down"): K("Command run when the quorum is lost.", "quorum_down"),
    ("VirtualService", "check"): K("The default health check of its real servers; a real server's own "
                                   "check mapping is merged over it.", "a checker block in each "
                                                                       "real_server", default="none"),
    ("VirtualService", "forward"): K("The default forwarding method of its real servers (and the sorry "
                                     "server).", "lb_kind, lvs_method", default="nat"),
    ("VirtualService", "tunnel_type"): K("The default tunnel type of its real servers.",
                                         "lvs_method TUN type", default="ipip"),
    ("VirtualService", "tunnel_port"): K("The default GUE port of its real servers.",
                                         "lvs_method TUN type gue port", default="none"),
    ("VirtualService", "tunnel_checksum"): K("The default GUE/GRE checksum mode of its real servers.",
                                             "lvs_method TUN ... nocsum|csum|remcsum", default="nocsum"),
    ("RealServer", "address"): K("The real server's address.", "real_server IP PORT"),
    ("RealServer", "port"): K("Its port; 0: the service's port (DR, TUN).", "real_server IP PORT"),
    ("RealServer", "weight"): K("Its IPVS weight; 0 takes it out of scheduling.", "weight"),
    ("RealServer", "forward"): K("nat (masquerading), dr (direct routing) or tun (IP tunnelling).",
                                 "lvs_method, lb_kind"),
    ("RealServer", "tunnel_type"): K("With forward: tun, the encapsulation.", "lvs_method TUN type"),
    ("RealServer", "tunnel_port"): K("GUE: the real server's UDP port (required for gue).",
                                     "lvs_method TUN type gue port"),
    ("RealServer", "tunnel_checksum"): K("GUE/GRE: nocsum, csum or remcsum (ipvsadm --tun-*).",
                                         "lvs_method TUN ... nocsum|csum|remcsum"),
    ("RealServer", "upper_threshold"): K("No new connections past this many; 0: no limit.", "uthreshold"),
    ("RealServer", "lower_threshold"): K("New connections again below this many.", "lthreshold"),
    ("RealServer", "check"): K("Its health check; none: always healthy.", "TCP_CHECK, HTTP_GET, "
                                                                           "SSL_GET, MISC_CHECK",
                               default="the service's check"),
    # --- health checks --------------------------------------------------------------------
    ("HealthCheck", "type"): K("tcp: a connect; http, https: a GET; script: a command.",
                               "TCP_CHECK, HTTP_GET, SSL_GET, MISC_CHECK"),
    ("HealthCheck", "interval"): K("Seconds between checks.", "delay_loop"),
    ("HealthCheck", "timeout"): K("A check taking longer fails.", "connect_timeout, misc_timeout"),
    ("HealthCheck", "rise"): K("Successes in a row that bring a server up.", None),
    ("HealthCheck", "fall"): K("Failures in a row that take it down.", "retry (fall = retry + 1)"),
    ("HealthCheck", "initial"): K("The state before the first result; unknown: not programmed until "
                                  "then.", "alpha (start down; without it: up)"),
    ("HealthCheck", "jitter"): K("Each check starts up to this much late, to spread them out.", "warmup"),
    ("HealthCheck", "retry_delay"): K("After a failure, check again this soon; null: after interval.",
                                      "delay_before_retry"),
    ("HealthCheck", "bind_to"): K("Source address of the check.", "bindto"),
    ("HealthCheck", "address"): K("Check this address instead of the real server's.", "connect_ip"),
    ("HealthCheck", "port"): K("... and this port; null: the real server's (or the service's).",
                               "connect_port"),
    ("HealthCheck", "path"): K("http, https: the URL path.", "url { path }"),
    ("HealthCheck", "status_codes"): K("http, https: the status codes that count as healthy.",
                                       "url { status_code }"),
    ("HealthCheck", "body_regex"): K("http, https: the body must match.", "url { regex }"),
    ("HealthCheck", "digest"): K("http, https: the hex MD5 of the body must be this.", "url { digest }"),
    ("HealthCheck", "host"): K("http, https: the Host header (and TLS server name).", "virtualhost"),
    ("HealthCheck", "verify_tls"): K("https: verify the server's certificate.",
                                     "none: SSL_GET does not verify (false)"),
    ("HealthCheck", "ca_file"): K("https: CA bundle to verify with; null: the system's.", "SSL { ca }"),
    ("HealthCheck", "command"): K("script: the command; exit status 0 is healthy.", "misc_path",
                                  default="required with type: script"),
}
