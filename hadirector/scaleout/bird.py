"""BIRD 2 beside a scale-out director: its config, rendered; its state, parsed (no I/O).

The agent never drives BIRD. It keeps VIP routes in its kernel table (``kernel/gate_routes``);
BIRD learns that table and exports it over BGP with BFD. ``render`` writes the BIRD
config a director needs, with timers fit for a load balancer instead of BIRD's Internet
defaults (hold time 240 s, connect retry 120 s, error wait 60..300 s: after one BFD-down
a session sat in Idle for 60 s; shared/scale-out.md 2c). ``hadirector bird-config``
prints it. ``parse_protocols`` / ``parse_bfd_sessions`` read ``birdc show protocols``
and ``birdc show bfd sessions`` for status and metrics (read-only).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from hadirector.model import Config, ScaleOut

GATE_PROTOCOL = "hadirector_gate"
GATE_PROTOCOL6 = "hadirector_gate6"
BFD_PROTOCOL = "hadirector_bfd"


def peer_protocol(address) -> str:
    """BIRD protocol name of a peer: ``peer_10_1_0_1`` / ``peer_2001_db8__1``."""
    return "peer_" + re.sub(r"[^0-9A-Za-z]", "_", str(address))


def render(config: Config) -> str:
    """BIRD 2 config for this director (``scale_out`` must be set)."""
    so: ScaleOut | None = config.scale_out
    if so is None:
        raise ValueError("no scale_out section in the config")
    v6 = any(p.address.version == 6 for p in so.peers)
    v4 = any(p.address.version == 4 for p in so.peers)
    out = [
        f"# BIRD 2 config of scale-out director {config.node.router_id}, rendered by",
        f"# `hadirector bird-config -c {config.source}`. The agent keeps each VIP it can carry",
        f"# as a /32 (/128) route of protocol {so.route_protocol} in kernel table {so.table};",
        "# BIRD learns that table and announces it to the routers below.",
        "",
    ]
    if so.router_id is not None:
        out += [f"router id {so.router_id};", ""]
    out += ["protocol device { }", ""]

    def kernel(name: str, channel: str) -> list[str]:
        # learn: routes not installed by BIRD itself; only the agent's protocol number.
        return [f"protocol kernel {name} {{",
                f"  kernel table {so.table};",
                "  learn;",
                "  scan time 10;",
                f"  {channel} {{ import where krt_source = {so.route_protocol}; export none; }};",
                "}", ""]

    if v4:
        out += kernel(GATE_PROTOCOL, "ipv4")
    if v6:
        out += kernel(GATE_PROTOCOL6, "ipv6")
    if so.bfd:
        ms = round(so.bfd_interval * 1000)
        out += [f"protocol bfd {BFD_PROTOCOL} {{",
                f'  interface "*" {{ interval {ms} ms; multiplier {so.bfd_multiplier}; }};',
                "}", ""]
    for peer in so.peers:
        channel, gate = ("ipv4", GATE_PROTOCOL) if peer.address.version == 4 else ("ipv6", GATE_PROTOCOL6)
        out += [f"protocol bgp {peer_protocol(peer.address)} {{",
                f"  local as {so.local_as};",
                f"  neighbor {peer.address} as {peer.asn};",
                f"  hold time {so.hold_time};",
                "  connect delay time 1;",
                f"  connect retry time {so.connect_retry};",
                f"  error wait time {so.error_wait_min}, {so.error_wait_max};",
                f"  bfd {'on' if so.bfd else 'off'};",
                f'  {channel} {{ import none; export where proto = "{gate}"; }};',
                "}", ""]
    return "\n".join(out)


# --- birdc output -----------------------------------------------------------------------


@dataclass(frozen=True)
class ProtocolState:
    name: str
    proto: str          # "BGP", "Kernel", "BFD", "Device"
    state: str          # "up", "down", "start" ...
    info: str           # BGP: "Established", "Active", "Idle" ... (may carry an error)

    @property
    def established(self) -> bool:
        return self.proto == "BGP" and self.state == "up" and self.info.startswith("Established")


@dataclass(frozen=True)
class BfdSession:
    address: str
    interface: str
    state: str          # "Up", "Down", "Init", "AdminDown"

    @property
    def up(self) -> bool:
        return self.state == "Up"


def _reply_lines(text: str) -> list[str]:
    # "BIRD 2.0.12 ready." greets; lines may carry birdc's 4-digit reply codes (-v).
    return [re.sub(r"^\d{4}[- ]", "", line) for line in text.splitlines()
            if line.strip() and not line.startswith("BIRD ")]


def parse_protocols(text: str) -> list[ProtocolState]:
    """``birdc show protocols``: Name Proto Table State Since Info."""
    out = []
    header = False          # rows only after the header: an error line is not a protocol
    for line in _reply_lines(text):
        parts = line.split()
        if parts[:2] == ["Name", "Proto"]:
            header = True
            continue
        if not header or len(parts) < 5:
            continue
        name, proto, _table, state = parts[:4]
        # Since is one token (time) or two (date and time); Info is the rest.
        rest = parts[4:]
        if len(rest) > 1 and re.fullmatch(r"\d\d:\d\d:\d\d(\.\d+)?", rest[1]):
            rest = rest[1:]
        out.append(ProtocolState(name, proto, state, " ".join(rest[1:])))
    return out


def parse_bfd_sessions(text: str) -> list[BfdSession]:
    """``birdc show bfd sessions``: IP address, Interface, State, Since, Interval, Timeout."""
    out = []
    for line in _reply_lines(text):
        parts = line.split()
        if len(parts) < 3:
            continue
        try:
            ipaddress.ip_address(parts[0])
        except ValueError:
            continue
        out.append(BfdSession(parts[0], parts[1], parts[2]))
    return out
