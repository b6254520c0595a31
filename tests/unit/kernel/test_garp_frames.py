"""Gratuitous ARP and unsolicited NA frames, checked against scapy's dissectors."""

import ipaddress

from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6NDOptDstLLAddr, IPv6
from scapy.layers.l2 import ARP, Ether

from hadirector.kernel.garp import arp_frame, na_frame

MAC = bytes.fromhex("020000aabbcc")


def test_gratuitous_arp_is_a_broadcast_request_with_sender_and_target_the_vip():  # RFC 5227 3
    vip = ipaddress.IPv4Address("10.234.9.100")
    pkt = Ether(arp_frame(MAC, vip))
    assert pkt.dst == "ff:ff:ff:ff:ff:ff" and pkt.src == "02:00:00:aa:bb:cc"
    arp = pkt[ARP]
    assert arp.op == 1
    assert arp.psrc == arp.pdst == "10.234.9.100"
    assert arp.hwsrc == "02:00:00:aa:bb:cc"


def test_unsolicited_na_overrides_with_hop_limit_255_and_valid_checksum():  # RFC 4861 4.4, 7.2.6
    vip = ipaddress.IPv6Address("fd00:234::9:64")
    raw = na_frame(MAC, vip)
    pkt = Ether(raw)
    assert pkt.dst == "33:33:00:00:00:01"
    ip6 = pkt[IPv6]
    assert ip6.hlim == 255 and ip6.dst == "ff02::1" and ip6.src == str(vip)
    na = pkt[ICMPv6ND_NA]
    assert na.O == 1 and na.S == 0 and na.R == 0
    assert na.tgt == str(vip)
    assert pkt[ICMPv6NDOptDstLLAddr].lladdr == "02:00:00:aa:bb:cc"
    # Let scapy recompute the checksum from scratch and compare.
    received = na.cksum
    del na.cksum
    assert Ether(bytes(pkt))[ICMPv6ND_NA].cksum == received
