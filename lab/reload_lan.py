"""lab.lan's namespace LAN under the reload area's names: rl<pid><tag>-sw / -n<i>,
addresses 10.236.<net>.<i>/24 and fd00:236::<net>:<i>/64 (VIP .100 by default).

Used by tests/netns/test_reload.py and tests/kernel/test_reload_ipvs.py.
"""

from __future__ import annotations

import ipaddress
import os

from lab.lan import Lan


class RlLan(Lan):
    def __post_init__(self) -> None:
        self.prefix = f"rl{os.getpid() % 100000}{self.tag}"

    def ip4(self, i: int) -> ipaddress.IPv4Address:
        return ipaddress.IPv4Address(f"10.236.{self.net}.{i}")

    def ip6(self, i: int) -> ipaddress.IPv6Address:
        return ipaddress.IPv6Address(f"fd00:236::{self.net}:{i}")

    def vip4(self, host: int = 100) -> ipaddress.IPv4Address:
        return ipaddress.IPv4Address(f"10.236.{self.net}.{host}")

    def vip6(self, host: int = 100) -> ipaddress.IPv6Address:
        return ipaddress.IPv6Address(f"fd00:236::{self.net}:{host:x}")
