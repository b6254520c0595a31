"""VRRP core: advert codec, RFC 5798 timer formulas, sans-IO state machine, sync groups.

Pure code: no sockets, no asyncio, no clocks. The agent's driver feeds it packets and
``now`` and carries out the actions it returns.
"""

from hadirector.vrrp.codec import Advert, IpPacket, Reject, decode, encode, parse_ip_packet
from hadirector.vrrp.machine import (
    Action, Counters, IntervalBounded, MasterWish, PeerMisconfigured, Reannounce, Reason,
    RoleChanged, SendAdvert, State, VrrpMachine,
)
from hadirector.vrrp.timers import bounded_adver_interval, master_down_interval, skew_time

__all__ = [
    "Action", "Advert", "Counters", "IntervalBounded", "IpPacket", "MasterWish",
    "PeerMisconfigured", "Reannounce", "Reason", "Reject", "RoleChanged", "SendAdvert", "State",
    "VrrpMachine", "bounded_adver_interval", "decode", "encode", "master_down_interval",
    "parse_ip_packet", "skew_time",
]
