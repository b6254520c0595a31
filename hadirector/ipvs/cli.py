"""``hadirector ipvs``: the live IPVS table in ``ipvsadm -Ln`` layout, plus health.

The layout is ipvsadm 1.31's, byte for byte (the kernel-lab tests compare the two):
the version header, the two title lines, ``TCP  addr:port sched [(flags)] [persistent T
[mask M]] [ops]`` service lines and ``  -> addr:port  Forward Weight ActiveConn
InActConn`` destination lines, services and destinations sorted as ipvsadm sorts them.
``--stats`` gives ipvsadm's ``--stats`` columns.

When the running agent answers on its API, a Health column (up/down/unknown, "sorry"
for the sorry server) is appended to each destination line; without an agent the output
is exactly ipvsadm's. Rendering is a pure function of a Table (tests feed it tables).
"""

from __future__ import annotations

import argparse
import functools
import ipaddress
import sys
from collections.abc import Callable, Mapping

from hadirector.ipvs.table import (
    FWD_LOCAL, FWD_MASQ, FWD_NAMES, FWD_ROUTE, FWD_TUNNEL, SVC_F_ONEPACKET, SVC_F_PERSISTENT, SVC_F_SCHED1,
    SVC_F_SCHED2, SVC_F_SCHED3, TUN_FLAG_CSUM, TUN_FLAG_NOCSUM, TUN_FLAG_REMCSUM, TUN_GRE, TUN_GUE, TUN_NAMES,
    DestEntry, ServiceEntry, ServiceKey, Table,
)
from hadirector.model import SyncRole, format_endpoint

# (service key text as the status snapshot spells it, "addr:port") -> health text
HealthLookup = Mapping[tuple[str, str], str]

PROTO_ORDER = {"tcp": 6, "udp": 17, "sctp": 132}


def add_arguments_ipvs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", default=None,
                        help="config file whose api.listen locates the agent, for the Health column "
                             "(default /etc/hadirector/hadirector.yaml, or 127.0.0.1:9110 if that does "
                             "not exist)")
    parser.add_argument("--url", default=None, help="the agent's API base URL (for the Health column)")
    parser.add_argument("--stats", action="store_true", help="counters, like ipvsadm -Ln --stats")
    parser.add_argument("--no-health", action="store_true", help="do not ask the agent for health")


def cmd_ipvs(args: argparse.Namespace) -> int:
    from hadirector.ipvs.backend import IpvsError
    from hadirector.kernel.ipvs import IpvsNetlink
    try:
        backend = IpvsNetlink()
    except (OSError, IpvsError) as e:
        print(f"hadirector ipvs: {e}", file=sys.stderr)
        return _exit_code(e)
    try:
        table = backend.dump()
        version, size = backend.info()
    except IpvsError as e:
        print(f"hadirector ipvs: {e}", file=sys.stderr)
        return _exit_code(e)
    finally:
        backend.close()
    health = None if getattr(args, "no_health", False) else agent_health(args)
    sys.stdout.write(render(table, version=version, size=size, stats=getattr(args, "stats", False),
                            health=health))
    return 0


def _exit_code(e: Exception) -> int:
    """The codes every subcommand shares: no privilege, no IPVS on this host, or else."""
    import errno

    from hadirector.exitcodes import ExitCode
    from hadirector.ipvs.backend import IpvsUnavailable

    if getattr(e, "errno", None) == errno.EPERM:
        return ExitCode.NO_PRIVILEGE
    if isinstance(e, (IpvsUnavailable, OSError)):
        return ExitCode.START_FAILED
    return ExitCode.INTERNAL_ERROR


def agent_health(args: argparse.Namespace) -> HealthLookup | None:
    """Health per destination from the running agent's /status, or None if no agent
    answers (the API engineer's client; any failure just drops the column)."""
    try:
        from hadirector.api import cli as api_cli
        from hadirector.api.snapshot import Snapshot
        base = api_cli.api_base_url(getattr(args, "config", None), getattr(args, "url", None))
        status, body = api_cli._request(base, "/status", timeout=1.0)
        if status != 200:
            return None
        import json
        snap = Snapshot.from_dict(json.loads(body))
    except Exception:   # no agent, old agent, no API module: print what the kernel has
        return None
    out: dict[tuple[str, str], str] = {}
    for vs in snap.virtual_services:
        for rs in vs.real_servers:
            text = "sorry" if rs.sorry_server else rs.health.value
            out[(_norm_key(vs.key), format_endpoint(rs.address, rs.port))] = text
    return out


# --- pure rendering ---------------------------------------------------------------------


def render(table: Table, version: str = "1.2.1", size: int = 4096, stats: bool = False,
           health: HealthLookup | None = None) -> str:
    lines = [f"IP Virtual Server version {version} (size={size})"]
    if stats:
        lines.append(f"{'Prot LocalAddress:Port':<33} {'Conns':>8} {'InPkts':>8} {'OutPkts':>8} "
                     f"{'InBytes':>8} {'OutBytes':>8}")
        lines.append("  -> RemoteAddress:Port")
    else:
        lines.append("Prot LocalAddress:Port Scheduler Flags")
        title = "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn"
        lines.append(title + (" Health" if health is not None else ""))
    for key in sorted(table.services, key=service_sort_key):
        svc = table.services[key]
        name = service_name(key)
        if stats:
            s = svc.stats
            lines.append(f"{name:<33}" + "".join(largenum(v) for v in (s.conns, s.inpkts, s.outpkts, s.inbytes, s.outbytes)))
        else:
            lines.append(service_line(svc, name))
        for d in sorted(table.dests_of(key).values(), key=dest_sort_key):
            dname = format_endpoint(d.key.address, d.key.port)
            if d.family == 4:
                dname = dname[:28]
            if stats:
                s = d.stats
                lines.append(f"  -> {dname:<28}" + "".join(largenum(v) for v in (s.conns, s.inpkts, s.outpkts, s.inbytes, s.outbytes)))
                continue
            line = (f"  -> {dname:<28} {FWD_NAMES.get(d.fwd, '?'):<7} {d.weight:<6} "
                    f"{d.active_conns:<10} {d.inact_conns:<10}")
            if health is not None:
                line += " " + health.get((status_key(key), format_endpoint(d.key.address, d.key.port)), "-")
            lines.append(line)
    return "\n".join(lines) + "\n"


def render_rules(table: Table) -> str:
    """The table as ``ipvsadm -Sn`` prints it (and ``ipvsadm-restore`` reads it).
    Like ipvsadm, it leaves out thresholds, which -S does not save."""
    out = []
    for key in sorted(table.services, key=service_sort_key):
        svc = table.services[key]
        name = rule_service(key)
        line = f"-A {name} -s {svc.scheduler}"
        if svc.flags & (SVC_F_SCHED1 | SVC_F_SCHED2 | SVC_F_SCHED3):
            line += f" -b {sched_flags_text(svc.scheduler, svc.flags)}"
        if svc.flags & SVC_F_PERSISTENT:
            line += f" -p {svc.timeout}"
            if key.family == 4 and svc.netmask != 32:
                line += f" -M {ipaddress.IPv4Network(f'0.0.0.0/{svc.netmask}').netmask}"
            if key.family == 6 and svc.netmask != 128:
                line += f" -M {svc.netmask}"
            if svc.pe_name:
                line += f" --pe {svc.pe_name}"
        if svc.flags & SVC_F_ONEPACKET:
            line += " -o"
        out.append(line)
        for d in sorted(table.dests_of(key).values(), key=dest_sort_key):
            line = f"-a {name} -r {format_endpoint(d.key.address, d.key.port)} {FWD_SWITCH.get(d.fwd, '-g')} -w {d.weight}"
            if d.fwd == FWD_TUNNEL:
                line += f" --tun-type {TUN_NAMES.get(d.tun_type, '?')}"
                if d.tun_type == TUN_GUE:
                    line += f" --tun-port {d.tun_port}"
                if d.tun_type in (TUN_GUE, TUN_GRE):
                    line += " " + TUN_CSUM_SWITCH.get(d.tun_flags, "--tun-nocsum")
            out.append(line)
    return "".join(line + "\n" for line in out)


def rule_service(key: ServiceKey) -> str:
    if key.fwmark:
        return f"-f {key.fwmark}" + (" -6" if key.family == 6 else "")
    switch = {"tcp": "-t", "udp": "-u", "sctp": "--sctp-service"}[key.protocol]
    return f"{switch} {format_endpoint(key.address, key.port)}"


def render_daemons(daemons: list) -> str:
    """``ipvsadm -L --daemon``: one line per running sync daemon, master first."""
    lines = []
    for d in sorted(daemons, key=lambda d: list(SyncRole).index(d.state)):
        line = f"{d.state.name.lower()} sync daemon (mcast={d.interface}, syncid={d.syncid}"
        if d.maxlen:
            line += f", maxlen={d.maxlen}"
        if d.mcast_group:
            line += f", group={d.mcast_group}"
        if d.port:
            line += f", port={d.port}"
        if d.ttl:
            line += f", ttl={d.ttl}"
        lines.append(line + ")")
    return "".join(line + "\n" for line in lines)


FWD_SWITCH = {FWD_MASQ: "-m", FWD_TUNNEL: "-i", FWD_ROUTE: "-g", FWD_LOCAL: "-g"}
TUN_CSUM_SWITCH = {TUN_FLAG_NOCSUM: "--tun-nocsum", TUN_FLAG_CSUM: "--tun-csum", TUN_FLAG_REMCSUM: "--tun-remcsum"}


def service_name(key: ServiceKey) -> str:
    if key.fwmark:
        return f"FWM  {key.fwmark}" + (" IPv6" if key.family == 6 else "")
    name = f"{key.protocol.upper():<4} {format_endpoint(key.address, key.port)}"
    return name[:33] if key.family == 4 else name


def service_line(svc: ServiceEntry, name: str) -> str:
    out = f"{name} {svc.scheduler}"
    if svc.flags & (SVC_F_SCHED1 | SVC_F_SCHED2 | SVC_F_SCHED3):
        out += f" ({sched_flags_text(svc.scheduler, svc.flags)})"
    if svc.flags & SVC_F_PERSISTENT:
        out += f" persistent {svc.timeout}"
        if svc.key.family == 4 and svc.netmask != 32:
            out += f" mask {ipaddress.IPv4Network(f'0.0.0.0/{svc.netmask}').netmask}"
        if svc.key.family == 6 and svc.netmask != 128:
            out += f" mask {svc.netmask}"
        if svc.pe_name:
            out += f" pe {svc.pe_name}"
    if svc.flags & SVC_F_ONEPACKET:
        out += " ops"
    return out


def sched_flags_text(scheduler: str, flags: int) -> str:
    names = {"sh": ("sh-fallback", "sh-port", "flag-3"), "mh": ("mh-fallback", "mh-port", "flag-3")}.get(
        scheduler, ("flag-1", "flag-2", "flag-3"))
    bits = (SVC_F_SCHED1, SVC_F_SCHED2, SVC_F_SCHED3)
    return ",".join(n for n, b in zip(names, bits) if flags & b)


def largenum(i: int) -> str:
    """ipvsadm's print_largenum(): nine columns, K/M/G/T above 100 million."""
    if i < 100_000_000:
        return f"{i:>9}"
    if i < 1_000_000_000:
        return f"{i // 1000:>8}K"
    if i < 100_000_000_000:
        return f"{i // 1_000_000:>8}M"
    if i < 100_000_000_000_000:
        return f"{i // 1_000_000_000:>8}G"
    return f"{i // 1_000_000_000_000:>8}T"


def _c_int(value: int) -> int:
    """C's (int) of an unsigned 32-bit difference: ipvsadm's comparators subtract."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def _words(address: str) -> list[int]:
    packed = ipaddress.ip_address(address).packed if address else bytes(4)
    packed += bytes(16 - len(packed))
    return [int.from_bytes(packed[i:i + 4], "big") for i in range(0, 16, 4)]


def _cmp_addr(family: int, a: str, b: str) -> int:
    wa, wb = _words(a), _words(b)
    if family == 6:
        for x, y in zip(wa, wb):
            r = _c_int(x - y)
            if r:
                return r
        return 0
    return _c_int(wa[0] - wb[0])


def _cmp_services(s1: ServiceKey, s2: ServiceKey) -> int:
    """libipvs ipvs_cmp_services(): fwmark, family, protocol, address, port, each by
    subtraction (so the order is ipvsadm's, wrap-around included)."""
    af = {4: 2, 6: 10}
    for r in (_c_int(s1.fwmark - s2.fwmark), af[s1.family] - af[s2.family],
              PROTO_ORDER.get(s1.protocol, 0) - PROTO_ORDER.get(s2.protocol, 0),
              _cmp_addr(s1.family, s1.address, s2.address), s1.port - s2.port):
        if r:
            return r
    return 0


def _cmp_dests(d1: DestEntry, d2: DestEntry) -> int:
    """libipvs ipvs_cmp_dests(): address (compared as d1's family), then port."""
    return _cmp_addr(d1.family, d1.key.address, d2.key.address) or (d1.key.port - d2.key.port)


service_sort_key = functools.cmp_to_key(_cmp_services)
dest_sort_key = functools.cmp_to_key(_cmp_dests)


def status_key(key: ServiceKey) -> str:
    """The snapshot's spelling of a service key: "TCP 10.0.0.1:80", "FWM 5"."""
    if key.fwmark:
        return f"FWM {key.fwmark}"
    return f"{key.protocol.upper()} {format_endpoint(key.address, key.port)}"


def _norm_key(text: str) -> str:
    return " ".join(text.split())


HealthSource = Callable[[argparse.Namespace], HealthLookup | None]
